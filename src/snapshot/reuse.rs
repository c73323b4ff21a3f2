//! Repeated samples by one reader (`watch`, `top`, `metrics`, `deadlocks --duration`): an
//! interpreter's asyncio record is reused while every byte it was built from is unchanged.
//!
//! The record is a function of the bytes its walk read and of the interpreter's threads. The
//! second sample records which pages the walk touched (with a hash of each); every later sample
//! first reads just those pages again and, if none changed, takes the kept record instead of
//! walking. The first difference ends the check and the walk runs as usual (recording anew).

use crate::asyncio::assemble::AsyncioRecord;
use crate::asyncio::readers::SideJob;
use crate::asyncio::Asyncio;
use crate::runtime::threads::{InterpInfo, ThreadRecord};
use crate::runtime::PyProcess;
use crate::source::footprint::Footprint;
use crate::source::MemResult;

/// Everything besides memory that the asyncio record depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    interp: u64,
    id: i64,
    /// Per thread: thread state, ident, `tstate->dict`, native thread id.
    threads: Vec<(u64, u64, u64, Option<i32>)>,
}

impl Key {
    fn of(interp: &InterpInfo, records: &[(ThreadRecord, Option<i32>)]) -> Key {
        Key {
            interp: interp.addr,
            id: interp.id,
            threads: records.iter().map(|(r, tid)| (r.tstate, r.ident, r.dict, *tid)).collect(),
        }
    }
}

enum Kept {
    /// Read once: the next sample records its footprint (one-shot commands never pay for it;
    /// a sample known to be followed by more records it at once).
    Seen,
    Record {
        footprint: Footprint,
        record: AsyncioRecord,
    },
}

/// Kept per interpreter (the latest key of each).
type State = Vec<(Key, Kept)>;

fn take(py: &PyProcess, key: &Key) -> Option<Kept> {
    let mut slot = crate::sync::lock(&py.kept);
    let state = slot.as_mut()?.downcast_mut::<State>()?;
    let i = state.iter().position(|(k, _)| k == key)?;
    Some(state.swap_remove(i).1)
}

fn put(py: &PyProcess, key: Key, kept: Kept) {
    let mut slot = crate::sync::lock(&py.kept);
    if !slot.as_ref().is_some_and(|s| s.is::<State>()) {
        *slot = Some(Box::new(State::new()));
    }
    if let Some(state) = slot.as_mut().and_then(|s| s.downcast_mut::<State>()) {
        state.retain(|(k, _)| k.interp != key.interp);
        state.push((key, kept));
    }
}

/// The asyncio record of `interp`: kept from an earlier sample when nothing it was built from
/// changed, else read (`reusable` false: always read, nothing kept — a paused copy or a core).
/// `repeated`: more samples follow, so a first read records its footprint right away (on one
/// thread: a footprint describes one walk) and the second sample can already reuse it.
/// `side`: work a helper reader may take meanwhile (the caller runs it if none did).
#[allow(clippy::too_many_arguments)] // each is one fact of the read; none belong together
pub fn collect(
    py: &PyProcess,
    aio: &Asyncio,
    interp: &InterpInfo,
    records: &[(ThreadRecord, Option<i32>)],
    tolerate: bool,
    reusable: bool,
    repeated: bool,
    side: &SideJob<'_>,
) -> MemResult<AsyncioRecord> {
    if !reusable {
        return aio.collect(interp, records, tolerate, side);
    }
    let key = Key::of(interp, records);
    match take(py, &key) {
        None if !repeated => {
            let r = aio.collect(interp, records, tolerate, side)?;
            put(py, key, Kept::Seen);
            Ok(r)
        }
        Some(Kept::Record { footprint, record }) if check(py, &footprint)? => {
            let out = {
                let _phase = crate::timing::Phase::start("tasks: kept record copied");
                record.clone()
            };
            put(py, key, Kept::Record { footprint, record });
            Ok(out)
        }
        // Seen before (or repeated samples to come): read, recording what the next sample checks.
        None | Some(_) => {
            py.mem.start_recording();
            let r = aio.collect(interp, records, tolerate, side);
            let footprint = py.mem.finish_recording();
            let r = r?;
            match footprint {
                Some(footprint) => put(py, key, Kept::Record { footprint, record: r.clone() }),
                None => put(py, key, Kept::Seen),
            }
            Ok(r)
        }
    }
}

/// Whether every page the kept record was built from still holds the same bytes.
fn check(py: &PyProcess, footprint: &Footprint) -> MemResult<bool> {
    let _phase = crate::timing::Phase::start("tasks: unchanged check");
    let same = py.mem.still_holds(footprint)?;
    if crate::timing::enabled() {
        eprintln!("timing: {} pages checked: {}", footprint.pages(), if same { "unchanged" } else { "changed" });
    }
    Ok(same)
}
