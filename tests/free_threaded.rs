//! Free-threaded CPython (python3.14t built by scripts/provision.sh; GIL off, and with PYTHON_GIL=1):
//!
//! * `threads_match_cpython_reader` (every 3.14+ interpreter): every thread's stack from `taskspy
//!   dump --json` against the same build's `_remote_debugging.RemoteUnwinder` (CPython's reader
//!   stops at the first entry frame, so its frames must be a prefix of taskspy's).
//! * `what_limits_scaling` (3.14t): `gil --json` on fixtures/ft_scaling.py — two CPU-bound threads
//!   run Python in parallel (mean ≥ 1.5 on this 2-core machine; ≤ 1.1 with PYTHON_GIL=1), a
//!   GC-heavy allocator shows stop-the-world pauses requested by its threads with the collector
//!   running, three threads contending on one `threading.Lock` are reported blocked on
//!   `shared_lock` in `contend`.
//! * `why_the_gil_is_on` (3.14t): PYTHON_GIL=1 and `-X gil=1` are told apart; a C extension built
//!   here with gcc and no `Py_mod_gil` slot re-enables the GIL and is named with its file; one
//!   with `Py_mod_gil = Py_MOD_GIL_NOT_USED` leaves it off.
//!
//! Coverage line: target/taskspy-coverage-free-threaded.txt. Without a 3.14t (no CPython source
//! for provisioning) the free-threaded checks print a skip.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const COVERAGE: &str = "free-threaded";

fn only_free_threaded(i: &Interpreter) -> Option<String> {
    (!i.free_threaded()).then(|| "not a free-threaded build".to_string())
}

/// `_remote_debugging.RemoteUnwinder(pid).get_stack_trace()` of the target's own build, as
/// tid -> [(function, file, line)].
fn cpython_stacks(interp: &Interpreter, pid: i32) -> Result<HashMap<i64, Vec<(String, String, i64)>>, String> {
    let mut c = interp.command();
    c.arg("-c").arg(
        "import json, sys, _remote_debugging\n\
         u = _remote_debugging.RemoteUnwinder(int(sys.argv[1]), all_threads=True)\n\
         out = {}\n\
         for t in u.get_stack_trace():\n\
         \x20   threads = t.threads if hasattr(t, 'threads') else [t]\n\
         \x20   for th in threads:\n\
         \x20       out[th.thread_id] = [(f.funcname, f.filename, getattr(f, 'lineno', None) or f.location.lineno)\n\
         \x20                            for f in th.frame_info]\n\
         print(json.dumps(out))",
    );
    c.arg(pid.to_string());
    let out = run(c, COMMAND_TIMEOUT);
    if out.code != Some(0) {
        return Err(format!("CPython's RemoteUnwinder failed:\n{}", out.describe_brief()));
    }
    let v: Value = serde_json::from_str(out.stdout.trim()).map_err(|e| format!("{e}: {}", out.stdout))?;
    let mut m = HashMap::new();
    for (tid, frames) in v.as_object().into_iter().flatten() {
        let fs = arr(frames)
            .iter()
            .map(|f| (s(&f[0]).to_string(), s(&f[1]).to_string(), f[2].as_i64().unwrap_or(-1)))
            .collect();
        m.insert(tid.parse().unwrap_or(-1), fs);
    }
    Ok(m)
}

#[test]
fn threads_match_cpython_reader() {
    each_interpreter(
        COVERAGE,
        "cpython-threads",
        true,
        |i| (!i.at_least(14)).then(|| "CPython's _remote_debugging exists from 3.14".to_string()),
        |interp| {
            let mut p = Problems::default();
            for script in ["threads.py", "asyncio_service.py"] {
                let fx = Fixture::start(interp, script, &[], &[])?;
                let ours = dump_json(fx.pid)?;
                let theirs = cpython_stacks(interp, fx.pid)?;
                let mut compared = 0;
                for t in arr(&ours["threads"]) {
                    let Some(tid) = t["tid"].as_i64() else { continue };
                    let Some(cp) = theirs.get(&tid) else {
                        p.push(format!("{script}: CPython's reader has no thread {tid}"));
                        continue;
                    };
                    let mine: Vec<(String, String, i64)> = arr(&t["frames"])
                        .iter()
                        .map(|f| {
                            (s(&f["function"]).to_string(), s(&f["file"]).to_string(), f["line"].as_i64().unwrap_or(-1))
                        })
                        .collect();
                    p.check(!cp.is_empty() && mine.len() >= cp.len() && mine[..cp.len()] == cp[..], || {
                        format!("{script} thread {tid}: CPython {cp:?}\n  taskspy {mine:?}")
                    });
                    compared += 1;
                }
                p.check(compared >= 2, || format!("{script}: only {compared} threads compared"));
            }
            p.finish(|| interp.describe())?;
            Ok(Outcome::Pass)
        },
    );
}

