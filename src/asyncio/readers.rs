//! Reading many tasks on several threads: the registries' entries split into consecutive parts,
//! each part read by its own reader (own page cache and caches), the results joined in order.

use super::assemble::{TaskLinks, TaskReads};
use super::Asyncio;
use crate::model::TaskSnap;
use crate::runtime::PyProcess;
use crate::source::{MemError, MemResult};
use std::mem::MaybeUninit;

/// Most threads reading tasks at once.
const MAX_READERS: usize = 4;
/// Fewest tasks worth a thread of their own (a helper starts with a cold page cache and cold
/// code caches: below this its start costs more than its share of the walk saves).
const TASKS_PER_READER: usize = 2000;

/// How many threads should read `n` tasks: one per CPU this process may use (at most
/// MAX_READERS), each with at least TASKS_PER_READER tasks. `TASKSPY_READERS=N` sets the CPUs
/// to assume (1: everything on the calling thread).
pub fn readers_for(n: usize, cpus: Option<usize>) -> usize {
    let cpus = cpus.unwrap_or_else(|| std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1));
    cpus.clamp(1, MAX_READERS).min(n / TASKS_PER_READER).max(1)
}

/// `TASKSPY_READERS`, if set to a number.
fn readers_setting() -> Option<usize> {
    std::env::var("TASKSPY_READERS").ok().and_then(|v| v.trim().parse().ok())
}

/// Where a part's reads go, task by task.
pub trait TaskSink {
    /// A pending task's record and links.
    fn task(&mut self, record: TaskSnap, links: TaskLinks);
    /// An entry that could not be read.
    fn broken(&mut self, addr: u64, e: MemError);
}

impl TaskSink for TaskReads {
    fn task(&mut self, record: TaskSnap, links: TaskLinks) {
        self.0.push(record);
        self.1.push(links);
    }
    fn broken(&mut self, addr: u64, e: MemError) {
        self.2.push((addr, e));
    }
}

/// A part's room in the result: the records and links of a part's N entries go straight into
/// reserved, not yet initialised positions of the result's vectors (at most one per entry), so
/// joining the parts moves nothing unless some entry gave no record. Written entries are dropped
/// with the room unless `finish` hands them over.
struct Room<'a> {
    records: &'a mut [MaybeUninit<TaskSnap>],
    links: &'a mut [MaybeUninit<TaskLinks>],
    /// Positions written (the first `written` of both slices).
    written: usize,
    /// Records that found no room (cannot happen: one record per entry; kept, not lost).
    spill: TaskReads,
}

impl<'a> Room<'a> {
    fn new(records: &'a mut [MaybeUninit<TaskSnap>], links: &'a mut [MaybeUninit<TaskLinks>]) -> Room<'a> {
        Room { records, links, written: 0, spill: Default::default() }
    }

    /// How many positions hold a record and its links, and what did not fit; the caller now
    /// owns those positions.
    fn finish(mut self) -> (usize, TaskReads) {
        let n = std::mem::take(&mut self.written);
        (n, std::mem::take(&mut self.spill))
    }
}

impl TaskSink for Room<'_> {
    fn task(&mut self, record: TaskSnap, links: TaskLinks) {
        let i = self.written;
        if i < self.records.len() && i < self.links.len() {
            self.records[i].write(record);
            self.links[i].write(links);
            self.written += 1;
        } else {
            self.spill.task(record, links);
        }
    }
    fn broken(&mut self, addr: u64, e: MemError) {
        self.spill.broken(addr, e);
    }
}

impl Drop for Room<'_> {
    fn drop(&mut self) {
        // Not finished (its reader panicked): drop what was written, nothing else owns it.
        for i in 0..self.written {
            // SAFETY: positions below `written` were initialised by `task` and are dropped once.
            unsafe {
                self.records[i].assume_init_drop();
                self.links[i].assume_init_drop();
            }
        }
    }
}

/// What one part's reader returns: how it ended, the positions it wrote, what did not fit.
type PartResult = (MemResult<()>, usize, TaskReads);

