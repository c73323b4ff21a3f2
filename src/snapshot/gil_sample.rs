//! The light look `gil` and `top` take hundreds of times a second: the GIL's state, who holds it
//! and who waits, and on free-threaded builds who runs Python, who is blocked on which lock, and
//! whether the world is stopped (and by whom). No pause, no full snapshot.

use crate::model::sample::{GilSample, StwSample, ThreadSample};
use crate::model::{hex, Frame, LockRef};
use crate::runtime::thread_waits::LockTable;
use crate::runtime::threads::{InterpInfo, ThreadRecord};
use crate::runtime::PyProcess;
use crate::source::os::OsThreadState;
use crate::source::MemResult;
use std::collections::HashMap;

/// `tstate->state` of an attached thread (3.13+).
const ATTACHED: i32 = 1;

pub fn sample(py: &PyProcess, tid_by_ident: &HashMap<u64, i32>) -> MemResult<GilSample> {
    let interps = py.interpreters()?;
    let current = py.tstate_current()?;
    let mut s = GilSample::default();
    for (i, interp) in interps.iter().enumerate() {
        let main = interp.id == 0 || i == 0;
        if main {
            s.gil_held |= interp.gil_locked && interp.gil_enabled;
            s.switch_number = s.switch_number.or(interp.gil_switch_number);
        }
        let records = py.threads_of(interp, current)?;
        for rec in &records {
            let Some(tid) = rec.native_tid.or_else(|| tid_by_ident.get(&rec.ident).copied()) else { continue };
            let os = py.os.thread_state(tid);
            let waiting = !rec.holds_gil
                && interp.gil_enabled
                && (rec.gil_requested || interp.is_gil_futex(os.futex_addr, py.off.gil_size));
            let stack = if rec.holds_gil { py.walk_frames(rec.top_frame).ok().map(|s| s.frames) } else { None };
            let mut ts =
                ThreadSample { tid, holds_gil: rec.holds_gil, waiting_gil: waiting, stack, ..Default::default() };
            if py.free_threaded {
                let attached = rec.py_state == Some(ATTACHED);
                ts.running_python = attached && os.on_cpu() != Some(false);
                if !attached && !waiting && os.futex_addr.is_some() {
                    ts.lock_wait = lock_wait(py, rec, &os);
                }
            }
            s.threads.push(ts);
        }
        if py.free_threaded && main {
            s.stw = stop_the_world(py, interp, &records, tid_by_ident)?;
        }
    }
    Ok(s)
}

/// A pause of this interpreter or of the whole runtime, who asked for it and whether the
/// collector runs.
fn stop_the_world(
    py: &PyProcess,
    interp: &InterpInfo,
    records: &[ThreadRecord],
    tid_by_ident: &HashMap<u64, i32>,
) -> MemResult<Option<StwSample>> {
    let w = match py.stop_the_world(Some(interp.addr))?.filter(|w| w.stopped) {
        Some(w) => w,
        None => match py.stop_the_world(None)?.filter(|w| w.stopped) {
            Some(w) => w,
            None => return Ok(None),
        },
    };
    let req = records.iter().find(|r| r.tstate == w.requester);
    let frame: Option<Frame> =
        req.and_then(|r| py.walk_frames_upto(r.top_frame, 1).ok()).and_then(|st| st.frames.into_iter().next());
    Ok(Some(StwSample {
        requester: req.and_then(|r| r.native_tid.or_else(|| tid_by_ident.get(&r.ident).copied())),
        gc: gc_collecting(py, interp.addr),
        frame,
    }))
}

/// Whether the interpreter's garbage collector is running (`interp->gc.collecting`, 3.13+).
fn gc_collecting(py: &PyProcess, interp: u64) -> bool {
    let Some(d) = &py.debug_offsets else { return false };
    let (Some(gc), Some(collecting)) = (d.get("interpreter_state.gc"), d.get("gc.collecting")) else { return false };
    py.mem().read_i32(interp.wrapping_add(gc).wrapping_add(collecting)).map(|v| v != 0).unwrap_or(false)
}

/// The lock a detached thread blocked in futex(2) is acquiring, found on its innermost frames.
/// Waiting on a `Condition`/`Event` (the waiter lock in `threading`) is waiting, not contention.
fn lock_wait(py: &PyProcess, rec: &ThreadRecord, os: &OsThreadState) -> Option<(LockRef, Option<Frame>)> {
    let stack = py.walk_frames_upto(rec.top_frame, 2).ok()?;
    let inner = stack.frames.first()?;
    let func = inner.function.rsplit('.').next().unwrap_or("");
    if inner.file.ends_with("threading.py") && func == "wait" {
        return None;
    }
    let mut locks = LockTable::new();
    let facts = py.thread_lock_facts(rec, &stack, os, &mut locks);
    let l = facts.waits_for?;
    let info = locks.get(&l)?;
    Some((
        LockRef { kind: info.kind.label().to_string(), address: hex(l), name: info.name.clone() },
        Some(inner.clone()),
    ))
}
