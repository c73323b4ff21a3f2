//! `taskspy dump`: attach, capture one snapshot (optionally with the target paused), print it.
//! Also the shared snapshot helpers other commands start from.

use super::Output;
use crate::attach::{self, pause};
use crate::error::Result;
use crate::render;
use crate::runtime::PyProcess;
use crate::snapshot::{self, Snapshot};

pub struct DumpOptions {
    pub pid: i32,
    pub json: bool,
    pub blocking: bool,
}

/// Attach and capture; with `blocking` the target is paused only for the capture itself.
pub fn take_snapshot(pid: i32, blocking: bool) -> Result<Snapshot> {
    take_snapshot_with(pid, blocking).map(|(_, s)| s)
}

/// As `take_snapshot`, also returning the reader for follow-up analysis.
pub fn take_snapshot_with(pid: i32, blocking: bool) -> Result<(PyProcess, Snapshot)> {
    let t0 = std::time::Instant::now();
    let target = attach::attach(pid)?;
    let t1 = std::time::Instant::now();
    let py = PyProcess::open(target)?;
    if std::env::var_os("TASKSPY_TIMING").is_some() {
        eprintln!("timing: attach {:?}, open {:?}", t1 - t0, t1.elapsed());
    }
    if blocking {
        pause::install_interrupt_handler();
        let guard = pause::pause(pid)?;
        let snap = snapshot::capture(&py);
        drop(guard); // resume before anything else, including error reporting
        pause::check_interrupted()?;
        Ok((py, snap?))
    } else {
        let t = std::time::Instant::now();
        let s = snapshot::capture(&py)?;
        if std::env::var_os("TASKSPY_TIMING").is_some() {
            eprintln!("timing: capture {:?}", t.elapsed());
        }
        Ok((py, s))
    }
}

pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

pub fn run(opts: &DumpOptions) -> Result<Output> {
    let (py, mut snap) = take_snapshot_with(opts.pid, opts.blocking)?;
    if opts.json {
        // The snapshot format carries deadlock findings too (one look, no sampling).
        py.begin_snapshot();
        if let Ok(f) = super::deadlocks::analyze(&py, &snap) {
            snap.findings = f;
        }
        py.end_snapshot();
    }
    Ok(if opts.json {
        Output::Snapshot(Box::new(snap))
    } else {
        Output::Text(render::text::dump_text(&snap, &cmdline(opts.pid)))
    })
}
