//! The snapshot is the whole record, from any source (issue: one complete record, any source):
//!
//! * `core_equals_blocking`: on every interpreter, each fixture is stopped (SIGSTOP), dumped with
//!   `dump --json --blocking` (which must leave it stopped, and decodes a copy of its writable
//!   memory: the same document as the object-by-object read with `TASKSPY_COPY_LIMIT_MB=0`),
//!   then `gcore`d; `dump --core --json`
//!   must equal the live document (threads, frames, native state, tasks, awaited-by, loops, locks,
//!   findings), and `pstree`/`ps`/`deadlocks --core` the live ones. Both documents are validated
//!   against docs/snapshot.schema.json. The asyncio service's core is also read zstd- and
//!   lz4-compressed (systemd-coredump's formats).
//! * `saved_snapshot_views_equal_live`: for every deadlock fixture (and a healthy one),
//!   `deadlocks --input` of a saved `dump --json` gives the live findings; `ps`/`pstree --input`
//!   (also from stdin) print what the live commands print.
//! * `kernel_core`: a fixture killed with SIGSEGV under `ulimit -c unlimited` leaves a
//!   kernel-written core whose stacks are those taken live just before (skipped, with the reason,
//!   where core_pattern pipes cores elsewhere).
//! * `core_bad_inputs`: not a core, an executable, a truncated core, a core of a non-Python
//!   process, a binary missing on disk (then found with --exe / --lib-root), a binary of another
//!   build (refused, then --force), corrupt compression, bad --input files, no target: each one
//!   line and its documented exit code.
//!
//! Coverage line: target/taskspy-coverage-record.txt.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const COVERAGE: &str = "record";

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("taskspy-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a fixture's PID we own.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Every thread of `pid` in state T (stopped), waited for up to 5 s.
fn wait_stopped(pid: i32) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tids = os_tids(pid);
        let all = !tids.is_empty()
            && tids.iter().all(|t| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with(['T', 't'])))
                    .unwrap_or(false)
            });
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("PID {pid} did not stop within 5 s after SIGSTOP"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn gcore_available() -> bool {
    Path::new("/usr/bin/gcore").exists()
}

/// `gcore -o DIR/gcore PID` -> (DIR/gcore.PID, whether gdb could read every region).
fn gcore_checked(pid: i32, dir: &Path) -> Result<(PathBuf, bool), String> {
    let prefix = dir.join("gcore");
    let mut c = Command::new("gcore");
    c.arg("-o").arg(&prefix).arg(pid.to_string());
    let out = run(c, Duration::from_secs(120));
    let path = PathBuf::from(format!("{}.{pid}", prefix.display()));
    if !path.exists() {
        return Err(format!("gcore wrote no core:\n{}", out.describe_brief()));
    }
    // gdb reads each mapping in 1 MiB pieces and writes zeros for a piece it cannot read whole:
    // with glibc 2.41+ thread stacks (MADV_GUARD_INSTALL guard pages) that blanks the top of
    // each thread's stack. The vsyscall page always fails and holds nothing of ours.
    let complete = !out
        .stderr
        .lines()
        .any(|l| l.contains("Memory read failed for corefile section") && !l.contains("0xffffffffff600000"));
    Ok((path, complete))
}

fn gcore(pid: i32, dir: &Path) -> Result<PathBuf, String> {
    gcore_checked(pid, dir).map(|(p, _)| p)
}

/// Whether the kernel writes cores to a file (in the process's directory) rather than a pipe.
fn kernel_cores_to_files() -> bool {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    !pattern.trim().is_empty() && !pattern.trim_start().starts_with('|') && !pattern.contains('/')
}

/// A fixture whose crash leaves a core in `dir` (its working directory, RLIMIT_CORE unlimited).
fn start_dumpable(interp: &Interpreter, script: &str, args: &[&str], dir: &Path) -> Result<Fixture, String> {
    let mut c = interp.command();
    c.arg("-u").arg(fixture_path(script)).args(args).current_dir(dir).env("TASKSPY_FIXTURE_LIFETIME", "900");
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe; it only raises this child's core size limit.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
            Ok(())
        });
    }
    Fixture::spawn(c, &format!("{script} {} on Python {}", args.join(" "), interp.version))
}

