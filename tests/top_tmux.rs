//! `taskspy top` end to end in a real terminal: tmux (installed by scripts/provision.sh; the tests
//! print a SKIP line when it is missing) runs `taskspy top` in a detached 160x45 session and the
//! tests read the screen with `capture-pane -p` and type with `send-keys`.
//!
//! * `live_session`: fixtures/asyncio_service.py: the tree shows the task names; Down + Enter
//!   collapses a task (▾ -> ▸, its children disappear), Enter expands it again; `s` writes
//!   `taskspy-<pid>-*.json` (schema taskspy/1) into the working directory; `q` exits 0 and
//!   restores the terminal (no alternate screen, cursor shown, the shell's output is visible).
//!   On the oldest and newest interpreter.
//! * `target_exits_mid_session`: the fixture exits by itself while top runs: the header says
//!   "process exited" and the last view stays.
//! * `replay_saved_snapshot`: `top --replay FILE` of a `dump --json` shows REPLAY and the tasks.
//! * `subprocesses_session`: `top --subprocesses` on fixtures/mp_pool.py: every pool worker listed
//!   with its role and its last look, the `sleep` helper skipped; `]` switches the panes to a
//!   worker (its thread parked in park_in_pool); a worker killed meanwhile is listed gone and the
//!   pool's replacement is picked up and read.
//! * `refuses_without_a_terminal`: stdout piped -> exit non-zero, one line pointing to `dump`.
//!
//! Every tmux session has its own server socket (`tmux -L`), killed when the test ends.
//! Coverage line: target/taskspy-coverage-top.txt.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const COVERAGE: &str = "top";
const SERVICE: &str = "asyncio_service.py";

fn tmux_available() -> Option<String> {
    match run(
        {
            let mut c = Command::new("tmux");
            c.arg("-V");
            c
        },
        Duration::from_secs(10),
    ) {
        o if o.code == Some(0) => None,
        o => Some(format!("tmux is not available ({}); scripts/provision.sh installs it", o.stderr.trim())),
    }
}

/// A detached tmux session on a private server; the server is killed on drop.
struct Tmux {
    socket: String,
    session: String,
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket);
        c
    }

    /// `tmux new-session -d -x 160 -y 45 -c CWD 'SHELL_CMD'`
    fn start(cwd: &Path, shell_cmd: &str) -> Result<Tmux, String> {
        let t = Tmux { socket: unique("taskspy-tmux"), session: unique("top") };
        let mut c = t.cmd();
        c.args(["-f", "/dev/null", "new-session", "-d", "-s", &t.session, "-x", "160", "-y", "45", "-c"])
            .arg(cwd)
            .arg(shell_cmd);
        c.env("TERM", "xterm-256color").env_remove("TMUX");
        let out = run(c, Duration::from_secs(20));
        if out.code != Some(0) {
            return Err(format!("cannot start tmux:\n{}", out.describe_brief()));
        }
        Ok(t)
    }

    fn capture(&self) -> String {
        let mut c = self.cmd();
        c.args(["capture-pane", "-p", "-t", &self.session]);
        run(c, Duration::from_secs(10)).stdout
    }

    fn display(&self, fmt: &str) -> String {
        let mut c = self.cmd();
        c.args(["display-message", "-p", "-t", &self.session, fmt]);
        run(c, Duration::from_secs(10)).stdout.trim().to_string()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let mut c = self.cmd();
            c.args(["send-keys", "-t", &self.session, k]);
            run(c, Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Poll the screen until `pred` holds; Err(last screen) after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            last = self.capture();
            if pred(&last) {
                return Ok(last);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!("timed out after {timeout:?} waiting for {what}; screen:\n{last}"))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let mut c = self.cmd();
        c.arg("kill-server");
        run(c, Duration::from_secs(10));
    }
}

/// Rows of the Tasks pane (the right pane of the top half): text between "││" and the border.
fn task_rows(screen: &str) -> Vec<String> {
    screen
        .lines()
        .filter_map(|l| l.split_once("││").map(|(_, r)| r.trim_end().trim_end_matches('│').trim_end().to_string()))
        .filter(|r| !r.trim().is_empty())
        .collect()
}

