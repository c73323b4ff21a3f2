//! Reading many tasks on several threads: the registries' entries split into consecutive parts,
//! each part read by its own reader (own page cache and caches), the results joined in order.

use super::assemble::{TaskLinks, TaskReads};
use super::registry::FoundTasks;
use super::Asyncio;
use crate::model::TaskSnap;
use crate::runtime::threads::InterpInfo;
use crate::runtime::PyProcess;
use crate::source::{MemError, MemResult};
use std::mem::MaybeUninit;
use std::sync::mpsc;

/// Most threads reading tasks at once.
const MAX_READERS: usize = 4;
/// Fewest tasks worth a thread of their own (a helper starts with a cold page cache and cold
/// code caches: below this its start costs more than its share of the walk saves).
const TASKS_PER_READER: usize = 2000;

/// How many threads should read `n` tasks with `cpus` CPUs: one per CPU (at most MAX_READERS),
/// each with at least TASKS_PER_READER tasks.
pub fn readers_for(n: usize, cpus: usize) -> usize {
    cpus.clamp(1, MAX_READERS).min(n / TASKS_PER_READER).max(1)
}

/// The CPUs this process may use (its affinity mask and cgroup quota), or `TASKSPY_READERS=N`
/// (1: everything on the calling thread).
fn cpus() -> usize {
    std::env::var("TASKSPY_READERS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1))
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

/// A part handed to a waiting helper: the entries to read and where their records go.
struct Job<'env> {
    addrs: Vec<u64>,
    room: Room<'env>,
}

/// Helper threads started before the registries are walked, each waiting for its part. A thread
/// started when the work is ready waited 1-4 ms for a CPU here (the scheduler leaves a new thread
/// beside its parent until the next balancing); one that is already waiting is woken on an idle
/// CPU at once. Dropping a job's sender ends its helper with nothing read.
struct Crew<'scope, 'env> {
    jobs: Vec<mpsc::Sender<Job<'env>>>,
    running: Vec<std::thread::ScopedJoinHandle<'scope, PartResult>>,
}

impl<'scope, 'env> Crew<'scope, 'env> {
    /// One waiting helper per walker (each over its own sibling reader).
    fn start(
        s: &'scope std::thread::Scope<'scope, 'env>,
        walkers: Vec<Asyncio<'env>>,
        tolerate: bool,
        interp_id: i64,
    ) -> Crew<'scope, 'env> {
        let mut crew = Crew { jobs: Vec::new(), running: Vec::new() };
        for aio in walkers {
            let (tx, rx) = mpsc::channel::<Job<'env>>();
            crew.jobs.push(tx);
            crew.running.push(s.spawn(move || {
                let r = match rx.recv() {
                    Ok(mut job) => {
                        let _phase = crate::timing::Phase::start("tasks: read (helper's part)");
                        let r = aio.read_part(&job.addrs, tolerate, interp_id, &mut job.room);
                        let (n, spill) = job.room.finish();
                        (r, n, spill)
                    }
                    Err(_) => (Ok(()), 0, Default::default()),
                };
                aio.py.end_snapshot();
                r
            }));
        }
        crew
    }

    /// Every helper's result in part order (an idle helper's is empty). A reader that panicked
    /// dropped what it wrote (`Room`'s drop): nothing to keep.
    fn finish(self) -> Vec<PartResult> {
        drop(self.jobs);
        self.running
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    (Err(MemError::Other("a task reader thread failed".into())), 0, Default::default())
                })
            })
            .collect()
    }
}