/// The kernel's core of a fixture stopped with SIGSTOP: SIGSEGV is queued while it is stopped and
/// acted on as soon as it continues, before any of its Python code runs again. Not to the letter:
/// SIGCONT makes some waits (epoll_wait, futex) return EINTR, and a thread may retake the GIL in C
/// to retry before the dump stops it, so thread states and GIL ownership may differ (not stacks).
fn kernel_core_of_stopped(fx: &mut Fixture, dir: &Path) -> Result<PathBuf, String> {
    signal(fx.pid, libc::SIGSEGV);
    signal(fx.pid, libc::SIGCONT);
    fx.wait_exit(Duration::from_secs(60)).ok_or("the fixture did not die of SIGSEGV")?;
    std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).map(|n| n == "core" || n.starts_with("core.")).unwrap_or(false)
        })
        .ok_or_else(|| "the kernel wrote no core into the fixture's directory".to_string())
}

/// The parts of a document that two reads of the same stopped process must agree on: everything
/// but when and how it was taken, and what only /proc knows (kernel thread names and state letters).
fn normalized(doc: &Value) -> Value {
    normalized_with(doc, false)
}

/// With `settling`, also without what a thread may change between SIGCONT and the kernel's core
/// dump (see `kernel_core_of_stopped`): thread states, GIL ownership, system calls and so the
/// threads' lock facts and findings (compared separately where only one thread runs).
fn normalized_with(doc: &Value, settling: bool) -> Value {
    let mut d = doc.clone();
    if let Some(o) = d.as_object_mut() {
        o.remove("captured_at");
        o.remove("capture");
        if settling {
            o.remove("interpreters");
            o.remove("locks");
            o.remove("findings");
        }
    }
    if let Some(ts) = d["threads"].as_array_mut() {
        for t in ts {
            if let Some(o) = t.as_object_mut() {
                o.remove("os_name");
                if settling {
                    for k in ["native", "state", "holds_gil", "holds_locks", "waits_for_lock"] {
                        o.remove(k);
                    }
                }
            }
            if let Some(n) = t["native"].as_object_mut() {
                n.remove("state");
            }
        }
    }
    d
}

/// Where two documents differ, key by key (first differences only).
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    if out.len() >= 12 {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                differences(
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    &format!("{path}.{k}"),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                differences(p, q, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!(
            "{path}: live {} vs core {}",
            truncate(&a.to_string(), 300),
            truncate(&b.to_string(), 300)
        )),
        _ => {}
    }
}

/// Validate a document against docs/snapshot.schema.json with the jsonschema package that
/// scripts/provision.sh installs into the tools venv. A missing validator is a printed skip.
fn check_schema(doc: &Value, what: &str) -> Result<(), String> {
    validate_json(doc, "snapshot.schema.json", what)
}

fn json_of(out: &CmdOutput, what: &str) -> Result<Value, String> {
    if !matches!(out.code, Some(0) | Some(3)) {
        return Err(format!("{what} failed:\n{}", out.describe_brief()));
    }
    out.json().map_err(|e| format!("{what}: {e}"))
}

/// Findings reduced to what identifies them: kind, members and lock addresses.
fn finding_keys(doc: &Value) -> BTreeSet<String> {
    arr(&doc["findings"])
        .iter()
        .map(|f| {
            let mut tasks: Vec<&str> = arr(&f["tasks"]).iter().map(s).collect();
            tasks.sort();
            let mut threads: Vec<String> = arr(&f["threads"]).iter().map(|t| t.to_string()).collect();
            threads.sort();
            let mut locks: Vec<&str> = arr(&f["locks"]).iter().map(|l| s(&l["address"])).collect();
            locks.sort();
            format!("{} tasks={tasks:?} threads={threads:?} locks={locks:?}", s(&f["kind"]))
        })
        .collect()
}

/// Fixtures read from a core and live: (script, args, expected deadlocks exit code).
const CORE_FIXTURES: &[(&str, &[&str], i32)] = &[
    ("threads.py", &[], 0),
    ("asyncio_service.py", &[], 0),
    ("deadlock_async_abba.py", &[], 3),
    ("deadlock_thread_abba.py", &["rlock"], 3),
    ("deadlock_await_cycle.py", &[], 3),
];