/// The "Tasks (N)" count in the pane title.
fn tasks_title_count(screen: &str) -> Option<usize> {
    let i = screen.find("Tasks (")?;
    screen[i + 7..].split(')').next()?.trim().parse().ok()
}

fn service_task_names(interp: &Interpreter) -> Vec<&'static str> {
    let mut v = vec![
        "service-main",
        "accept-loop",
        "worker-1",
        "worker-2",
        "worker-3",
        "fetch-a",
        "fetch-b",
        "supervisor",
        "job-runner",
    ];
    if interp.at_least(11) {
        v.extend(["group-parent", "group-child-1", "group-child-2"]);
    }
    v
}

fn top_cmd(args: &str) -> String {
    format!("{} {args}; echo EXIT=$?; sleep 30", sh_quote(&taskspy().display().to_string()))
}

/// The oldest and the newest supported interpreter, and the free-threaded builds (their GIL
/// pane differs).
fn ends() -> Vec<String> {
    let inv = inventory();
    let mut v: Vec<String> =
        inv.supported.first().into_iter().chain(inv.supported.last()).map(|i| i.version.clone()).collect();
    v.extend(inv.supported.iter().filter(|i| i.free_threaded()).map(|i| i.version.clone()));
    v.dedup();
    v
}

fn only(versions: Vec<String>, why: &'static str) -> impl Fn(&Interpreter) -> Option<String> {
    move |i: &Interpreter| (!versions.contains(&i.version)).then(|| why.to_string())
}

