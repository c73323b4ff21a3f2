//! Where a command's snapshots come from — a live PID (optionally paused), a core file, or saved
//! snapshots — so every view runs the same way on each. Findings are computed here, once, purely.

use crate::analysis;
use crate::error::Result;
use crate::model::Snapshot;
use crate::runtime::PyProcess;
use crate::snapshot::{self, CaptureOptions};
use crate::source;
use crate::source::core::CoreOptions;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Origin {
    Live { pid: i32, blocking: bool, pause_ms: u64 },
    Core(CoreOptions),
    Saved(String),
}

/// A reader over a live process or a core (saved snapshots need none).
pub fn open_reader(origin: &Origin) -> Result<Option<PyProcess>> {
    let phase = crate::timing::Phase::start("attach");
    let target = match origin {
        Origin::Live { pid, .. } => source::attach(*pid)?,
        Origin::Core(c) => source::core::open(c)?,
        Origin::Saved(_) => return Ok(None),
    };
    drop(phase);
    let _phase = crate::timing::Phase::start("open");
    Ok(Some(PyProcess::open(target)?))
}

/// One capture from an open reader, paused if the origin asks for it.
pub fn capture(py: &PyProcess, origin: &Origin, mut opts: CaptureOptions) -> Result<Snapshot> {
    let _phase = crate::timing::Phase::start("capture");
    let snap = match origin {
        Origin::Live { pid, blocking: true, pause_ms } => {
            snapshot::paused::capture_paused(py, *pid, Duration::from_millis(*pause_ms), opts)?
        }
        Origin::Core(c) => {
            opts.core = Some(c.core.display().to_string());
            snapshot::capture_with(py, &opts)?
        }
        _ => snapshot::capture_with(py, &opts)?,
    };
    Ok(snap)
}

/// Findings of one snapshot: computed from its facts when it has them, else the ones it carries
/// (snapshots saved before lock facts were recorded).
pub fn with_findings(mut s: Snapshot) -> Snapshot {
    if s.has_lock_facts() {
        let _phase = crate::timing::Phase::start("findings");
        s.findings = analysis::deadlock::findings(&s);
    }
    s
}

/// The snapshot(s) of an origin: one capture of a process or core, or every saved one.
pub fn snapshots(origin: &Origin, opts: CaptureOptions) -> Result<Vec<Snapshot>> {
    let snaps = match open_reader(origin)? {
        Some(py) => vec![capture(&py, origin, opts)?],
        None => match origin {
            Origin::Saved(path) => snapshot::input::load(path)?,
            _ => vec![],
        },
    };
    Ok(snaps.into_iter().map(with_findings).map(warn_partial).collect())
}

/// The last snapshot of an origin (a saved series: its latest, with each task's time at its
/// await point from the series).
pub fn snapshot(origin: &Origin, opts: CaptureOptions) -> Result<Snapshot> {
    let v = snapshots(origin, opts)?;
    // One sample says nothing about progress (every `waiting_s` stays unset): skip the work.
    if v.len() == 1 {
        return v.into_iter().next().ok_or_else(|| crate::error::Error::other("no snapshot"));
    }
    let mut progress = crate::analysis::progress::Progress::default();
    let t0 = v.first().and_then(|s| crate::model::time::parse_rfc3339(&s.captured_at)).unwrap_or(0.0);
    for (i, s) in v.iter().enumerate() {
        progress.observe(s, crate::model::time::parse_rfc3339(&s.captured_at).map(|t| t - t0).unwrap_or(i as f64));
    }
    let mut last = v.into_iter().last().ok_or_else(|| crate::error::Error::other("no snapshot"))?;
    progress.annotate(&mut last);
    Ok(last)
}

/// One line on stderr when part of the record could not be read or the read was cut; the exit
/// status stays 0 (the entries themselves carry the errors).
pub fn warn_partial(s: Snapshot) -> Snapshot {
    if let Some(c) = &s.capture {
        if c.unreadable > 0 {
            eprintln!(
                "taskspy: warning: {} object(s) of PID {} could not be read (marked with an error in the output)",
                c.unreadable, s.pid
            );
        }
        if let Some(cut) = &c.cut {
            eprintln!("taskspy: warning: {cut}");
        }
    }
    s
}
