//! Hostile and pathological targets (fixtures/hostile.py) on every interpreter: no hang, bounded
//! memory, no silent loss, the target never held.
//!
//! * `gather_cycle`: a gather containing itself: pstree, dump --json, deadlocks and dump --blocking
//!   finish (each under LIMIT_S and LIMIT_MB), the waiter's tree is drawn, the pause is short.
//! * `lock_chain`: 10,000 tasks in a lock chain: deadlocks finishes, lists the first lock waits and
//!   sums up the rest.
//! * `fat_frames`: 16 threads × 10,000 frames × 50 locals: dump --json and deadlocks finish, every
//!   thread's stack is there.
//! * `shared_linetable`: 2,001 code objects sharing one 1 MiB line table: memory stays bounded.
//! * `callbacks`: a task with 100,000 callbacks and 2,000 tasks sharing a 100,000-entry list.
//! * `many`: 200,000 tasks: ps --json needs no more memory than dump --json (+10 %); and
//!   `dump --blocking --pause-ms 50` resumes the target at the deadline and says the snapshot was cut.
//! * `corrupt`: corrupted task, name, registry entry and frame link, and non-task objects in the
//!   registry: exit 0, healthy tasks all there, the bad ones marked with an `error`, the readable
//!   part of the bad thread's stack kept, one warning line on stderr.
//!   Ctrl-C (SIGINT) ends `deadlocks --duration` and a long `dump --blocking` at once (exit 130),
//!   and the target is running afterwards.
//!
//! Limits are checked with GNU time's wall time and peak RSS, generous enough for a loaded 2-core
//! machine. Coverage line: target/taskspy-coverage-hostile.txt.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

const COVERAGE: &str = "hostile";
const LIMIT_S: f64 = 10.0;
const LIMIT_MB: f64 = 512.0;

/// A taskspy run measured by GNU time: output (time's line removed from stderr), seconds, MB.
fn measured(args: &[&str]) -> (CmdOutput, f64, f64) {
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("TASKSPY_MEASURE %e %M").arg(taskspy()).args(args);
    c.env_remove("RUST_BACKTRACE");
    let mut out = run(c, Duration::from_secs(120));
    let mut secs = f64::NAN;
    let mut mb = f64::NAN;
    let mut kept = Vec::new();
    for line in out.stderr.lines() {
        if let Some(rest) = line.strip_prefix("TASKSPY_MEASURE ") {
            let mut it = rest.split_whitespace();
            secs = it.next().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN);
            mb = it.next().and_then(|x| x.parse::<f64>().ok()).map(|kb| kb / 1024.0).unwrap_or(f64::NAN);
        } else if !line.starts_with("Command exited with non-zero status") {
            kept.push(line);
        }
    }
    out.stderr = kept.join("\n");
    (out, secs, mb)
}

/// Run a command on the fixture within the limits, expecting one of `codes`.
fn bounded(p: &mut Problems, what: &str, args: &[&str], codes: &[i32]) -> CmdOutput {
    let (out, secs, mb) = measured(args);
    p.check(out.code.map(|c| codes.contains(&c)).unwrap_or(false), || {
        format!("{what}: exit {:?}, expected one of {codes:?}\n{}", out.code, out.describe_brief())
    });
    p.check(secs <= LIMIT_S, || format!("{what}: took {secs:.1} s (limit {LIMIT_S} s)"));
    p.check(mb <= LIMIT_MB, || format!("{what}: peak RSS {mb:.0} MB (limit {LIMIT_MB} MB)"));
    p.check(!out.stderr.contains("panicked") && !out.stderr.contains("internal error"), || {
        format!("{what}: {}", out.stderr)
    });
    note(&format!("    {what}: {secs:.2} s, {mb:.0} MB"));
    out
}

fn json(out: &CmdOutput, what: &str) -> Result<Value, String> {
    out.json().map_err(|e| format!("{what}: {e}"))
}

fn task_names(doc: &Value) -> Vec<String> {
    arr(&doc["tasks"]).iter().map(|t| s(&t["name"]).to_string()).collect()
}

fn start(interp: &Interpreter, args: &[&str]) -> Result<Fixture, String> {
    Fixture::start(interp, "hostile.py", args, &[])
}

fn process_state(pid: i32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.trim_start().chars().next()))
        .unwrap_or('?')
}

/// Every thread of `pid` is not stopped (the target was resumed).
fn running(pid: i32) -> bool {
    os_tids(pid).iter().all(|t| {
        std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| !r.trim_start().starts_with(['T', 't'])))
            .unwrap_or(true)
    }) && process_state(pid) != 'T'
}