fn gil_json(pid: i32) -> Result<Value, String> {
    let (v, out) = taskspy_json("gil", pid, &["--duration", "2", "--rate", "500"])?;
    if out.code != Some(0) {
        return Err(format!("gil failed: {}", out.describe_brief()));
    }
    Ok(v)
}

fn thread<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    arr(&v["threads"]).iter().find(|t| t["name"] == name)
}

#[test]
fn what_limits_scaling() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    each_interpreter(COVERAGE, "ft-scaling", true, only_free_threaded, |interp| {
        let mut p = Problems::default();
        let gil = interp.gil_forced();
        // Two CPU-bound threads.
        let fx = Fixture::start(interp, "ft_scaling.py", &["cpu", "2"], &[])?;
        let v = gil_json(fx.pid)?;
        let ft = &v["free_threading"];
        let par = ft["parallelism"].as_f64().unwrap_or(-1.0);
        if gil {
            p.check(par <= 1.1, || format!("parallelism {par} with PYTHON_GIL=1"));
            let held = v["gil_held_pct"].as_f64().unwrap_or(0.0);
            p.check(held > 70.0, || format!("gil_held_pct {held} with PYTHON_GIL=1 and two spinning threads"));
        } else if cores >= 2 {
            p.check(par >= 1.5, || format!("parallelism {par}: two spinning threads on {cores} cores"));
            for n in ["cpu-0", "cpu-1"] {
                let r = thread(&v, n).and_then(|t| t["running_python_pct"].as_f64()).unwrap_or(-1.0);
                p.check(r > 60.0, || format!("{n}: running_python_pct {r}"));
            }
        }
        p.check(v["note"].as_str().is_some(), || "no note about the free-threaded build".into());
        drop(fx);
        // The collector stops the world; its requester is an allocating thread.
        let fx = Fixture::start(interp, "ft_scaling.py", &["gc", "2"], &[])?;
        let v = gil_json(fx.pid)?;
        let ft = &v["free_threading"];
        let stw = ft["stop_the_world_pct"].as_f64().unwrap_or(-1.0);
        p.check(stw > 0.0, || format!("stop_the_world_pct {stw} with a GC-heavy allocator"));
        let by = arr(&ft["stop_the_world_by"]);
        p.check(by.iter().any(|w| w["gc"] == true && s(&w["requester_name"]).starts_with("alloc-")), || {
            format!("no pause requested by an allocating thread with the collector running: {by:?}")
        });
        drop(fx);
        // Three threads on one lock: the waiters are blocked on shared_lock in contend().
        let fx = Fixture::start(interp, "ft_scaling.py", &["lock", "3"], &[])?;
        let v = gil_json(fx.pid)?;
        let waits = arr(&v["free_threading"]["lock_waits"]);
        let on_shared: Vec<&Value> = waits.iter().filter(|w| w["lock"]["name"] == "shared_lock").collect();
        if gil {
            // With the GIL the contenders mostly wait for the GIL; lock waits are optional.
            note(&format!("  {}: {} lock-wait entries with PYTHON_GIL=1", interp.version, on_shared.len()));
        } else {
            p.check(on_shared.len() >= 2, || format!("contenders blocked on shared_lock: {waits:?}"));
            p.check(
                on_shared.iter().all(|w| w["frame"]["function"] == "contend" && w["lock"]["type"] == "threading.Lock"),
                || format!("lock waits should name threading.Lock shared_lock in contend(): {on_shared:?}"),
            );
            let text = taskspy_run(&["gil", &fx.pid.to_string(), "--duration", "1"]);
            p.check(
                text.stdout.contains("'shared_lock'") && text.stdout.contains("Threads running Python at once"),
                || format!("gil text:\n{}", text.stdout),
            );
        }
        p.finish(|| interp.describe())?;
        Ok(Outcome::Pass)
    });
}