#[test]
fn live_session() {
    let tmux_missing = tmux_available();
    each_interpreter(
        COVERAGE,
        "top-live",
        false,
        only(ends(), "the TUI is run on the oldest and newest interpreter and the free-threaded builds"),
        |interp| {
            if let Some(why) = &tmux_missing {
                return Ok(Outcome::Skip(why.clone()));
            }
            let fx = Fixture::start(interp, SERVICE, &[], &[])?;
            let dir = TempDir::new("taskspy-top");
            let tm = Tmux::start(&dir.0, &top_cmd(&format!("top {}", fx.pid)))?;
            let names = service_task_names(interp);
            let mut p = Problems::default();

            // The first view: header and every task of the fixture.
            let screen = tm.wait_for("the task tree", Duration::from_secs(20), |s| {
                names.iter().all(|n| s.contains(n)) && s.contains("Tasks (")
            })?;
            // "3.14.7t+gil" runs Python 3.14.7.
            let shown = interp.version.trim_end_matches("+gil").trim_end_matches('t');
            p.check(screen.contains(&format!("PID {}", fx.pid)) && screen.contains(&format!("Python {shown}")), || {
                "header lacks the PID or the Python version".into()
            });
            if interp.free_threaded() {
                let want = if interp.gil_forced() { "PYTHON_GIL=1" } else { "Free-threaded (no GIL)" };
                match tm.wait_for(want, Duration::from_secs(10), |s| s.contains(want)) {
                    Ok(_) => {}
                    Err(e) => p.push(format!("the GIL pane does not say {want:?}: {e}")),
                }
            }
            p.check(screen.contains("metrics-flusher") || screen.contains("metrics-flushe"), || {
                "threads pane lacks metrics-flusher".into()
            });
            p.check(tm.display("#{alternate_on}") == "1", || "top does not use the alternate screen".into());
            let rows = task_rows(&screen);
            let total = tasks_title_count(&screen);
            // fetch-a and fetch-b exist once per worker (3 each).
            let want_total = names.len() + 4;
            p.check(total == Some(want_total), || format!("Tasks title count {total:?}, expected {want_total}"));

            // Collapse the first expandable task (Down to it, Enter), then expand it again.
            let Some(k) = rows.iter().position(|r| r.starts_with("▾ ")) else {
                return Err(format!("no expandable (▾) task row; rows: {rows:#?}"));
            };
            let name = rows[k].trim_start_matches("▾ ").split("  [").next().unwrap_or("").to_string();
            let children = rows[k + 1..].iter().take_while(|r| r.starts_with("    ")).count();
            tm.keys(&vec!["Down"; k]);
            tm.keys(&["Enter"]);
            let collapsed =
                tm.wait_for(&format!("▸ {name}"), Duration::from_secs(5), |s| s.contains(&format!("▸ {name}")));
            match collapsed {
                Ok(s) => {
                    let want = total.map(|t| t - children);
                    p.check(tasks_title_count(&s) == want, || {
                        format!(
                            "after collapsing {name} ({children} children) Tasks count {:?}, expected {want:?}",
                            tasks_title_count(&s)
                        )
                    });
                    tm.keys(&["Enter"]);
                    match tm.wait_for(&format!("▾ {name} again"), Duration::from_secs(5), |s| {
                        s.contains(&format!("▾ {name}")) && tasks_title_count(s) == total
                    }) {
                        Ok(_) => {}
                        Err(e) => p.push(format!("Enter did not expand {name} again: {e}")),
                    }
                }
                Err(e) => p.push(format!("Down x{k} + Enter did not collapse {name}: {e}")),
            }

            // `s`: a snapshot file in the working directory.
            tm.keys(&["s"]);
            let deadline = Instant::now() + Duration::from_secs(10);
            let prefix = format!("taskspy-{}-", fx.pid);
            let mut saved = None;
            while Instant::now() < deadline && saved.is_none() {
                saved = std::fs::read_dir(&dir.0).ok().and_then(|rd| {
                    rd.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .map(|n| n.starts_with(&prefix) && n.ends_with(".json"))
                            .unwrap_or(false)
                    })
                });
                std::thread::sleep(Duration::from_millis(100));
            }
            match &saved {
                Some(path) => {
                    // The file may still be being written: parse it once the header reports it.
                    let _ = tm.wait_for("saved snapshot message", Duration::from_secs(5), |s| {
                        s.contains("saved snapshot to")
                    });
                    match std::fs::read_to_string(path)
                        .map_err(|e| e.to_string())
                        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()))
                    {
                        Ok(v) => {
                            p.check(v["schema"] == "taskspy/1", || format!("saved snapshot schema {}", v["schema"]));
                            p.check(v["pid"].as_i64() == Some(fx.pid as i64), || {
                                format!("saved snapshot pid {}", v["pid"])
                            });
                            let saved_names: Vec<&str> = arr(&v["tasks"]).iter().map(|t| s(&t["name"])).collect();
                            p.check(names.iter().all(|n| saved_names.contains(n)), || {
                                format!("saved snapshot tasks {saved_names:?}")
                            });
                        }
                        Err(e) => p.push(format!("saved snapshot {} does not parse: {e}", path.display())),
                    }
                }
                None => {
                    p.push(format!("`s` wrote no {prefix}*.json into {} (screen:\n{})", dir.0.display(), tm.capture()))
                }
            }

            // `q`: exit 0, terminal restored.
            tm.keys(&["q"]);
            match tm.wait_for("EXIT=", Duration::from_secs(10), |s| s.contains("EXIT=")) {
                Ok(s) => {
                    p.check(s.contains("EXIT=0"), || format!("top did not exit 0:\n{s}"));
                    p.check(!s.contains("Tasks (") && !s.contains("taskspy top —"), || {
                        format!("the TUI is still on the screen after q:\n{s}")
                    });
                    p.check(tm.display("#{alternate_on}") == "0", || {
                        "the terminal is still on the alternate screen after q".into()
                    });
                    p.check(tm.display("#{cursor_flag}") == "1", || "the cursor is still hidden after q".into());
                }
                Err(e) => p.push(format!("q did not end top: {e}")),
            }
            p.finish(String::new)?;
            Ok(Outcome::Pass)
        },
    );
}

