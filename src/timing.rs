//! timing: optional phase timings on stderr (`TASKSPY_TIMING=1`), for profiling and the benchmarks.
//! Off by default; a phase costs one `Instant::now()` and one cached flag check.

use std::sync::OnceLock;
use std::time::Instant;

pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("TASKSPY_TIMING").is_some())
}

/// Prints `timing: NAME DURATION` when dropped (if timing is on).
pub struct Phase {
    name: &'static str,
    start: Instant,
}

impl Phase {
    pub fn start(name: &'static str) -> Phase {
        Phase { name, start: Instant::now() }
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if enabled() {
            eprintln!("timing: {} {:?}", self.name, self.start.elapsed());
        }
    }
}
