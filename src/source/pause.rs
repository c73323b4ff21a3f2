//! Pausing a live target for a consistent read (`--blocking`) and Ctrl-C handling. The pause is a
//! guard dropped by the thread that took it: on success, error, Ctrl-C, and at the pause deadline.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only set a flag: reads check it and fail, so every walk ends and every guard runs.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Route SIGINT/SIGTERM to a flag instead of killing us, so guards (pause, demo child) run.
pub fn install_interrupt_handler() {
    #[cfg(unix)]
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as usize);
        libc::signal(libc::SIGTERM, on_sigint as *const () as usize);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Holds every thread of the target stopped (ptrace) while alive.
pub struct PauseGuard {
    _lock: remoteprocess::Lock,
}

pub fn pause(pid: i32) -> Result<PauseGuard> {
    let process = remoteprocess::Process::new(pid).map_err(|e| Error::Other(format!("opening PID {pid}: {e}")))?;
    match process.lock() {
        Ok(lock) => Ok(PauseGuard { _lock: lock }),
        Err(e) => {
            let text = e.to_string();
            if text.contains("EPERM") || text.contains("ermission") {
                Err(Error::PermissionDenied { pid, detail: format!("ptrace attach failed: {text}") })
            } else if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                Err(Error::TargetExited(pid))
            } else {
                Err(Error::Other(format!(
                    "cannot pause PID {pid} ({text}); is a debugger attached to it? Run without --blocking"
                )))
            }
        }
    }
}

/// How a paused read went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PausedRead {
    /// The target was already stopped (SIGSTOP, a debugger): not paused by us, left as found.
    pub already_stopped: bool,
    /// The pause deadline passed: the target was resumed before the read ended.
    pub resumed_at_deadline: bool,
    /// How long the target was held stopped by us.
    pub paused_for: Duration,
}

/// Run `read` with the target stopped: already stopped targets are read as they are; otherwise
/// every thread is paused, and resumed when `read` returns, on Ctrl-C, or at `deadline`, whichever
/// comes first (a read still going at the deadline goes on with the target running, and says so).
/// The guard is taken and dropped on this thread (ptrace requires it); `read` runs on a helper.
pub fn with_pause<R: Send>(pid: i32, deadline: Duration, read: impl FnOnce() -> R + Send) -> Result<(R, PausedRead)> {
    install_interrupt_handler();
    if super::os::all_stopped(pid) {
        let r = read();
        return Ok((r, PausedRead { already_stopped: true, ..Default::default() }));
    }
    let guard = pause(pid)?;
    let start = Instant::now();
    let mut info = PausedRead::default();
    let r = std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let h = scope.spawn(move || {
            let r = read();
            let _ = tx.send(());
            r
        });
        let mut guard = Some(guard);
        loop {
            // Wake at the deadline itself (not up to a tick after it), and every 5 ms for Ctrl-C.
            let tick = if guard.is_some() { deadline.saturating_sub(start.elapsed()) } else { Duration::MAX };
            match rx.recv_timeout(tick.clamp(Duration::from_micros(200), Duration::from_millis(5))) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if guard.is_some() && (start.elapsed() >= deadline || interrupted()) {
                        drop(guard.take()); // resume first, whatever the read is doing
                        info.paused_for = start.elapsed();
                        info.resumed_at_deadline = !interrupted();
                    }
                }
            }
        }
        if guard.is_some() {
            drop(guard.take());
            info.paused_for = start.elapsed();
        }
        h.join()
    });
    match r {
        Ok(r) => Ok((r, info)),
        Err(_) => Err(Error::other("the read failed unexpectedly while the target was paused (it has been resumed)")),
    }
}