/// Build the two test extension modules with gcc against the interpreter's headers.
fn build_extensions(interp: &Interpreter, dir: &Path) -> Result<(), String> {
    let q = |code: &str| -> Result<String, String> {
        let mut c = interp.command();
        c.arg("-c").arg(code);
        let out = run(c, COMMAND_TIMEOUT);
        if out.code != Some(0) {
            return Err(out.describe_brief());
        }
        Ok(out.stdout.trim().to_string())
    };
    let include = q("import sysconfig; print(sysconfig.get_paths()['include'])")?;
    let suffix = q("import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")?;
    let sources = [
        (
            "ts_noslot",
            "#include <Python.h>\nstatic struct PyModuleDef def = {PyModuleDef_HEAD_INIT, \"ts_noslot\", NULL, -1, NULL};\n\
             PyMODINIT_FUNC PyInit_ts_noslot(void) { return PyModule_Create(&def); }\n",
        ),
        (
            "ts_withslot",
            "#include <Python.h>\nstatic PyModuleDef_Slot slots[] = {{Py_mod_gil, Py_MOD_GIL_NOT_USED}, {0, NULL}};\n\
             static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, \"ts_withslot\", NULL, 0, NULL, slots};\n\
             PyMODINIT_FUNC PyInit_ts_withslot(void) { return PyModuleDef_Init(&def); }\n",
        ),
    ];
    for (name, src) in sources {
        let c_file = dir.join(format!("{name}.c"));
        std::fs::write(&c_file, src).map_err(|e| e.to_string())?;
        let mut c = Command::new("gcc");
        c.args(["-shared", "-fPIC", "-O1"])
            .arg(format!("-I{include}"))
            .arg(&c_file)
            .arg("-o")
            .arg(dir.join(format!("{name}{suffix}")));
        let out = run(c, COMMAND_TIMEOUT);
        if out.code != Some(0) {
            return Err(format!("gcc {name}: {}", out.describe_brief()));
        }
    }
    Ok(())
}

/// A process that imports `modules` (from `dir`) and parks.
fn importer(interp: &Interpreter, dir: &Path, modules: &[&str], extra_args: &[&str]) -> Result<Fixture, String> {
    let mut c = interp.command();
    c.args(extra_args).arg("-u").arg("-c").arg(format!(
        "import sys, time\nsys.path.insert(0, {:?})\n{}\nprint('READY', flush=True)\ntime.sleep(600)",
        dir.display().to_string(),
        modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("\n")
    ));
    c.env("PYTHONWARNINGS", "ignore");
    Fixture::spawn(c, &format!("import {modules:?} on {}", interp.version))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("taskspy-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::create_dir_all(&d);
    d
}

#[test]
fn why_the_gil_is_on() {
    each_interpreter(COVERAGE, "gil-reason", true, only_free_threaded, |interp| {
        let mut p = Problems::default();
        let dir = temp_dir(&format!("ext-{}", interp.label));
        build_extensions(interp, &dir)?;
        let reason = |fx: &Fixture| -> Result<Value, String> { Ok(dump_json(fx.pid)?["python"].clone()) };
        if interp.gil_forced() {
            let fx = importer(interp, &dir, &["ts_withslot"], &[])?;
            let py = reason(&fx)?;
            p.check(py["gil_enabled"] == true && py["gil_reason"]["cause"] == "configuration", || format!("{py}"));
            p.check(s(&py["gil_reason"]["detail"]).contains("PYTHON_GIL=1"), || format!("{py}"));
            let text = taskspy_run(&["dump", &fx.pid.to_string()]);
            p.check(text.stdout.contains("GIL enabled by PYTHON_GIL=1"), || text.stdout.clone());
        } else {
            // A module that declares free-threading support leaves the GIL off.
            let fx = importer(interp, &dir, &["ts_withslot"], &[])?;
            let py = reason(&fx)?;
            p.check(py["gil_enabled"] == false && py["gil_reason"].is_null(), || format!("with the slot: {py}"));
            drop(fx);
            // One that does not re-enables it: named, with its file.
            let fx = importer(interp, &dir, &["ts_withslot", "ts_noslot"], &[])?;
            let py = reason(&fx)?;
            let mods = arr(&py["gil_reason"]["modules"]);
            p.check(py["gil_enabled"] == true && py["gil_reason"]["cause"] == "extension_modules", || format!("{py}"));
            p.check(
                mods.len() == 1
                    && mods[0]["name"] == "ts_noslot"
                    && s(&mods[0]["file"]).starts_with(&dir.display().to_string()),
                || format!("modules {mods:?}"),
            );
            let text = taskspy_run(&["dump", &fx.pid.to_string()]);
            p.check(text.stdout.contains("needs the GIL: ts_noslot"), || text.stdout.clone());
            let gil = taskspy_json("gil", fx.pid, &["--duration", "0.3"])?.0;
            p.check(s(&gil["note"]).contains("ts_noslot"), || format!("gil note {}", gil["note"]));
            drop(fx);
            // -X gil=1 on the command line.
            let fx = importer(interp, &dir, &["ts_withslot"], &["-X", "gil=1"])?;
            let py = reason(&fx)?;
            p.check(s(&py["gil_reason"]["detail"]).contains("-X gil=1"), || format!("-X gil=1: {py}"));
        }
        let _ = std::fs::remove_dir_all(&dir);
        p.finish(|| interp.describe())?;
        Ok(Outcome::Pass)
    });
}
