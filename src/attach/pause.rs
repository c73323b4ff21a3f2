//! Pausing the target (only with `--blocking`) and Ctrl-C handling. A pause is a guard: dropping
//! it resumes every thread, on success, on error, on panic unwind and after Ctrl-C.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    // Only set a flag: the code holding a pause guard decides when it is safe to stop.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Route SIGINT/SIGTERM to a flag instead of killing us, so guards (pause, demo child) run.
pub fn install_interrupt_handler() {
    #[cfg(unix)]
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
                Err(Error::Other(format!("pausing PID {pid}: {text}")))
            }
        }
    }
}
