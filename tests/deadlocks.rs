//! `taskspy deadlocks` (and the snapshot's `findings`) on every supported CPython, with live
//! fixtures that really are deadlocked (positives) and healthy ones (negatives):
//!
//! * `async_abba`: two tasks ABBA over asyncio Locks lock_a/lock_b -> `lock-cycle` (exit 3), also
//!   in `dump --json` findings.
//! * `thread_abba_rlock`, `thread_abba_lock`: two threads ABBA over RLocks / Locks ->
//!   `thread-lock-cycle` naming abba-1, abba-2, lock_a, lock_b (exit 3), also in `dump --json`.
//! * `thread_lock_wait`: a thread waits for a Lock held by a sleeping thread -> `lock-wait`;
//!   `thread_lock_wait_bystander_is_not_holder`: the same with a main thread that logged the lock
//!   (never acquired it) -> still only that one finding.
//! * `await_cycle`: tasks awaiting each other (2-cycle, and a 3-ring through gather) -> two
//!   `await-cycle` findings.
//! * `blocked_loop`: time.sleep inside a coroutine -> `deadlocks --duration 2 --threshold 1`
//!   reports `blocked-loop` naming the task.
//! * `healthy_negatives`: asyncio lock held by a sleeping task, a busy loop switching tasks every
//!   few ms, threads waiting on a queue.Queue, fixtures/threads.py: exit 0 and no finding, with a
//!   single snapshot and with `--duration 2`.
//!
//! Coverage line: target/taskspy-coverage-deadlocks.txt.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};

const COVERAGE: &str = "deadlocks";

/// (exit code, findings, raw document) of one `deadlocks --json` run.
type Verdict = Result<(Option<i32>, Vec<Value>, Value), String>;

/// `deadlocks PID --json [extra]`: (exit code, findings, raw document).
fn deadlocks(pid: i32, extra: &[&str]) -> Verdict {
    let (v, out) = taskspy_json("deadlocks", pid, extra)?;
    if v["schema"] != "taskspy-deadlocks/1" {
        return Err(format!(
            "deadlocks --json schema {} (expected taskspy-deadlocks/1)\n{}",
            v["schema"],
            out.describe_brief()
        ));
    }
    if !matches!(out.code, Some(0) | Some(3)) {
        return Err(format!("deadlocks exited {:?} (expected 0 or 3)\n{}", out.code, out.describe_brief()));
    }
    Ok((out.code, arr(&v["findings"]).to_vec(), v))
}