fn core_vs_live(interp: &Interpreter, script: &str, args: &[&str], want_code: i32) -> Result<(), String> {
    let dir = TempDir::new("core");
    let mut fx = start_dumpable(interp, script, args, dir.path())?;
    let pid = fx.pid;
    let pid_s = pid.to_string();
    signal(pid, libc::SIGSTOP);
    wait_stopped(pid)?;
    let mut p = Problems(vec![]);
    let live = json_of(&taskspy_run(&["dump", &pid_s, "--json", "--blocking"]), "dump --json --blocking")?;
    p.check(live["capture"]["already_stopped"] == true && live["capture"]["paused"] == true, || {
        format!("a stopped target should be read as found (already_stopped): {}", live["capture"])
    });
    p.check(wait_stopped(pid).is_ok(), || "dump --blocking resumed a process that was stopped before it came".into());
    // --blocking copies the writable memory and decodes the copy; the object-by-object read of
    // the stopped process (copying turned off) must say exactly the same.
    p.check(live["capture"]["copied_bytes"].as_u64().unwrap_or(0) > 0, || {
        format!("dump --blocking did not decode a copy: {}", live["capture"])
    });
    let mut walk_cmd = taskspy_cmd(&["dump", &pid_s, "--json", "--blocking"]);
    walk_cmd.env("TASKSPY_COPY_LIMIT_MB", "0");
    let walked = json_of(&run(walk_cmd, COMMAND_TIMEOUT), "dump --json --blocking (copy off)")?;
    p.check(walked["capture"].get("copied_bytes").is_none(), || {
        format!("TASKSPY_COPY_LIMIT_MB=0 still copied: {}", walked["capture"])
    });
    let mut diffs = Vec::new();
    differences(&normalized_with(&live, false), &normalized_with(&walked, false), "", &mut diffs);
    p.check(diffs.is_empty(), || {
        format!("dump --blocking from the copy differs from the object-by-object read:\n{}", diffs.join("\n"))
    });
    let live_tree = taskspy_run(&["pstree", &pid_s, "--blocking"]);
    let live_ps = taskspy_run(&["ps", &pid_s, "--blocking"]);
    let live_dl = json_of(&taskspy_run(&["deadlocks", &pid_s, "--json", "--blocking"]), "deadlocks --blocking")?;
    if let Err(e) = check_schema(&live, "dump --json --blocking") {
        p.push(e);
    }
    let (gcore_file, complete) = gcore_checked(pid, dir.path())?;
    let mut cores = Vec::new();
    if complete {
        cores.push(("gcore", gcore_file));
    } else {
        // This gdb could not read parts of the process (see gcore_checked): its core lacks memory
        // the process has, so compare the kernel's core of the same stopped process instead.
        note(&format!(
            "{script} on {}: gcore could not read some thread-stack regions (gdb reads 1 MiB pieces and zeros a \
             piece with a guard page); comparing the kernel's core of the same stopped process",
            interp.version
        ));
        if kernel_cores_to_files() {
            cores.push(("kernel core", kernel_core_of_stopped(&mut fx, dir.path())?));
        } else {
            return Err(
                "gcore's core is incomplete here and the kernel pipes cores elsewhere: nothing to compare".into()
            );
        }
    }
    for (kind, core) in cores {
        let core_s = core.display().to_string();
        let from_core =
            json_of(&taskspy_run(&["dump", "--core", &core_s, "--json"]), &format!("dump --core ({kind}) --json"))?;
        p.check(from_core["capture"]["source"] == "core", || format!("capture of a core: {}", from_core["capture"]));
        let mut diffs = Vec::new();
        let settling = kind != "gcore";
        differences(&normalized_with(&live, settling), &normalized_with(&from_core, settling), "", &mut diffs);
        p.check(diffs.is_empty(), || {
            format!(
                "dump --core ({kind}) differs from dump --blocking of the same stopped process:\n{}",
                diffs.join("\n")
            )
        });
        // The record is not empty: every thread has frames, tasks where the fixture has them.
        p.check(arr(&from_core["threads"]).iter().all(|t| !arr(&t["frames"]).is_empty()), || {
            "a thread without frames in the core".into()
        });
        if script.contains("async") || script.contains("await") {
            p.check(!arr(&from_core["tasks"]).is_empty(), || "no tasks read from the core".into());
        }
        let core_tree = taskspy_run(&["pstree", "--core", &core_s]);
        p.check(core_tree.code == Some(0) && core_tree.stdout == live_tree.stdout, || {
            format!(
                "pstree --core ({kind}) differs from live pstree:\n--- live ---\n{}\n--- core ---\n{}",
                truncate(&live_tree.stdout, 1500),
                core_tree.describe_brief()
            )
        });
        let core_ps = taskspy_run(&["ps", "--core", &core_s]);
        p.check(core_ps.code == Some(0) && core_ps.stdout == live_ps.stdout, || {
            format!("ps --core ({kind}) differs from live ps:\n{}", core_ps.describe_brief())
        });
        // Findings depend on thread states; after SIGCONT (kernel-core path) only a fixture with
        // one thread is still exactly as it was.
        let single_thread = arr(&live["threads"]).len() == 1;
        if !settling || single_thread {
            let core_dl_out = taskspy_run(&["deadlocks", "--core", &core_s, "--json"]);
            let core_dl = json_of(&core_dl_out, "deadlocks --core")?;
            p.check(core_dl_out.code == Some(want_code), || {
                format!("deadlocks --core ({kind}) exit {:?}, expected {want_code}", core_dl_out.code)
            });
            p.check(finding_keys(&core_dl) == finding_keys(&live_dl), || {
                format!("deadlocks --core ({kind}) {:?} vs live {:?}", finding_keys(&core_dl), finding_keys(&live_dl))
            });
            p.check(finding_keys(&from_core) == finding_keys(&live_dl), || {
                "dump --core findings differ from deadlocks".into()
            });
        }
        if let Err(e) = check_schema(&from_core, "dump --core --json") {
            p.push(e);
        }
        // systemd-coredump's compressed formats, read directly.
        if script == "asyncio_service.py" {
            for (tool, ext) in [("zstd", "zst"), ("lz4", "lz4")] {
                let packed = dir.path().join(format!("packed.{ext}"));
                if !Path::new(&format!("/usr/bin/{tool}")).exists() {
                    note(&format!("SKIP {ext} core on {}: {tool} is not installed", interp.version));
                    continue;
                }
                let mut c = Command::new(tool);
                c.args(["-q", "-1", "-f"]).arg(&core);
                // zstd names its output with -o; lz4 takes it as the second operand.
                if tool == "zstd" {
                    c.arg("-o");
                }
                c.arg(&packed);
                let out = run(c, Duration::from_secs(120));
                if out.code != Some(0) {
                    p.push(format!("{tool} could not compress the core: {}", out.describe_brief()));
                    continue;
                }
                let d = json_of(
                    &taskspy_run(&["dump", "--core", &packed.display().to_string(), "--json"]),
                    &format!("dump --core .{ext}"),
                )?;
                let mut diffs = Vec::new();
                differences(&normalized(&from_core), &normalized(&d), "", &mut diffs);
                p.check(diffs.is_empty(), || format!(".{ext} core differs from the plain one:\n{}", diffs.join("\n")));
            }
        }
    }
    signal(pid, libc::SIGCONT);
    p.finish(|| format!("{script} on {}", interp.describe()))
}

