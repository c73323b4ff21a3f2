//! `taskspy demo`: run the bundled asyncio service fixture with the machine's python3, wait until
//! it is parked, dump it, and always stop it (normal exit, error, Ctrl-C).

use super::dump::{run, DumpOptions};
use crate::error::{Error, Result};
use crate::source::pause;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn live(pid: i32) -> super::origin::Origin {
    super::origin::Origin::Live { pid, blocking: false, pause_ms: 200 }
}

const FIXTURE: &str = include_str!("../../fixtures/asyncio_service.py");

/// Kills and reaps the demo process when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run_demo(python: &str, json: bool) -> Result<super::Output> {
    pause::install_interrupt_handler();
    let dir = std::env::temp_dir().join(format!("taskspy-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::other(format!("creating {}: {e}", dir.display())))?;
    let script = dir.join("asyncio_service.py");
    std::fs::File::create(&script)
        .and_then(|mut f| f.write_all(FIXTURE.as_bytes()))
        .map_err(|e| Error::other(format!("writing {}: {e}", script.display())))?;
    let child = Command::new(python)
        .arg("-u")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::other(format!("cannot start {python}: {e} (pass --python PATH)")))?;
    let mut guard = ChildGuard(child);
    let pid = guard.0.id() as i32;
    let stdout = guard.0.stdout.take().ok_or_else(|| Error::other("no stdout from demo process"))?;
    // Wait for the fixture's READY line on a helper thread so Ctrl-C and a timeout stay responsive.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) if l.starts_with("READY") => {
                    let _ = tx.send(true);
                    return;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        let _ = tx.send(false);
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        pause::check_interrupted()?;
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(true) => break,
            Ok(false) => return Err(Error::other(format!("demo service exited before it was ready ({python})"))),
            Err(_) if Instant::now() > deadline => {
                return Err(Error::other("demo service did not become ready in 30 s"))
            }
            Err(_) => continue,
        }
    }
    // At a terminal the demo opens the live view; piped (or with --json) it prints one dump.
    use std::io::IsTerminal;
    let interactive = !json && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let out = if interactive {
        super::top::run(&crate::tui::runner::TopOptions {
            color: std::env::var_os("NO_COLOR").map(|v| v.is_empty()).unwrap_or(true),
            pid,
            rate: 100.0,
            refresh: 1.0,
            replay: None,
            subprocesses: None,
        })
    } else if json {
        run(&DumpOptions { origin: live(pid), json })
    } else {
        // Threads, then the task tree: the two views the demo is about.
        match (run(&DumpOptions { origin: live(pid), json }), super::tasks::pstree(&live(pid), false)) {
            (Ok(super::Output::Text(a)), Ok(super::Output::Text(b))) => {
                Ok(super::Output::Text(format!("{a}\nasyncio tasks by awaited-by (taskspy pstree {pid}):\n{b}")))
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(a), _) => Ok(a),
        }
    };
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
    pause::check_interrupted()?;
    out
}