fn each(test: &str, check: impl Fn(&Interpreter) -> Result<(), String>) {
    // One case at a time: the limits are about taskspy, not about sharing two cores with the
    // other cases' fixtures.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    each_interpreter(
        COVERAGE,
        test,
        true,
        |_| None,
        |interp| {
            check(interp)?;
            Ok(Outcome::Pass)
        },
    );
}

#[test]
fn gather_cycle() {
    each("gather-cycle", |interp| {
        let fx = start(interp, &["gather_cycle"])?;
        let pid = fx.pid.to_string();
        let mut p = Problems(vec![]);
        let tree = bounded(&mut p, "pstree", &["pstree", &pid], &[0]);
        p.check(tree.stdout.contains("gather-waiter") && tree.stdout.contains("leaf-0"), || {
            format!("pstree does not draw the waiter and its leaves:\n{}", truncate(&tree.stdout, 2000))
        });
        let d = bounded(&mut p, "dump --json", &["dump", &pid, "--json"], &[0]);
        let doc = json(&d, "dump --json")?;
        // The gather's leaves are awaited by someone: the waiter (rebuilt from the objects before
        // 3.14), or the task that created the gather (CPython 3.14's own awaited_by).
        let ids: std::collections::HashMap<&str, &str> =
            arr(&doc["tasks"]).iter().map(|t| (s(&t["id"]), s(&t["name"]))).collect();
        for leaf in ["leaf-0", "leaf-1"] {
            let by: Vec<&str> = arr(&doc["tasks"])
                .iter()
                .filter(|t| t["name"] == leaf)
                .flat_map(|t| arr(&t["awaited_by"]).iter().map(|p| ids.get(s(p)).copied().unwrap_or("?")))
                .collect();
            let want = if interp.at_least(14) { "Task-1" } else { "gather-waiter" };
            p.check(by.contains(&want), || format!("{leaf} should be awaited by {want}, is by {by:?}"));
        }
        bounded(&mut p, "deadlocks", &["deadlocks", &pid], &[0, 3]);
        let b = bounded(&mut p, "dump --blocking --json", &["dump", &pid, "--blocking", "--json"], &[0]);
        let doc = json(&b, "dump --blocking")?;
        let paused = doc["capture"]["paused_ms"].as_f64().unwrap_or(f64::NAN);
        p.check(paused < 1000.0, || format!("the target was paused {paused} ms"));
        p.check(running(fx.pid), || "the target is still stopped after dump --blocking".into());
        p.finish(|| interp.describe())
    });
}

#[test]
fn lock_chain() {
    each("lock-chain", |interp| {
        let fx = start(interp, &["lock_chain", "10000"])?;
        let pid = fx.pid.to_string();
        let mut p = Problems(vec![]);
        let out = bounded(&mut p, "deadlocks --json", &["deadlocks", &pid, "--json"], &[3]);
        let doc = json(&out, "deadlocks --json")?;
        let f = arr(&doc["findings"]);
        let waits = f.iter().filter(|x| x["kind"] == "lock-wait").count();
        p.check(waits > 50, || format!("expected the first lock waits listed, got {waits} of {} findings", f.len()));
        p.check(f.iter().any(|x| s(&x["summary"]).contains("more lock waits")), || {
            "the rest of the 10,000-task chain should be summed up in one finding".into()
        });
        let d = bounded(&mut p, "dump --json", &["dump", &pid, "--json"], &[0]);
        let doc = json(&d, "dump --json")?;
        p.check(task_names(&doc).len() >= 10_000, || format!("{} tasks in the dump", task_names(&doc).len()));
        p.check(arr(&doc["locks"]).len() >= 9_999, || format!("{} locks recorded", arr(&doc["locks"]).len()));
        bounded(&mut p, "pstree", &["pstree", &pid], &[0]);
        p.finish(|| interp.describe())
    });
}

#[test]
fn fat_frames() {
    each("fat-frames", |interp| {
        let fx = start(interp, &["fat_frames", "16", "9900", "50"])?;
        let pid = fx.pid.to_string();
        let mut p = Problems(vec![]);
        let d = bounded(&mut p, "dump --json", &["dump", &pid, "--json"], &[0]);
        let doc = json(&d, "dump --json")?;
        let fat: Vec<&Value> = arr(&doc["threads"]).iter().filter(|t| s(&t["name"]).starts_with("fat-")).collect();
        p.check(fat.len() == 16, || format!("{} fat threads in the dump", fat.len()));
        for t in &fat {
            let n = arr(&t["frames"]).len();
            p.check(n >= 9_900, || format!("{} has {n} frames", s(&t["name"])));
        }
        bounded(&mut p, "deadlocks", &["deadlocks", &pid], &[0]);
        bounded(&mut p, "dump (text)", &["dump", &pid], &[0]);
        p.finish(|| interp.describe())
    });
}