fn findings_summary(f: &[Value]) -> String {
    f.iter()
        .map(|x| {
            format!(
                "  {} [{}] threads={} tasks={} locks={} :: {}",
                s(&x["kind"]),
                s(&x["severity"]),
                x["threads"],
                x["tasks"],
                x["locks"],
                truncate(s(&x["summary"]), 400)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names of the tasks (by id) and threads (by tid) of a finding, via a snapshot.
struct Names {
    task: HashMap<String, String>,
    thread: HashMap<i64, String>,
}

impl Names {
    fn of(snap: &Value) -> Names {
        Names {
            task: arr(&snap["tasks"]).iter().map(|t| (s(&t["id"]).to_string(), s(&t["name"]).to_string())).collect(),
            thread: arr(&snap["threads"])
                .iter()
                .filter_map(|t| Some((t["tid"].as_i64()?, t["name"].as_str().unwrap_or("?").to_string())))
                .collect(),
        }
    }
    fn tasks(&self, f: &Value) -> BTreeSet<String> {
        arr(&f["tasks"])
            .iter()
            .map(|t| self.task.get(s(t)).cloned().unwrap_or_else(|| format!("<unknown task {}>", s(t))))
            .collect()
    }
    fn threads(&self, f: &Value) -> BTreeSet<String> {
        arr(&f["threads"])
            .iter()
            .map(|t| {
                t.as_i64().and_then(|x| self.thread.get(&x).cloned()).unwrap_or_else(|| format!("<unknown thread {t}>"))
            })
            .collect()
    }
}

fn set(xs: &[&str]) -> BTreeSet<String> {
    xs.iter().map(|x| x.to_string()).collect()
}

fn lock_names(f: &Value) -> BTreeSet<String> {
    arr(&f["locks"]).iter().map(|l| l["name"].as_str().unwrap_or("<unnamed>").to_string()).collect()
}

fn lock_types(f: &Value) -> BTreeSet<String> {
    arr(&f["locks"]).iter().map(|l| s(&l["type"]).to_string()).collect()
}

/// A lock cycle (tasks or threads): exactly one finding of `kind`, its actors and locks.
struct CycleExpect<'a> {
    kind: &'a str,
    tasks: BTreeSet<String>,
    threads: BTreeSet<String>,
    locks: BTreeSet<String>,
    lock_type: &'a str,
}

fn check_cycle(p: &mut Problems, what: &str, f: &[Value], names: &Names, exp: &CycleExpect) {
    let of_kind: Vec<&Value> = f.iter().filter(|x| x["kind"] == exp.kind).collect();
    p.check(f.len() == 1 && of_kind.len() == 1, || {
        format!("{what}: expected exactly one {} finding, got:\n{}", exp.kind, findings_summary(f))
    });
    let Some(c) = of_kind.first() else { return };
    p.check(c["severity"] == "critical", || format!("{what}: severity {}", c["severity"]));
    p.check(names.tasks(c) == exp.tasks, || format!("{what}: tasks {:?}, expected {:?}", names.tasks(c), exp.tasks));
    p.check(names.threads(c) == exp.threads, || {
        format!("{what}: threads {:?}, expected {:?}", names.threads(c), exp.threads)
    });
    p.check(lock_names(c) == exp.locks, || format!("{what}: lock names {:?}, expected {:?}", lock_names(c), exp.locks));
    p.check(lock_types(c) == set(&[exp.lock_type]), || {
        format!("{what}: lock types {:?}, expected {}", lock_types(c), exp.lock_type)
    });
    for n in exp.tasks.iter().chain(&exp.threads).chain(&exp.locks) {
        p.check(s(&c["summary"]).contains(n.as_str()), || {
            format!("{what}: summary does not name {n}: {}", s(&c["summary"]))
        });
    }
    p.check(arr(&c["evidence"]).len() == exp.tasks.len() + exp.threads.len(), || {
        format!("{what}: evidence {}", truncate(&c["evidence"].to_string(), 400))
    });
}

/// Text mode: same exit code, the finding kind printed.
fn check_text(p: &mut Problems, pid: i32, extra: &[&str], want_code: i32, want: &str) {
    let pid_s = pid.to_string();
    let mut args = vec!["deadlocks", pid_s.as_str()];
    args.extend_from_slice(extra);
    let out = taskspy_run(&args);
    p.check(out.code == Some(want_code), || {
        format!("`taskspy {}` exit {:?}, expected {want_code}", args.join(" "), out.code)
    });
    p.check(out.stdout.contains(want), || {
        format!("`taskspy {}` text does not contain {want:?}:\n{}", args.join(" "), truncate(&out.stdout, 2000))
    });
    p.check(!out.stdout_bytes.contains(&0x1b), || "deadlocks text output contains a raw ESC byte while piped".into());
}

// ------------------------------------------------------------------------------------------
// Positives
// ------------------------------------------------------------------------------------------

#[test]
fn async_abba() {
    each_interpreter(
        COVERAGE,
        "async-abba",
        true,
        |_| None,
        |interp| {
            let fx = Fixture::start(interp, "deadlock_async_abba.py", &[], &[])?;
            let snap = dump_json(fx.pid)?;
            let names = Names::of(&snap);
            let exp = CycleExpect {
                kind: "lock-cycle",
                tasks: set(&["abba-first", "abba-second"]),
                threads: set(&[]),
                locks: set(&["lock_a", "lock_b"]),
                lock_type: "asyncio.Lock",
            };
            let mut p = Problems::default();
            let (code, f, _) = deadlocks(fx.pid, &[])?;
            p.check(code == Some(3), || format!("deadlocks exit {code:?}, expected 3"));
            check_cycle(&mut p, "deadlocks --json", &f, &names, &exp);
            // The snapshot carries the same finding.
            check_cycle(&mut p, "dump --json findings", arr(&snap["findings"]), &names, &exp);
            check_text(&mut p, fx.pid, &[], 3, "lock-cycle");
            p.finish(|| format!("findings:\n{}\ntasks:\n{}", findings_summary(&f), tasks_summary(&snap)))?;
            Ok(Outcome::Pass)
        },
    );
}

fn thread_abba(kind: &str, lock_type: &str) {
    each_interpreter(
        COVERAGE,
        &format!("thread-abba-{kind}"),
        true,
        |_| None,
        |interp| {
            let fx = Fixture::start(interp, "deadlock_thread_abba.py", &[kind], &[])?;
            let snap = dump_json(fx.pid)?;
            let names = Names::of(&snap);
            let exp = CycleExpect {
                kind: "thread-lock-cycle",
                tasks: set(&[]),
                threads: set(&["abba-1", "abba-2"]),
                locks: set(&["lock_a", "lock_b"]),
                lock_type,
            };
            let mut p = Problems::default();
            // The fixture really is deadlocked: both threads are at their inner `with` line.
            let markers = park_markers(&fixture_path("deadlock_thread_abba.py"));
            for (thread, func, tag) in [("abba-1", "first", "first"), ("abba-2", "second", "second")] {
                let top = arr(&snap["threads"])
                    .iter()
                    .find(|t| t["name"] == thread)
                    .map(|t| frames_of(&t["frames"]))
                    .unwrap_or_default();
                let line = marker(&markers, tag);
                p.check(top.iter().any(|(f, l)| f == func && *l == line), || {
                    format!("fixture check: thread {thread} is not parked at {func}:{line}: {}", fmt_frames(&top))
                });
            }
            let (code, f, _) = deadlocks(fx.pid, &[])?;
            p.check(code == Some(3), || format!("TASKSPY BUG: `deadlocks` exit {code:?} for two threads deadlocked ABBA over {lock_type}s (both parked at their inner `with`), expected 3"));
            check_cycle(&mut p, "deadlocks --json", &f, &names, &exp);
            check_cycle(&mut p, "dump --json findings", arr(&snap["findings"]), &names, &exp);
            check_text(&mut p, fx.pid, &[], 3, "thread-lock-cycle");
            p.finish(|| format!("findings:\n{}", findings_summary(&f)))?;
            Ok(Outcome::Pass)
        },
    );
}

#[test]
fn thread_abba_rlock() {
    thread_abba("rlock", "threading.RLock");
}

#[test]
fn thread_abba_lock() {
    thread_abba("lock", "threading.Lock");
}

fn lock_wait(test: &str, args: &[&str]) {
    let peek = args == ["peek"];
    each_interpreter(
        COVERAGE,
        test,
        true,
        |_| None,
        |interp| {
            let fx = Fixture::start(interp, "deadlock_lock_wait.py", args, &[])?;
            let snap = dump_json(fx.pid)?;
            let names = Names::of(&snap);
            let mut p = Problems::default();
            // The fixture really is in that state: holder sleeping inside `with lock_c`, waiter at it.
            let markers = park_markers(&fixture_path("deadlock_lock_wait.py"));
            for (thread, func, tag) in [
                ("lock-holder", "holder", "holder"),
                ("lock-waiter", "waiter", "waiter"),
                ("MainThread", "main", "main"),
            ] {
                let top = arr(&snap["threads"])
                    .iter()
                    .find(|t| t["name"] == thread)
                    .map(|t| frames_of(&t["frames"]))
                    .unwrap_or_default();
                let line = marker(&markers, tag);
                p.check(top.iter().any(|(f, l)| f == func && *l == line), || {
                    format!("fixture check: thread {thread} is not parked at {func}:{line}: {}", fmt_frames(&top))
                });
            }
            let (code, f, _) = deadlocks(fx.pid, &[])?;
            p.check(code == Some(3), || format!("TASKSPY BUG: `deadlocks` exit {code:?} for a thread stuck on a Lock held by a sleeping thread, expected 3"));
            if peek {
                // MainThread only looked at lock_c (logged its address and state) and sleeps: it
                // holds nothing. Reporting it as a holder is a false finding.
                let bogus: Vec<&Value> = f.iter().filter(|x| names.threads(x).contains("MainThread")).collect();
                p.check(bogus.is_empty(), || {
                format!(
                    "TASKSPY BUG: MainThread (which only logged lock_c, never acquired it) is reported as holding it:\n{}",
                    findings_summary(&bogus.into_iter().cloned().collect::<Vec<_>>())
                )
            });
            }
            p.check(f.len() == 1 && f[0]["kind"] == "lock-wait", || {
                format!("expected exactly one lock-wait finding (not a cycle), got:\n{}", findings_summary(&f))
            });
            if let Some(w) = f.iter().find(|x| x["kind"] == "lock-wait" && !names.threads(x).contains("MainThread")) {
                p.check(w["severity"] == "warning", || format!("lock-wait severity {}", w["severity"]));
                p.check(names.threads(w) == set(&["lock-holder", "lock-waiter"]), || {
                    format!("lock-wait threads {:?}", names.threads(w))
                });
                p.check(lock_names(w) == set(&["lock_c"]) && lock_types(w) == set(&["threading.Lock"]), || {
                    format!("lock-wait locks {}", w["locks"])
                });
                let summary = s(&w["summary"]);
                // The waiter waits, the holder holds: in that order in the summary.
                let (iw, ih) = (summary.find("lock-waiter"), summary.find("lock-holder"));
                p.check(matches!((iw, ih), (Some(a), Some(b)) if a < b), || {
                    format!("summary should say lock-waiter waits for lock_c held by lock-holder: {summary}")
                });
                p.check(arr(&w["tasks"]).is_empty(), || format!("lock-wait names tasks {}", w["tasks"]));
            }
            check_text(&mut p, fx.pid, &[], 3, "lock-wait");
            p.finish(|| format!("findings:\n{}", findings_summary(&f)))?;
            Ok(Outcome::Pass)
        },
    );
}

#[test]
fn thread_lock_wait() {
    lock_wait("lock-wait", &[]);
}

/// Same state, but the main thread logged lock_c's address and state before parking (it only
/// looks at the lock): it must not become a "holder".
#[test]
fn thread_lock_wait_bystander_is_not_holder() {
    lock_wait("lock-wait-bystander", &["peek"]);
}

#[test]
fn await_cycle() {
    each_interpreter(
        COVERAGE,
        "await-cycle",
        true,
        |_| None,
        |interp| {
            let fx = Fixture::start(interp, "deadlock_await_cycle.py", &[], &[])?;
            let snap = dump_json(fx.pid)?;
            let names = Names::of(&snap);
            let mut p = Problems::default();
            let (code, f, _) = deadlocks(fx.pid, &[])?;
            p.check(code == Some(3), || format!("deadlocks exit {code:?}, expected 3"));
            let cycles: Vec<BTreeSet<String>> =
                f.iter().filter(|x| x["kind"] == "await-cycle").map(|x| names.tasks(x)).collect();
            let want = vec![set(&["cycle-a", "cycle-b"]), set(&["ring-1", "ring-2", "ring-3"])];
            let mut got = cycles.clone();
            got.sort();
            p.check(f.len() == 2 && got == want, || {
                format!("expected two await-cycle findings {want:?}, got:\n{}", findings_summary(&f))
            });
            for x in &f {
                p.check(x["severity"] == "critical" && arr(&x["locks"]).is_empty(), || {
                    format!("await-cycle finding {}", truncate(&x.to_string(), 300))
                });
                p.check(x["threads"] == serde_json::json!([fx.pid]), || {
                    format!("await-cycle threads {} (the main thread's loop {})", x["threads"], fx.pid)
                });
                let tasks = names.tasks(x);
                for n in &tasks {
                    p.check(s(&x["summary"]).contains(n.as_str()), || {
                        format!("summary does not name {n}: {}", s(&x["summary"]))
                    });
                }
            }
            // The same cycles are marked in pstree --json.
            match taskspy_json("pstree", fx.pid, &[]) {
                Ok((v, _)) => {
                    let mut cyc: Vec<BTreeSet<String>> = arr(&v["cycles"])
                        .iter()
                        .map(|c| arr(c).iter().map(|id| names.task.get(s(id)).cloned().unwrap_or_default()).collect())
                        .collect();
                    cyc.sort();
                    p.check(cyc == want, || format!("pstree --json cycles {cyc:?}, expected {want:?}"));
                }
                Err(e) => p.push(format!("pstree --json: {e}")),
            }
            check_text(&mut p, fx.pid, &[], 3, "await-cycle");
            p.finish(|| format!("findings:\n{}", findings_summary(&f)))?;
            Ok(Outcome::Pass)
        },
    );
}

#[test]
fn blocked_loop() {
    let markers = park_markers(&fixture_path("deadlock_blocked_loop.py"));
    let block_line = marker(&markers, "block");
    each_interpreter(
        COVERAGE,
        "blocked-loop",
        true,
        |_| None,
        |interp| {
            let fx = Fixture::start(interp, "deadlock_blocked_loop.py", &[], &[])?;
            let snap = dump_json(fx.pid)?;
            let names = Names::of(&snap);
            let mut p = Problems::default();
            let (code, f, v) = deadlocks(fx.pid, &["--duration", "2", "--threshold", "1"])?;
            p.check(code == Some(3), || format!("deadlocks --duration 2 --threshold 1 exit {code:?}, expected 3"));
            p.check(v["samples"].as_u64().unwrap_or(0) >= 5, || format!("only {} samples in 2 s", v["samples"]));
            let bl: Vec<&Value> = f.iter().filter(|x| x["kind"] == "blocked-loop").collect();
            p.check(f.len() == 1 && bl.len() == 1, || {
                format!("expected exactly one blocked-loop finding, got:\n{}", findings_summary(&f))
            });
            if let Some(b) = bl.first() {
                p.check(names.tasks(b) == set(&["blocker"]), || {
                    format!("blocked-loop tasks {:?}, expected [blocker]", names.tasks(b))
                });
                p.check(b["threads"] == serde_json::json!([fx.pid]), || {
                    format!("blocked-loop threads {} (expected MainThread {})", b["threads"], fx.pid)
                });
                p.check(s(&b["summary"]).contains("blocker"), || {
                    format!("summary does not name the task: {}", s(&b["summary"]))
                });
                let frames: Vec<(String, i64)> =
                    arr(&b["evidence"]).iter().flat_map(|e| frames_of(&e["frames"])).collect();
                p.check(frames.iter().any(|(f, l)| f == "blocker" && *l == block_line), || {
                    format!("evidence frames {} lack blocker at line {block_line}", fmt_frames(&frames))
                });
            }
            // A single snapshot cannot see a blocked loop (it needs --duration).
            let (code0, f0, _) = deadlocks(fx.pid, &[])?;
            p.check(code0 == Some(0) && f0.is_empty(), || {
                format!("single snapshot: exit {code0:?}, findings:\n{}", findings_summary(&f0))
            });
            p.finish(|| format!("findings:\n{}", findings_summary(&f)))?;
            Ok(Outcome::Pass)
        },
    );
}

// ------------------------------------------------------------------------------------------
// Negatives
// ------------------------------------------------------------------------------------------

const HEALTHY: [&str; 4] =
    ["deadlock_healthy_sleep_holder.py", "deadlock_healthy_busy.py", "deadlock_healthy_queue.py", "threads.py"];

#[test]
fn healthy_negatives() {
    each_interpreter(
        COVERAGE,
        "healthy",
        true,
        |_| None,
        |interp| {
            let mut p = Problems::default();
            // All four at once, so the 2-second samplings run side by side.
            let mut fixtures = Vec::new();
            for script in HEALTHY {
                fixtures.push((script, Fixture::start(interp, script, &[], &[])?));
            }
            for (script, fx) in &fixtures {
                match deadlocks(fx.pid, &[]) {
                    Ok((code, f, _)) => p.check(code == Some(0) && f.is_empty(), || {
                        format!("{script}: single snapshot: exit {code:?}, findings:\n{}", findings_summary(&f))
                    }),
                    Err(e) => p.push(format!("{script}: {e}")),
                }
            }
            let results: Vec<(&str, Verdict)> = std::thread::scope(|sc| {
                let handles: Vec<_> = fixtures
                    .iter()
                    .map(|(script, fx)| {
                        let pid = fx.pid;
                        (*script, sc.spawn(move || deadlocks(pid, &["--duration", "2"])))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|(sname, h)| (sname, h.join().unwrap_or_else(|_| Err("panicked".into()))))
                    .collect()
            });
            for (script, r) in results {
                match r {
                    Ok((code, f, v)) => {
                        p.check(code == Some(0) && f.is_empty(), || {
                            format!("{script}: --duration 2: exit {code:?}, findings:\n{}", findings_summary(&f))
                        });
                        p.check(v["samples"].as_u64().unwrap_or(0) >= 5, || {
                            format!("{script}: only {} samples over 2 s", v["samples"])
                        });
                    }
                    Err(e) => p.push(format!("{script}: {e}")),
                }
            }
            // Text mode says so, exit 0.
            let (_, fx) = &fixtures[0];
            check_text(&mut p, fx.pid, &[], 0, "No deadlock candidates");
            // The snapshot of a healthy process has no findings either.
            for (script, fx) in &fixtures {
                match dump_json(fx.pid) {
                    Ok(snap) => p.check(arr(&snap["findings"]).is_empty(), || {
                        format!("{script}: dump --json findings:\n{}", findings_summary(arr(&snap["findings"])))
                    }),
                    Err(e) => p.push(format!("{script}: {e}")),
                }
            }
            p.finish(String::new)?;
            Ok(Outcome::Pass)
        },
    );
}