#[test]
fn target_exits_mid_session() {
    let tmux_missing = tmux_available();
    let newest: Vec<String> = inventory().supported.last().map(|i| vec![i.version.clone()]).unwrap_or_default();
    each_interpreter(COVERAGE, "top-exit", false, only(newest, "run on the newest interpreter"), |interp| {
        if let Some(why) = &tmux_missing {
            return Ok(Outcome::Skip(why.clone()));
        }
        // asyncio_service.py ends itself (os._exit) after TASKSPY_FIXTURE_LIFETIME seconds.
        let mut fx = Fixture::start(interp, SERVICE, &[], &[("TASKSPY_FIXTURE_LIFETIME", "8")])?;
        let dir = TempDir::new("taskspy-top");
        let tm = Tmux::start(&dir.0, &top_cmd(&format!("top {}", fx.pid)))?;
        let names = service_task_names(interp);
        let mut p = Problems::default();
        tm.wait_for("the live view", Duration::from_secs(20), |s| names.iter().all(|n| s.contains(n)))?;
        p.check(fx.wait_exit(Duration::from_secs(20)).is_some(), || "the fixture did not exit by itself".into());
        match tm.wait_for("process exited", Duration::from_secs(15), |s| s.contains("process exited")) {
            Ok(s) => {
                p.check(names.iter().all(|n| s.contains(n)), || format!("the last view did not stay:\n{s}"));
                p.check(s.contains(&format!("PID {}", fx.pid)), || "header lost the PID".into());
            }
            Err(e) => p.push(e),
        }
        tm.keys(&["q"]);
        match tm.wait_for("EXIT=", Duration::from_secs(10), |s| s.contains("EXIT=")) {
            Ok(s) => p.check(s.contains("EXIT=0"), || format!("top did not exit 0 after the target exited:\n{s}")),
            Err(e) => p.push(e),
        }
        p.finish(String::new)?;
        Ok(Outcome::Pass)
    });
}

#[test]
fn replay_saved_snapshot() {
    let tmux_missing = tmux_available();
    let oldest: Vec<String> = inventory().supported.first().map(|i| vec![i.version.clone()]).unwrap_or_default();
    each_interpreter(COVERAGE, "top-replay", false, only(oldest, "run on the oldest interpreter"), |interp| {
        if let Some(why) = &tmux_missing {
            return Ok(Outcome::Skip(why.clone()));
        }
        let dir = TempDir::new("taskspy-replay");
        let file = dir.0.join("saved.json");
        let pid;
        {
            let fx = Fixture::start(interp, SERVICE, &[], &[])?;
            pid = fx.pid;
            let out = taskspy_run(&["dump", &fx.pid.to_string(), "--json"]);
            if out.code != Some(0) {
                return Err(out.describe_brief());
            }
            std::fs::write(&file, &out.stdout_bytes).map_err(|e| e.to_string())?;
        } // the fixture is gone: the replay reads only the file
        let tm = Tmux::start(&dir.0, &top_cmd(&format!("top --replay {}", sh_quote(&file.display().to_string()))))?;
        let names = service_task_names(interp);
        let mut p = Problems::default();
        match tm.wait_for("REPLAY view", Duration::from_secs(15), |s| {
            s.contains("REPLAY") && names.iter().all(|n| s.contains(n))
        }) {
            Ok(s) => {
                p.check(s.contains(&format!("PID {pid}")), || format!("replay header lacks PID {pid}:\n{s}"));
                p.check(!s.contains("process exited"), || "a replay is not a live process that exited".into());
            }
            Err(e) => p.push(e),
        }
        tm.keys(&["q"]);
        match tm.wait_for("EXIT=", Duration::from_secs(10), |s| s.contains("EXIT=")) {
            Ok(s) => p.check(s.contains("EXIT=0"), || format!("replay did not exit 0:\n{s}")),
            Err(e) => p.push(e),
        }
        p.finish(String::new)?;
        Ok(Outcome::Pass)
    });
}

#[test]
fn refuses_without_a_terminal() {
    let oldest: Vec<String> = inventory().supported.first().map(|i| vec![i.version.clone()]).unwrap_or_default();
    each_interpreter(COVERAGE, "top-no-tty", true, only(oldest, "run on the oldest interpreter"), |interp| {
        let fx = Fixture::start(interp, SERVICE, &[], &[])?;
        // stdin /dev/null, stdout and stderr pipes: no terminal at all.
        let out = run(taskspy_cmd(&["top", &fx.pid.to_string()]), Duration::from_secs(20));
        let mut p = Problems::default();
        p.check(!out.timed_out && out.code.is_some() && out.code != Some(0), || {
            format!("top without a terminal: exit {:?} (timed out: {})", out.code, out.timed_out)
        });
        let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        p.check(lines.len() == 1 && lines[0].contains("dump"), || {
            format!("expected one stderr line pointing to `dump`, got {:?}", out.stderr)
        });
        p.check(out.stdout_bytes.is_empty(), || {
            format!("top wrote to the non-terminal stdout: {:?}", truncate(&out.stdout, 200))
        });
        p.finish(String::new)?;
        Ok(Outcome::Pass)
    });
}