#[test]
fn shared_linetable() {
    each("shared-linetable", |interp| {
        let fx = start(interp, &["shared_linetable", "2001"])?;
        let pid = fx.pid.to_string();
        let mut p = Problems(vec![]);
        let d = bounded(&mut p, "dump --json", &["dump", &pid, "--json"], &[0]);
        let doc = json(&d, "dump --json")?;
        let main = arr(&doc["threads"]).first().cloned().unwrap_or_default();
        let names: Vec<&str> = arr(&main["frames"]).iter().map(|f| s(&f["function"])).collect();
        p.check(names.contains(&"f0") && names.contains(&"f2000"), || {
            format!("the main thread should show f0..f2000: {} frames, first {:?}", names.len(), names.first())
        });
        bounded(&mut p, "deadlocks", &["deadlocks", &pid], &[0]);
        p.finish(|| interp.describe())
    });
}

#[test]
fn callbacks() {
    each("callbacks", |interp| {
        let fx = start(interp, &["callbacks", "2000", "100000"])?;
        let pid = fx.pid.to_string();
        let mut p = Problems(vec![]);
        let d = bounded(&mut p, "dump --json", &["dump", &pid, "--json"], &[0]);
        let doc = json(&d, "dump --json")?;
        let names = task_names(&doc);
        p.check(names.iter().any(|n| n == "many-callbacks"), || "many-callbacks is missing".into());
        let shared = names.iter().filter(|n| n.starts_with("shared-cb-")).count();
        p.check(shared == 2000, || format!("{shared} of 2000 shared-callback tasks shown"));
        bounded(&mut p, "pstree", &["pstree", &pid], &[0]);
        bounded(&mut p, "ps --json", &["ps", &pid, "--json"], &[0]);
        bounded(&mut p, "deadlocks", &["deadlocks", &pid], &[0]);
        p.finish(|| interp.describe())
    });
}

#[test]
fn many_tasks_memory_and_pause_deadline() {
    each("many-200k", |interp| {
        let fx = start(interp, &["many", "200000"])?;
        let pid = fx.pid.to_string();
        let mut p = Problems(vec![]);
        let (dump, _, dump_mb) = measured(&["dump", &pid, "--json"]);
        let (ps, _, ps_mb) = measured(&["ps", &pid, "--json"]);
        p.check(dump.code == Some(0) && ps.code == Some(0), || {
            format!("{}\n{}", dump.describe_brief(), ps.describe_brief())
        });
        p.check(ps_mb <= dump_mb * 1.1 + 8.0, || {
            format!("ps --json peaked at {ps_mb:.0} MB, dump --json at {dump_mb:.0} MB")
        });
        p.check(dump_mb <= LIMIT_MB, || format!("dump --json peaked at {dump_mb:.0} MB"));
        note(&format!("    200k tasks: dump --json {dump_mb:.0} MB, ps --json {ps_mb:.0} MB"));
        let doc = json(&dump, "dump --json")?;
        p.check(task_names(&doc).len() >= 200_000, || format!("{} tasks", task_names(&doc).len()));
        // A pause deadline shorter than the read (copying ~200 MB takes longer than 2 ms even at
        // memory speed): resumed on time, and the snapshot says so.
        let b = taskspy_run(&["dump", &pid, "--json", "--blocking", "--pause-ms", "2"]);
        let doc = json(&b, "dump --blocking --pause-ms 2")?;
        let paused = doc["capture"]["paused_ms"].as_f64().unwrap_or(f64::NAN);
        p.check(paused < 100.0, || format!("paused {paused} ms with a 2 ms deadline"));
        p.check(doc["capture"]["cut"].as_str().map(|c| c.contains("deadline")).unwrap_or(false), || {
            format!("the snapshot should say it was cut: {}", doc["capture"])
        });
        p.check(b.stderr.contains("deadline"), || format!("no warning on stderr: {}", b.stderr));
        p.check(task_names(&doc).len() >= 190_000, || format!("{} tasks after the deadline", task_names(&doc).len()));
        p.check(running(fx.pid), || "the target is stopped after the deadline".into());
        interrupt_checks(&mut p, fx.pid);
        p.finish(|| interp.describe())
    });
}

