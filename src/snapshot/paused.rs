//! `--blocking`: a consistent read of a live target. Its writable memory and thread facts are
//! copied while it is stopped and decoded after it is resumed; a footprint too big to copy is
//! walked while stopped instead, as before.

use super::capture::{capture_with, CaptureOptions};
use crate::error::Result;
use crate::model::Snapshot;
use crate::runtime::PyProcess;
use crate::source::image::{self, copy_limit, Image, Plan};
use crate::source::os::FrozenOs;
use crate::source::pause::{self, PausedRead};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The copy's arena, kept between samples (`watch --blocking`): its pages are faulted in once.
static ARENA: Mutex<Option<memmap2::MmapMut>> = Mutex::new(None);

/// Headroom over the measured footprint when the arena is sized before the pause (the target
/// may touch new pages between the measurement and the pause).
fn with_headroom(bytes: u64) -> u64 {
    bytes + bytes / 8 + (4 << 20)
}

/// What happened inside the pause.
enum InPause {
    Copied(Image, FrozenOs),
    Walked(Result<Snapshot>),
}

/// Read `py` (PID `pid`) with the target stopped for as short a time as possible; resumed at
/// `deadline` at the latest. The snapshot's `capture` says how the pause went.
pub fn capture_paused(py: &PyProcess, pid: i32, deadline: Duration, mut opts: CaptureOptions) -> Result<Snapshot> {
    opts.paused = true;
    // Ctrl-C from here on ends the command cleanly (exit 130), also while the arena is prepared.
    pause::install_interrupt_handler();
    // Size and fault in the arena while the target still runs.
    let arena = {
        let _phase = crate::timing::Phase::start("arena prepared");
        prepare_arena(pid)
    };
    pause::check_interrupted()?;
    let (inside, info) = pause::with_pause(pid, deadline, || {
        let _phase = crate::timing::Phase::start("paused");
        match arena.and_then(|a| copy_now(py, pid, a)) {
            Some((img, os)) => InPause::Copied(img, os),
            None => InPause::Walked(capture_with(py, &opts)),
        }
    })?;
    pause::check_interrupted()?;
    let mut snap = match inside {
        InPause::Walked(r) => r?,
        InPause::Copied(img, os) => {
            let bytes = img.bytes;
            opts.os = Some(Arc::new(os));
            py.mem.set_image(Some(img));
            let r = capture_with(py, &opts);
            if let Some(img) = py.mem.set_image(None) {
                *crate::sync::lock(&ARENA) = Some(img.into_arena());
            }
            let mut s = r?;
            if let Some(c) = s.capture.as_mut() {
                c.copied_bytes = Some(bytes);
            }
            s
        }
    };
    record_pause(&mut snap, &info, deadline);
    Ok(snap)
}

/// How the pause went, in the snapshot's `capture`.
fn record_pause(snap: &mut Snapshot, info: &PausedRead, deadline: Duration) {
    let Some(c) = snap.capture.as_mut() else { return };
    c.already_stopped = info.already_stopped;
    if !info.already_stopped {
        c.paused_ms = Some((info.paused_for.as_secs_f64() * 1e5).round() / 100.0);
    }
    if info.resumed_at_deadline {
        c.cut = Some(format!(
            "the target was resumed at the {} ms pause deadline; the rest was read while it ran",
            deadline.as_millis()
        ));
    }
}

/// An arena big enough for the target's writable footprint as it is now; `None` when the
/// footprint is over the copy limit (or cannot be measured): then the pause walks instead.
fn prepare_arena(pid: i32) -> Option<memmap2::MmapMut> {
    if copy_limit() == 0 {
        return None;
    }
    let maps = crate::source::maps::read_maps(pid).ok()?;
    let Some(plan) = Plan::of(pid, &maps, copy_limit()) else {
        if std::env::var_os("TASKSPY_DEBUG").is_some() {
            eprintln!(
                "debug: --blocking: writable memory over the copy limit ({} MiB): walking while paused",
                copy_limit() >> 20
            );
        }
        return None;
    };
    let want = with_headroom(plan.bytes);
    let kept = crate::sync::lock(&ARENA).take();
    match kept {
        Some(a) if a.len() as u64 >= plan.bytes && (a.len() as u64) <= 2 * want => Some(a),
        _ => image::arena(want),
    }
}

/// In the pause: the thread facts and a copy of the writable memory as they are now.
fn copy_now(py: &PyProcess, pid: i32, arena: memmap2::MmapMut) -> Option<(Image, FrozenOs)> {
    let os = FrozenOs::capture(py.os.clone());
    let maps = crate::source::maps::read_maps(pid).ok()?;
    let plan = Plan::of(pid, &maps, copy_limit())?;
    let img = Image::copy(pid, plan, Some(arena))?;
    Some((img, os))
}