#[test]
fn core_equals_blocking() {
    if !gcore_available() {
        note("SKIP core_equals_blocking: gcore (gdb) is not installed");
        return;
    }
    each_interpreter(
        COVERAGE,
        "core-vs-live",
        true,
        |_| None,
        |interp| {
            for (script, args, code) in CORE_FIXTURES {
                core_vs_live(interp, script, args, *code)?;
            }
            Ok(Outcome::Pass)
        },
    );
}

/// (script, args) of the deadlock fixtures, positives and one negative.
const DEADLOCK_FIXTURES: &[(&str, &[&str])] = &[
    ("deadlock_async_abba.py", &[]),
    ("deadlock_thread_abba.py", &["rlock"]),
    ("deadlock_thread_abba.py", &["lock"]),
    ("deadlock_lock_wait.py", &[]),
    ("deadlock_await_cycle.py", &[]),
    ("deadlock_healthy_sleep_holder.py", &[]),
];

#[test]
fn saved_snapshot_views_equal_live() {
    each_interpreter(
        COVERAGE,
        "saved-vs-live",
        true,
        |_| None,
        |interp| {
            let mut p = Problems(vec![]);
            for (script, args) in DEADLOCK_FIXTURES {
                let fx = Fixture::start(interp, script, args, &[])?;
                let pid_s = fx.pid.to_string();
                let live_out = taskspy_run(&["deadlocks", &pid_s, "--json"]);
                let live = json_of(&live_out, "deadlocks --json")?;
                let saved = taskspy_run(&["dump", &pid_s, "--json"]);
                if saved.code != Some(0) {
                    return Err(format!("dump --json: {}", saved.describe_brief()));
                }
                let dir = TempDir::new("saved");
                let file = dir.path().join("snap.json");
                std::fs::write(&file, &saved.stdout_bytes).map_err(|e| e.to_string())?;
                let file_s = file.display().to_string();
                let from_file_out = taskspy_run(&["deadlocks", "--input", &file_s, "--json"]);
                let from_file = json_of(&from_file_out, "deadlocks --input")?;
                p.check(from_file_out.code == live_out.code, || {
                    format!(
                        "{script} {args:?}: deadlocks --input exit {:?}, live {:?}",
                        from_file_out.code, live_out.code
                    )
                });
                p.check(finding_keys(&from_file) == finding_keys(&live), || {
                    format!(
                        "{script} {args:?}: --input findings {:?} vs live {:?}",
                        finding_keys(&from_file),
                        finding_keys(&live)
                    )
                });
                p.check(*script == "deadlock_healthy_sleep_holder.py" || !finding_keys(&live).is_empty(), || {
                    format!("{script}: no finding live")
                });
                for view in ["ps", "pstree"] {
                    let a = taskspy_run(&[view, &pid_s]);
                    let b = taskspy_run(&[view, "--input", &file_s]);
                    p.check(b.code == Some(0) && a.stdout == b.stdout, || {
                        format!("{view} --input differs from live:\n{}", b.describe_brief())
                    });
                }
                // Standard input works too.
                let mut c = taskspy_cmd(&["pstree", "--input", "-"]);
                c.stdin(std::fs::File::open(&file).map_err(|e| e.to_string())?);
                let out = run_with_stdin(c);
                let live_tree = taskspy_run(&["pstree", &pid_s]);
                p.check(out.code == Some(0) && out.stdout == live_tree.stdout, || {
                    format!("pstree --input -: {}", out.describe_brief())
                });
            }
            p.finish(|| interp.describe())?;
            Ok(Outcome::Pass)
        },
    );
}