#[test]
fn corrupt() {
    each("corrupt", |interp| {
        let fx = start(interp, &["corrupt"])?;
        let ready = fx.ready_line.clone();
        let pid = fx.pid.to_string();
        let mut p = Problems(vec![]);
        let out = bounded(&mut p, "dump --json", &["dump", &pid, "--json"], &[0]);
        let doc = json(&out, "dump --json")?;
        let tasks = arr(&doc["tasks"]);
        let names = task_names(&doc);
        for i in 0..5 {
            p.check(names.contains(&format!("ok-{i}")), || format!("ok-{i} is missing: {names:?}"));
        }
        p.check(!names.iter().any(|n| n.contains("not a task")), || "a non-task object shown as a task".into());
        let errors: Vec<String> =
            tasks.iter().filter_map(|t| t["error"].as_str().map(|e| format!("{}: {e}", s(&t["name"])))).collect();
        p.check(tasks.iter().any(|t| t["name"] == "bad-coro" && t["error"].is_string()), || {
            format!("bad-coro should carry an error: {errors:?}")
        });
        p.check(tasks.iter().any(|t| t["name"] == "<unreadable name>" && t["error"].is_string()), || {
            format!("the task with the corrupted name should be marked: {errors:?}")
        });
        let unreadable = doc["capture"]["unreadable"].as_u64().unwrap_or(0);
        p.check(unreadable >= 3, || format!("capture.unreadable = {unreadable}"));
        p.check(out.stderr.contains("could not be read") && out.stderr.lines().count() == 1, || {
            format!("expected one warning line on stderr: {:?}", out.stderr)
        });
        let bad = arr(&doc["threads"]).iter().find(|t| t["name"] == "bad-frames").cloned().unwrap_or_default();
        if ready.contains("frames f_back") || ready.contains("frames previous") {
            let fr: Vec<&str> = arr(&bad["frames"]).iter().map(|f| s(&f["function"])).collect();
            p.check(bad["error"].is_string() && fr.len() == 2 && fr[0].ends_with("inner"), || {
                format!("bad-frames should keep its two readable frames and an error: {bad}")
            });
        } else {
            note(&format!("    corrupt on {}: the frame link could not be found to corrupt ({ready})", interp.version));
        }
        let tree = bounded(&mut p, "pstree", &["pstree", &pid], &[0]);
        p.check(tree.stdout.contains("[unreadable:"), || "pstree does not mark the unreadable tasks".into());
        let text = bounded(&mut p, "dump", &["dump", &pid], &[0]);
        p.check(text.stdout.contains("<stack unreadable:"), || "dump text does not mark the cut stack".into());
        bounded(&mut p, "deadlocks", &["deadlocks", &pid], &[0, 3]);
        bounded(&mut p, "ps --json", &["ps", &pid, "--json"], &[0]);
        p.finish(|| format!("{} ({ready})", interp.describe()))
    });
}

/// Send SIGINT to a running taskspy after `after`, and return its output and how long it took.
fn interrupted(args: &[&str], after: Duration) -> (CmdOutput, Duration) {
    let mut c = taskspy_cmd(args);
    c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).stdin(std::process::Stdio::null());
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => panic!("cannot start taskspy: {e}"),
    };
    std::thread::sleep(after);
    let t0 = Instant::now();
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = t0.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    let out = CmdOutput {
        code: status.and_then(|s| s.code()),
        timed_out: false,
        stdout: String::new(),
        stdout_bytes: vec![],
        stderr,
        cmdline: args.join(" "),
        elapsed: took,
    };
    (out, took)
}

/// Ctrl-C ends `deadlocks --duration` and a long `dump --blocking` at once (exit 130), and the
/// target runs afterwards (on the 200,000-task fixture, whose reads take long enough to interrupt).
fn interrupt_checks(p: &mut Problems, pid: i32) {
    let pid_s = pid.to_string();
    let (out, took) = interrupted(&["deadlocks", &pid_s, "--duration", "60"], Duration::from_millis(1500));
    p.check(out.code == Some(130), || format!("deadlocks after Ctrl-C: exit {:?} {}", out.code, out.stderr));
    p.check(took < Duration::from_secs(3), || format!("deadlocks took {took:?} to stop after Ctrl-C"));
    let (out, took) =
        interrupted(&["dump", &pid_s, "--json", "--blocking", "--pause-ms", "60000"], Duration::from_millis(120));
    p.check(out.code == Some(130) || out.code == Some(0), || {
        format!("dump --blocking after Ctrl-C: exit {:?} {}", out.code, out.stderr)
    });
    p.check(took < Duration::from_secs(3), || format!("dump --blocking took {took:?} to stop after Ctrl-C"));
    std::thread::sleep(Duration::from_millis(100));
    p.check(running(pid), || "the target is stopped after Ctrl-C".into());
}