/// The "Processes (N)" pane's lines: "▶ PID (role)  …" / "  PID …".
fn process_lines(screen: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for l in screen.lines() {
        if l.contains("Processes (") {
            inside = true;
            continue;
        }
        if inside {
            if l.starts_with('└') || !l.starts_with('│') {
                break;
            }
            out.push(l.trim_matches('│').trim().to_string());
        }
    }
    out
}

#[test]
fn subprocesses_session() {
    let tmux_missing = tmux_available();
    each_interpreter(
        COVERAGE,
        "top-subprocesses",
        false,
        only(ends(), "the TUI is run on the oldest and newest interpreter and the free-threaded builds"),
        |interp| {
            if let Some(why) = &tmux_missing {
                return Ok(Outcome::Skip(why.clone()));
            }
            let fx = Fixture::start(interp, "mp_pool.py", &[], &[])?;
            let workers: Vec<i32> = fx.ready_line.split_whitespace().skip(2).filter_map(|p| p.parse().ok()).collect();
            let dir = TempDir::new("taskspy-top");
            let tm = Tmux::start(&dir.0, &top_cmd(&format!("top --subprocesses {}", fx.pid)))?;
            let mut p = Problems::default();
            let listed = |s: &str, pid: i32, what: &str| {
                process_lines(s)
                    .iter()
                    .any(|l| l.trim_start_matches('▶').trim_start().starts_with(&pid.to_string()) && l.contains(what))
            };
            // Every worker listed with its role and its look, the sleep helper skipped.
            let screen = tm.wait_for("every worker read", Duration::from_secs(30), |s| {
                workers.iter().all(|w| listed(s, *w, "(multiprocessing pool worker)") && listed(s, *w, "tasks"))
                    && s.contains("skipped: not a Python process")
            })?;
            p.check(screen.contains(&format!("PID {} (1 of ", fx.pid)), || format!("header:\n{screen}"));
            // `]` until a worker is on screen: its main thread parked in park_in_pool.
            let target = workers[0];
            let mut on_worker = None;
            for _ in 0..10 {
                tm.keys(&["]"]);
                let s = tm.capture();
                if s.contains(&format!("taskspy top — PID {target} (")) {
                    on_worker = Some(s);
                    break;
                }
            }
            match on_worker {
                Some(_) => match tm.wait_for("the worker's frames", Duration::from_secs(10), |s| {
                    s.contains("park_in_pool (mp_pool.py:")
                }) {
                    Ok(_) => {}
                    Err(e) => p.push(format!("worker {target}'s threads pane: {e}")),
                },
                None => p.push(format!("`]` never reached worker {target}:\n{}", tm.capture())),
            }
            // Kill another worker: listed as gone, the pool's replacement picked up and read.
            let victim = workers[1];
            // SAFETY: kill(2) on a pool worker of the fixture this test started.
            unsafe {
                libc::kill(victim, libc::SIGKILL);
            }
            match tm.wait_for("the killed worker gone and a replacement read", Duration::from_secs(20), |s| {
                let lines = process_lines(s);
                let fresh = lines.iter().any(|l| {
                    let pid: i32 =
                        l.trim_start_matches('▶').split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(0);
                    pid > 0
                        && !workers.contains(&pid)
                        && pid != fx.pid
                        && l.contains("(multiprocessing pool worker)")
                        && l.contains("tasks")
                });
                listed(s, victim, "gone") && fresh
            }) {
                Ok(_) => {}
                Err(e) => p.push(e),
            }
            p.check(tm.capture().contains(&format!("PID {target} (")), || "the view left the selected worker".into());
            tm.keys(&["q"]);
            match tm.wait_for("EXIT=", Duration::from_secs(10), |s| s.contains("EXIT=")) {
                Ok(s) => p.check(s.contains("EXIT=0"), || format!("top --subprocesses did not exit 0:\n{s}")),
                Err(e) => p.push(e),
            }
            p.finish(|| interp.describe())?;
            Ok(Outcome::Pass)
        },
    );
}