/// `run` sets stdin to null: this one keeps the stdin the command was given.
fn run_with_stdin(mut c: Command) -> CmdOutput {
    let out = c.output();
    match out {
        Ok(o) => CmdOutput {
            code: o.status.code(),
            timed_out: false,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stdout_bytes: o.stdout,
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            cmdline: format!("{c:?}"),
            elapsed: Duration::ZERO,
        },
        Err(e) => CmdOutput {
            code: None,
            timed_out: false,
            stdout: String::new(),
            stdout_bytes: vec![],
            stderr: e.to_string(),
            cmdline: format!("{c:?}"),
            elapsed: Duration::ZERO,
        },
    }
}

fn stacks(doc: &Value) -> BTreeSet<String> {
    arr(&doc["threads"]).iter().map(|t| format!("{}: {}", t["tid"], fmt_frames(&frames_of(t)))).collect()
}

#[test]
fn kernel_core() {
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    if !kernel_cores_to_files() {
        note(&format!(
            "SKIP kernel_core: core_pattern {:?} does not write cores into the process's directory",
            pattern.trim()
        ));
        return;
    }
    each_interpreter(
        COVERAGE,
        "kernel-core",
        true,
        |_| None,
        |interp| {
            let dir = TempDir::new("kcore");
            let mut fx = start_dumpable(interp, "asyncio_service.py", &[], dir.path())?;
            let live = dump_json(fx.pid)?;
            signal(fx.pid, libc::SIGSEGV);
            fx.wait_exit(Duration::from_secs(60)).ok_or("the fixture did not die of SIGSEGV")?;
            let core = std::fs::read_dir(dir.path())
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.file_name().and_then(|n| n.to_str()).map(|n| n.starts_with("core")).unwrap_or(false));
            let Some(core) = core else {
                return Ok(Outcome::Skip(format!(
                    "the kernel wrote no core into the fixture's directory (core_pattern {:?})",
                    pattern.trim()
                )));
            };
            let from_core = json_of(
                &taskspy_run(&["dump", "--core", &core.display().to_string(), "--json"]),
                "dump --core (kernel core)",
            )?;
            let mut p = Problems(vec![]);
            p.check(stacks(&from_core) == stacks(&live), || {
                format!(
                    "kernel core stacks differ from the live ones:\n--- live ---\n{:?}\n--- core ---\n{:?}",
                    stacks(&live),
                    stacks(&from_core)
                )
            });
            let tasks = |d: &Value| -> BTreeSet<String> {
                arr(&d["tasks"]).iter().map(|t| s(&t["name"]).to_string()).collect()
            };
            p.check(tasks(&from_core) == tasks(&live) && !tasks(&live).is_empty(), || {
                format!("kernel core tasks {:?} vs live {:?}", tasks(&from_core), tasks(&live))
            });
            p.check(s(&from_core["cmdline"]).contains("asyncio_service.py"), || {
                format!("cmdline from the core: {}", from_core["cmdline"])
            });
            p.finish(|| interp.describe())?;
            Ok(Outcome::Pass)
        },
    );
}