impl Asyncio<'_> {
    /// Read the tasks at `addrs` (the registries' entries): their records and links in registry
    /// order, and the entries that could not be read. With many tasks and spare CPUs, consecutive
    /// parts go to helper threads, each with a sibling reader (`PyProcess::sibling`: same target,
    /// own page cache, no lock shared per read); tasks are independent objects, so no part needs
    /// another's walk, and parts joined in order give what one walk gives. The first part's error
    /// (in registry order) wins, as it would in one walk. Reads that must stay on one page cache
    /// (a paused copy, a recorded footprint) stay on this thread.
    pub(super) fn read_tasks(&self, addrs: &[u64], tolerate: bool, interp_id: i64) -> MemResult<TaskReads> {
        let mut out: TaskReads = Default::default();
        let readers = readers_for(addrs.len(), readers_setting());
        let helpers: Vec<PyProcess> = (1..readers).map_while(|_| self.py.sibling()).collect();
        if helpers.is_empty() {
            out.0.reserve(addrs.len());
            out.1.reserve(addrs.len());
            self.read_part(addrs, tolerate, interp_id, &mut out)?;
            return Ok(out);
        }
        let part_len = addrs.len().div_ceil(helpers.len() + 1);
        let parts: Vec<&[u64]> = addrs.chunks(part_len).collect();
        out.0.reserve(addrs.len());
        out.1.reserve(addrs.len());
        let results: Vec<PartResult> = {
            // Part i writes positions i * part_len onwards of the reserved room.
            let mut record_room = out.0.spare_capacity_mut()[..addrs.len()].chunks_mut(part_len);
            let mut link_room = out.1.spare_capacity_mut()[..addrs.len()].chunks_mut(part_len);
            let mut rooms: Vec<Room> = parts
                .iter()
                .map(|_| Room::new(record_room.next().unwrap_or_default(), link_room.next().unwrap_or_default()))
                .collect();
            // This thread reads the last part: the registry walk just went through those tasks, so
            // the pages holding them are the ones its page cache still has.
            // (One room per part; an empty one would only send its records to the spill.)
            let mine = rooms.pop().unwrap_or_else(|| Room::new(&mut [], &mut []));
            let mine_part = parts.last().copied().unwrap_or_default();
            std::thread::scope(|s| {
                let running: Vec<_> = helpers
                    .iter()
                    .zip(&parts[..parts.len() - 1])
                    .zip(rooms)
                    .map(|((py, part), mut room)| {
                        let aio = self.helper(py);
                        s.spawn(move || {
                            let _phase = crate::timing::Phase::start("tasks: read (helper's part)");
                            let r = aio.read_part(part, tolerate, interp_id, &mut room);
                            py.end_snapshot();
                            let (n, spill) = room.finish();
                            (r, n, spill)
                        })
                    })
                    .collect();
                let mut mine = mine;
                let last = {
                    let _phase = crate::timing::Phase::start("tasks: read (last part)");
                    self.read_part(mine_part, tolerate, interp_id, &mut mine)
                };
                let (n, spill) = mine.finish();
                // In part order: the helpers' parts, then this one. A reader that panicked dropped
                // what it wrote (`Room`'s drop): nothing to keep.
                let mut results: Vec<PartResult> = running
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            (Err(MemError::Other("a task reader thread failed".into())), 0, Default::default())
                        })
                    })
                    .collect();
                results.push((last, n, spill));
                results
            })
        };
        // Close the gaps between the parts' written positions, then own them (also when a part
        // failed: what was written is dropped with `out`, not leaked).
        let mut len = 0usize;
        for (i, (_, n, _)) in results.iter().enumerate() {
            let start = i * part_len;
            if start != len {
                // SAFETY: positions start..start+n of both vectors' reserved room were initialised
                // by part i; len <= start, so the destination is reserved room too, and ptr::copy
                // allows overlap. The moved-from positions are not read again (beyond the new len).
                unsafe {
                    std::ptr::copy(out.0.as_ptr().add(start), out.0.as_mut_ptr().add(len), *n);
                    std::ptr::copy(out.1.as_ptr().add(start), out.1.as_mut_ptr().add(len), *n);
                }
            }
            len += n;
        }
        // SAFETY: the first `len` positions of both vectors are now initialised (above).
        unsafe {
            out.0.set_len(len);
            out.1.set_len(len);
        }
        let mut first_error = None;
        for (r, _, spill) in results {
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
            out.0.extend(spill.0);
            out.1.extend(spill.1);
            out.2.extend(spill.2);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_follow_cpus_and_task_count() {
        assert_eq!(readers_for(100_000, Some(1)), 1);
        assert_eq!(readers_for(100_000, Some(2)), 2);
        assert_eq!(readers_for(100_000, Some(64)), MAX_READERS);
        assert_eq!(readers_for(TASKS_PER_READER * 2 - 1, Some(8)), 1);
        assert_eq!(readers_for(TASKS_PER_READER * 3, Some(8)), 3);
        assert_eq!(readers_for(0, Some(8)), 1);
        assert_eq!(readers_for(10, Some(0)), 1);
    }
}