impl Asyncio<'_> {
    /// Find the tasks of `interp` in its registries and read them: their records and links in
    /// registry order, and the entries that could not be read.
    ///
    /// With many tasks and spare CPUs, consecutive parts go to helper threads, each with a
    /// sibling reader (`PyProcess::sibling`: same target, own page cache, no lock shared per
    /// read); tasks are independent objects, so no part needs another's walk, and parts joined in
    /// order give what one walk gives. The first error in registry order wins, as in one walk.
    /// A walk that records its footprint (repeated samples) stays on this thread; `--blocking`'s
    /// copy is shared with the helpers.
    pub(super) fn find_and_read_tasks(
        &self,
        interp: &InterpInfo,
        tstates: &[u64],
        tolerate: bool,
    ) -> MemResult<(FoundTasks, TaskReads)> {
        let cpus = cpus();
        // Helpers are started before the walk (see `Crew`), as many as the most tasks would use.
        let siblings: Vec<PyProcess> = (1..readers_for(usize::MAX, cpus)).map_while(|_| self.py.sibling()).collect();
        let mut out: TaskReads = Default::default();
        let (found, parts) = std::thread::scope(|s| -> MemResult<_> {
            let walkers = siblings.iter().map(|py| self.helper(py)).collect();
            let crew = Crew::start(s, walkers, tolerate, interp.id);
            let found = {
                let _phase = crate::timing::Phase::start("tasks: registries");
                self.task_addresses(interp, tstates, tolerate)?
            };
            let _phase = crate::timing::Phase::start("tasks: read");
            let parts = self.read_tasks(&found.tasks, tolerate, interp.id, cpus, crew, &mut out)?;
            Ok((found, parts))
        })?;
        if let Some((results, part_len)) = parts {
            join_parts(results, part_len, &mut out)?;
        }
        Ok((found, out))
    }

    /// Read the tasks at `addrs` into `out` (empty), sharing the work with `crew`: `None` when
    /// this thread read them all, else each part's result and the part length, for `join_parts`
    /// once the helpers are done with `out`'s room.
    fn read_tasks<'env>(
        &self,
        addrs: &[u64],
        tolerate: bool,
        interp_id: i64,
        cpus: usize,
        crew: Crew<'_, 'env>,
        out: &'env mut TaskReads,
    ) -> MemResult<Option<(Vec<PartResult>, usize)>> {
        out.0.reserve(addrs.len());
        out.1.reserve(addrs.len());
        let readers = readers_for(addrs.len(), cpus).min(crew.jobs.len() + 1);
        if readers <= 1 {
            drop(crew.finish());
            return self.read_part(addrs, tolerate, interp_id, out).map(|_| None);
        }
        // Part i writes positions i * part_len onwards of the reserved room; the helpers take the
        // first parts, this thread the last: the registry walk just went through those tasks, so
        // the pages holding them are the ones its page cache still has.
        let part_len = addrs.len().div_ceil(readers);
        let parts: Vec<&[u64]> = addrs.chunks(part_len).collect();
        let (records, links, _) = out;
        let mut record_room = Vec::spare_capacity_mut(records)[..addrs.len()].chunks_mut(part_len);
        let mut link_room = Vec::spare_capacity_mut(links)[..addrs.len()].chunks_mut(part_len);
        let mut rooms: Vec<Room<'env>> = parts
            .iter()
            .map(|_| Room::new(record_room.next().unwrap_or_default(), link_room.next().unwrap_or_default()))
            .collect();
        // (One room per part; an empty one would only send its records to the spill.)
        let mut mine = rooms.pop().unwrap_or_else(|| Room::new(&mut [], &mut []));
        for ((tx, part), room) in crew.jobs.iter().zip(&parts).zip(rooms) {
            // Only a helper that panicked can be gone: the job comes back unread (its room holds
            // nothing) and the helper's join reports the failure.
            let _ = tx.send(Job { addrs: part.to_vec(), room });
        }
        let last = {
            let _phase = crate::timing::Phase::start("tasks: read (last part)");
            self.read_part(parts.last().copied().unwrap_or_default(), tolerate, interp_id, &mut mine)
        };
        let (n, spill) = mine.finish();
        let mut results = crew.finish();
        results.truncate(parts.len() - 1);
        results.push((last, n, spill));
        Ok(Some((results, part_len)))
    }
}

/// Join the parts read into `out`'s reserved room (part i from position i * part_len): close the
/// gaps between their written positions and own them (also when a part failed: what was written
/// is dropped with `out`, not leaked), then append what did not fit. The first error in part
/// order is returned.
fn join_parts(results: Vec<PartResult>, part_len: usize, out: &mut TaskReads) -> MemResult<()> {
    let mut len = 0usize;
    for (i, (_, n, _)) in results.iter().enumerate() {
        let start = i * part_len;
        let n = (*n).min(part_len);
        if start + n > out.0.capacity() || start + n > out.1.capacity() {
            break;
        }
        if start != len {
            // SAFETY: positions start..start+n of both vectors' reserved room were initialised by
            // part i (within capacity, checked above); len <= start, so the destination is reserved
            // room too, and ptr::copy allows overlap. The moved-from positions lie past the new
            // length and are not read again.
            unsafe {
                std::ptr::copy(out.0.as_ptr().add(start), out.0.as_mut_ptr().add(len), n);
                std::ptr::copy(out.1.as_ptr().add(start), out.1.as_mut_ptr().add(len), n);
            }
        }
        len += n;
    }
    // SAFETY: the first `len` positions of both vectors are initialised (above).
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
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_follow_cpus_and_task_count() {
        assert_eq!(readers_for(100_000, 1), 1);
        assert_eq!(readers_for(100_000, 2), 2);
        assert_eq!(readers_for(100_000, 64), MAX_READERS);
        assert_eq!(readers_for(TASKS_PER_READER * 2 - 1, 8), 1);
        assert_eq!(readers_for(TASKS_PER_READER * 3, 8), 3);
        assert_eq!(readers_for(0, 8), 1);
        assert_eq!(readers_for(10, 0), 1);
    }
}