/// One line on stderr, the expected exit code, and the words that make it actionable.
fn expect_error(p: &mut Problems, what: &str, out: &CmdOutput, code: i32, words: &[&str]) {
    let err = out.stderr.trim_end();
    p.check(out.code == Some(code), || {
        format!("{what}: exit {:?}, expected {code}\n{}", out.code, out.describe_brief())
    });
    p.check(err.lines().count() == 1 && err.starts_with("taskspy: error: "), || {
        format!("{what}: not one error line:\n{err}")
    });
    p.check(!err.contains("panicked") && !err.contains("internal error"), || format!("{what}: {err}"));
    for w in words {
        p.check(err.contains(w), || format!("{what}: the message does not say {w:?}: {err}"));
    }
}

/// A Debian-root interpreter (static python, runtime in the executable) if there is one.
fn static_interpreter() -> Option<&'static Interpreter> {
    inventory().supported.iter().rev().find(|i| i.kind == "debian")
}

#[test]
fn core_bad_inputs() {
    if !gcore_available() {
        note("SKIP core_bad_inputs: gcore (gdb) is not installed");
        return;
    }
    let dir = TempDir::new("bad");
    let mut p = Problems(vec![]);
    let d = |n: &str| dir.path().join(n).display().to_string();

    std::fs::write(dir.path().join("notes.txt"), "hello\n").unwrap();
    expect_error(&mut p, "a text file", &taskspy_run(&["dump", "--core", &d("notes.txt")]), 10, &["not an ELF"]);
    expect_error(&mut p, "an executable", &taskspy_run(&["dump", "--core", "/bin/sleep"]), 10, &["not a core"]);
    expect_error(&mut p, "no such core", &taskspy_run(&["ps", "--core", &d("nope")]), 10, &["no such file"]);
    std::fs::write(dir.path().join("cut.zst"), [0x28u8, 0xb5, 0x2f, 0xfd, 0x04, 0x00]).unwrap();
    expect_error(&mut p, "corrupt zstd", &taskspy_run(&["dump", "--core", &d("cut.zst")]), 10, &["zstd"]);

    // Saved-snapshot inputs.
    expect_error(&mut p, "--input text", &taskspy_run(&["deadlocks", "--input", &d("notes.txt")]), 10, &["not JSON"]);
    std::fs::write(dir.path().join("ps.json"), r#"{"schema":"taskspy-ps/1","rows":[]}"#).unwrap();
    expect_error(
        &mut p,
        "--input ps doc",
        &taskspy_run(&["pstree", "--input", &d("ps.json")]),
        10,
        &["taskspy-ps/1", "dump --json"],
    );
    expect_error(&mut p, "no target", &taskspy_run(&["dump"]), 2, &["PID", "--core", "--input"]);
    expect_error(&mut p, "two targets", &taskspy_run(&["dump", "1", "--input", &d("ps.json")]), 2, &["one target"]);

    // A core of a process that is not Python.
    let sleeper = Command::new("sleep").arg("300").spawn().expect("sleep");
    let sleeper = ChildGuard::from_child(sleeper);
    match gcore(sleeper.pid, dir.path()) {
        Ok(core) => {
            let c = core.display().to_string();
            expect_error(&mut p, "core of sleep", &taskspy_run(&["dump", "--core", &c]), 6, &["not a Python process"]);
            // Truncated: half of it.
            let bytes = std::fs::read(&core).unwrap();
            std::fs::write(dir.path().join("half"), &bytes[..bytes.len() / 2]).unwrap();
            expect_error(
                &mut p,
                "truncated core",
                &taskspy_run(&["dump", "--core", &d("half")]),
                10,
                &["truncated", "--force"],
            );
            // --force reads what is there; gcore writes its notes last, so here they are cut off
            // too, which must still be one clear line.
            let forced = taskspy_run(&["dump", "--core", &d("half"), "--force"]);
            if forced.code != Some(0) {
                expect_error(&mut p, "truncated core --force", &forced, 10, &["truncated"]);
            }
        }
        Err(e) => p.push(format!("gcore of sleep: {e}")),
    }
    drop(sleeper);

    // A binary missing on disk, then found again; and one of another build.
    match static_interpreter() {
        None => note("SKIP core_bad_inputs (missing/mismatched binary): no Debian-root interpreter provisioned"),
        Some(interp) => {
            if let Err(e) = missing_and_mismatched_binary(interp, dir.path(), &mut p) {
                p.push(e);
            }
        }
    }
    if let Err(e) = p.finish(|| "bad inputs".into()) {
        panic!("{e}");
    }
}

fn missing_and_mismatched_binary(interp: &Interpreter, dir: &Path, p: &mut Problems) -> Result<(), String> {
    // Run a copy of the static interpreter from a directory we then remove: the core names a file
    // this machine no longer has.
    let prefix = interp.python.parent().and_then(Path::parent).ok_or("interpreter path")?.to_path_buf(); // .../usr
    let gone = dir.join("gone");
    std::fs::create_dir_all(&gone).map_err(|e| e.to_string())?;
    let copy = gone.join(interp.python.file_name().ok_or("name")?);
    std::fs::copy(&interp.python, &copy).map_err(|e| e.to_string())?;
    let mut c = interp.command_with(&copy);
    c.arg("-u")
        .arg(fixture_path("asyncio_service.py"))
        .env("PYTHONHOME", &prefix)
        .env("TASKSPY_FIXTURE_LIFETIME", "900");
    let fx = Fixture::spawn(c, "asyncio_service.py from a copied interpreter")?;
    let core = gcore(fx.pid, dir)?;
    drop(fx);
    let core_s = core.display().to_string();
    // Where the copy lived, under a --lib-root directory.
    let root = dir.join("root");
    let under_root = root.join(copy.strip_prefix("/").map_err(|e| e.to_string())?);
    std::fs::create_dir_all(under_root.parent().ok_or("parent")?).map_err(|e| e.to_string())?;
    std::fs::copy(&copy, &under_root).map_err(|e| e.to_string())?;
    std::fs::remove_file(&copy).map_err(|e| e.to_string())?;
    let copy_s = copy.display().to_string();
    expect_error(p, "binary missing", &taskspy_run(&["dump", "--core", &core_s]), 11, &[&copy_s, "--lib-root"]);
    let with_exe = taskspy_run(&["pstree", "--core", &core_s, "--exe", &interp.python.display().to_string()]);
    p.check(with_exe.code == Some(0) && with_exe.stdout.contains("accept-loop"), || {
        format!("--exe: {}", with_exe.describe_brief())
    });
    let with_root = taskspy_run(&["pstree", "--core", &core_s, "--lib-root", &root.display().to_string()]);
    p.check(with_root.code == Some(0) && with_root.stdout.contains("accept-loop"), || {
        format!("--lib-root: {}", with_root.describe_brief())
    });
    // Another build in its place: refused, unless --force.
    let other = inventory()
        .supported
        .iter()
        .find(|i| i.kind == "debian" && i.python != interp.python)
        .map(|i| i.python.clone())
        .unwrap_or_else(|| PathBuf::from("/bin/sleep"));
    let other_s = other.display().to_string();
    expect_error(
        p,
        "binary of another build",
        &taskspy_run(&["dump", "--core", &core_s, "--exe", &other_s]),
        12,
        &["build-id", "--force"],
    );
    let forced = taskspy_run(&["dump", "--core", &core_s, "--exe", &other_s, "--force"]);
    p.check(forced.code != Some(12) && forced.code.is_some() && !forced.stderr.contains("panicked"), || {
        format!("--force with another build: {}", forced.describe_brief())
    });
    Ok(())
}
