//! Reading many tasks on several threads: the registries' entries split into consecutive parts,
//! each part read by its own reader (own page cache and caches), the results joined in order.

use super::assemble::{TaskLinks, TaskReads};
use super::registry::FoundTasks;
use super::Asyncio;
use crate::model::TaskSnap;
use crate::placement::cpus;
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

/// What one piece's reader returns: where the piece starts in the registry order, how its read
/// ended, the positions it wrote (from its start), what did not fit.
struct PieceResult {
    start: usize,
    result: MemResult<()>,
    written: usize,
    spill: TaskReads,
}

/// Fewest entries handed out at once: a piece's first objects are cold in its reader's page
/// cache, so pieces much smaller than this cost more in refetched pages than they balance.
const MIN_PIECE: usize = 256;

/// Which end of the unclaimed entries a reader takes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Front,
    Back,
}

/// The entries no reader has claimed yet, with their room in the result. Helpers take pieces
/// from the front and this thread from the back (the pages the registry walk left in its
/// cache); pieces shrink as the entries run out (half the remaining share per reader), so the
/// readers finish together however fast each one turns out to be: two threads of one part each
/// finished 2-5 ms apart here (other work on the CPUs, a cold cache), and the walk waits for
/// the last. Each reader's pieces from one end are contiguous, so its cache stays warm.
struct Pool<'env> {
    addrs: std::sync::Arc<[u64]>,
    /// Unclaimed entries: positions `front..back` of `addrs`, and their room.
    front: usize,
    back: usize,
    records: &'env mut [MaybeUninit<TaskSnap>],
    links: &'env mut [MaybeUninit<TaskLinks>],
    readers: usize,
    /// Start of the earliest piece whose read failed: pieces after it are not handed out (their
    /// errors could not be the first in registry order, and their records are not kept).
    failed_at: usize,
}

/// A claimed piece: its first position, its entries and their room.
struct Piece<'env> {
    start: usize,
    addrs: std::sync::Arc<[u64]>,
    end: usize,
    room: Room<'env>,
}

impl<'env> Pool<'env> {
    /// The next piece from `end`, or `None` when there is nothing left worth reading.
    fn claim(&mut self, end: End) -> Option<Piece<'env>> {
        let left = self.back.saturating_sub(self.front);
        // The rooms always cover front..back exactly; should they not, nothing more is handed
        // out (a piece's start must be where its room lies).
        if left == 0 || self.records.len() != left || self.links.len() != left {
            return None;
        }
        let size = (left / (2 * self.readers.max(1))).max(MIN_PIECE).min(left);
        let (start, records, links) = match end {
            End::Front => {
                let (r, rest) = std::mem::take(&mut self.records).split_at_mut(size);
                let (l, lrest) = std::mem::take(&mut self.links).split_at_mut(size);
                self.records = rest;
                self.links = lrest;
                self.front += size;
                (self.front - size, r, l)
            }
            End::Back => {
                let keep = left - size;
                let (rest, r) = std::mem::take(&mut self.records).split_at_mut(keep);
                let (lrest, l) = std::mem::take(&mut self.links).split_at_mut(keep);
                self.records = rest;
                self.links = lrest;
                self.back -= size;
                (self.back, r, l)
            }
        };
        if start > self.failed_at {
            return None;
        }
        Some(Piece { start, addrs: self.addrs.clone(), end: start + size, room: Room::new(records, links) })
    }
}

/// Claim and read pieces from `end` of the shared pool until it is empty (or a read failed
/// before the next piece): each piece's result.
fn read_pieces<'env>(
    aio: &Asyncio<'_>,
    pool: &std::sync::Mutex<Pool<'env>>,
    end: End,
    tolerate: bool,
    interp_id: i64,
) -> Vec<PieceResult> {
    let mut out = Vec::new();
    loop {
        let piece = crate::sync::lock(pool).claim(end);
        let Some(mut piece) = piece else { break };
        let result = aio.read_part(&piece.addrs[piece.start..piece.end], tolerate, interp_id, &mut piece.room);
        if result.is_err() {
            let mut p = crate::sync::lock(pool);
            p.failed_at = p.failed_at.min(piece.start);
        }
        let (written, spill) = piece.room.finish();
        out.push(PieceResult { start: piece.start, result, written, spill });
    }
    out
}

/// Work for the first helper to do before it waits for task entries: the capture's thread part
/// (stacks, states, lock facts), read on the helper's own reader while this thread walks the
/// registries, which needs nothing of it. Whoever takes it first runs it (`run`): the caller
/// runs it itself after the tasks when no helper did (one CPU, a footprint being recorded, a
/// kept record).
pub struct SideJob<'a, R: ?Sized = PyProcess> {
    job: std::sync::Mutex<Option<Job<'a, R>>>,
}

/// A side job: given the reader of the thread that runs it.
type Job<'a, R> = Box<dyn FnOnce(&R) + Send + 'a>;

impl<'a, R: ?Sized> SideJob<'a, R> {
    pub fn new(job: impl FnOnce(&R) + Send + 'a) -> SideJob<'a, R> {
        SideJob { job: std::sync::Mutex::new(Some(Box::new(job))) }
    }

    /// Run the job with `reader`, unless it was run already.
    pub fn run(&self, reader: &R) {
        let job = crate::sync::lock(&self.job).take();
        if let Some(job) = job {
            job(reader);
        }
    }
}

/// Helper threads started before the registries are walked, each waiting for the pool of
/// entries. A thread started when the work is ready waited 1-4 ms for a CPU here (the scheduler
/// leaves a new thread beside its parent until the next balancing); one that is already waiting
/// is woken on an idle CPU at once. Dropping a sender ends its helper with nothing read.
struct Crew<'scope, 'env> {
    jobs: Vec<mpsc::Sender<std::sync::Arc<std::sync::Mutex<Pool<'env>>>>>,
    /// Each helper's placement, once it has started (see `crate::placement`).
    placements: Vec<std::sync::Arc<std::sync::OnceLock<crate::placement::Placement>>>,
    running: Vec<std::thread::ScopedJoinHandle<'scope, Vec<PieceResult>>>,
}

impl<'scope, 'env> Crew<'scope, 'env> {
    /// One waiting helper per walker (each over its own sibling reader).
    fn start(
        s: &'scope std::thread::Scope<'scope, 'env>,
        walkers: Vec<Asyncio<'env>>,
        tolerate: bool,
        interp_id: i64,
        side: &'env SideJob<'_>,
    ) -> Crew<'scope, 'env> {
        let mut crew = Crew { jobs: Vec::new(), placements: Vec::new(), running: Vec::new() };
        for (i, aio) in walkers.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel::<std::sync::Arc<std::sync::Mutex<Pool<'env>>>>();
            crew.jobs.push(tx);
            let placement = std::sync::Arc::new(std::sync::OnceLock::new());
            crew.placements.push(placement.clone());
            crew.running.push(s.spawn(move || {
                if let Some(p) = crate::placement::Placement::of_this_thread() {
                    let _ = placement.set(p);
                }
                if i == 0 {
                    side.run(aio.py);
                }
                let r = match rx.recv() {
                    Ok(pool) => {
                        if let Some(p) = placement.get() {
                            p.restore();
                        }
                        let _phase = crate::timing::Phase::start("tasks: read (helper's pieces)");
                        read_pieces(&aio, &pool, End::Front, tolerate, interp_id)
                    }
                    Err(_) => Vec::new(),
                };
                aio.py.end_snapshot();
                r
            }));
        }
        crew
    }

    /// Every helper's pieces. A reader that panicked dropped what it wrote (`Room`'s drop) and
    /// left its pieces unread: reported as a failure at the first position.
    fn finish(self) -> Vec<PieceResult> {
        drop(self.jobs);
        let mut out = Vec::new();
        for h in self.running {
            match h.join() {
                Ok(pieces) => out.extend(pieces),
                Err(_) => out.push(PieceResult {
                    start: 0,
                    result: Err(MemError::Other("a task reader thread failed".into())),
                    written: 0,
                    spill: Default::default(),
                }),
            }
        }
        out
    }
}

impl Asyncio<'_> {
    /// Find the tasks of `interp` in its registries and read them: their records and links in
    /// registry order, and the entries that could not be read.
    ///
    /// With many tasks and spare CPUs, helper threads share the reading (pieces of consecutive
    /// entries, see `Pool`), each with a sibling reader (`PyProcess::sibling`: same target, own
    /// page cache, no lock shared per read); tasks are independent objects, so no piece needs
    /// another's walk, and pieces joined in order give what one walk gives. The first error in
    /// registry order wins, as in one walk. A walk that records its footprint (repeated samples)
    /// stays on this thread; `--blocking`'s copy is shared with the helpers.
    pub(super) fn find_and_read_tasks(
        &self,
        interp: &InterpInfo,
        tstates: &[u64],
        tolerate: bool,
        side: &SideJob<'_>,
    ) -> MemResult<(FoundTasks, TaskReads)> {
        let cpus = cpus();
        // Helpers are started before the walk (see `Crew`), as many as the most tasks would use.
        let siblings: Vec<PyProcess> = (1..readers_for(usize::MAX, cpus)).map_while(|_| self.py.sibling()).collect();
        let mut out: TaskReads = Default::default();
        let (found, pieces) = std::thread::scope(|s| -> MemResult<_> {
            let walkers = siblings.iter().map(|py| self.helper(py)).collect();
            let crew = Crew::start(s, walkers, tolerate, interp.id, side);
            let found = {
                let _phase = crate::timing::Phase::start("tasks: registries");
                self.task_addresses(interp, tstates, tolerate)?
            };
            let _phase = crate::timing::Phase::start("tasks: read");
            let pieces = self.read_tasks(&found.tasks, tolerate, interp.id, cpus, crew, &mut out)?;
            Ok((found, pieces))
        })?;
        if let Some(pieces) = pieces {
            join_pieces(pieces, &mut out)?;
        }
        Ok((found, out))
    }

    /// Read the tasks at `addrs` into `out` (empty), sharing the work with `crew`: `None` when
    /// this thread read them all, else every piece's result, for `join_pieces` once the helpers
    /// are done with `out`'s room.
    fn read_tasks<'env>(
        &self,
        addrs: &[u64],
        tolerate: bool,
        interp_id: i64,
        cpus: usize,
        crew: Crew<'_, 'env>,
        out: &'env mut TaskReads,
    ) -> MemResult<Option<Vec<PieceResult>>> {
        out.0.reserve(addrs.len());
        out.1.reserve(addrs.len());
        let readers = readers_for(addrs.len(), cpus).min(crew.jobs.len() + 1);
        if readers <= 1 {
            // The helpers may still be on their side job: read first, then wait for them.
            let r = self.read_part(addrs, tolerate, interp_id, out).map(|_| None);
            drop(crew.finish());
            return r;
        }
        let (records, links, _) = out;
        let pool = std::sync::Arc::new(std::sync::Mutex::new(Pool {
            addrs: addrs.into(),
            front: 0,
            back: addrs.len(),
            records: &mut Vec::spare_capacity_mut(records)[..addrs.len()],
            links: &mut Vec::spare_capacity_mut(links)[..addrs.len()],
            readers,
            failed_at: usize::MAX,
        }));
        for (tx, placement) in crew.jobs.iter().zip(&crew.placements).take(readers - 1) {
            if let Some(p) = placement.get() {
                p.keep_off_callers_cpu();
            }
            // Only a helper that panicked can be gone: its join reports the failure.
            let _ = tx.send(pool.clone());
        }
        let mine = {
            let _phase = crate::timing::Phase::start("tasks: read (this thread's pieces)");
            read_pieces(self, &pool, End::Back, tolerate, interp_id)
        };
        let mut pieces = crew.finish();
        pieces.extend(mine);
        Ok(Some(pieces))
    }
}

/// Join the pieces read into `out`'s reserved room (each from its start position): in registry
/// order, close the gaps between their written positions and own them (also when a piece
/// failed: what was written is dropped with `out`, not leaked), then append what did not fit.
/// The first error in registry order is returned.
fn join_pieces(mut pieces: Vec<PieceResult>, out: &mut TaskReads) -> MemResult<()> {
    pieces.sort_by_key(|p| p.start);
    let mut len = 0usize;
    for p in &pieces {
        // Pieces do not overlap (each position is claimed once, and a piece writes at most its
        // own size); a failed thread's marker wrote nothing.
        let n = p.written;
        if p.start + n > out.0.capacity() || p.start + n > out.1.capacity() {
            break;
        }
        if p.start != len {
            // SAFETY: positions start..start+n of both vectors' reserved room were initialised by
            // this piece (within capacity, checked above); len <= start (pieces in order, each
            // after the last), so the destination is reserved room too, and ptr::copy allows
            // overlap. The moved-from positions lie past the new length and are not read again.
            unsafe {
                std::ptr::copy(out.0.as_ptr().add(p.start), out.0.as_mut_ptr().add(len), n);
                std::ptr::copy(out.1.as_ptr().add(p.start), out.1.as_mut_ptr().add(len), n);
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
    for p in pieces {
        if let Err(e) = p.result {
            first_error.get_or_insert(e);
        }
        out.0.extend(p.spill.0);
        out.1.extend(p.spill.1);
        out.2.extend(p.spill.2);
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
    fn a_side_job_runs_once_whoever_takes_it() {
        let runs = std::sync::atomic::AtomicUsize::new(0);
        let job = SideJob::new(|_| {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let job: SideJob<u32> = job;
        std::thread::scope(|s| {
            s.spawn(|| job.run(&1));
            job.run(&2);
        });
        job.run(&3);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

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

    /// Claims from both ends until the pool is empty; returns each piece's (start, end).
    fn claims(n: usize, readers: usize, failed_at: usize, out: &mut TaskReads) -> Vec<(usize, usize)> {
        out.0.reserve(n);
        out.1.reserve(n);
        let (records, links, _) = out;
        let mut pool = Pool {
            addrs: (0..n as u64).collect::<Vec<_>>().into(),
            front: 0,
            back: n,
            records: &mut Vec::spare_capacity_mut(records)[..n],
            links: &mut Vec::spare_capacity_mut(links)[..n],
            readers,
            failed_at,
        };
        // Each end is claimed from until it gets nothing, alternately (as two readers would).
        let mut got = Vec::new();
        let mut open = [End::Front, End::Back].to_vec();
        while !open.is_empty() {
            open.retain(|&end| match pool.claim(end) {
                Some(p) => {
                    assert_eq!(p.room.records.len(), p.end - p.start);
                    assert_eq!(p.room.links.len(), p.end - p.start);
                    assert_eq!(p.addrs[p.start], p.start as u64);
                    got.push((p.start, p.end));
                    true
                }
                None => false,
            });
        }
        got
    }

    #[test]
    fn pool_hands_out_every_entry_once_in_shrinking_pieces() {
        for (n, readers) in [(10_101, 2), (100_000, 4), (4_000, 2), (300, 2), (1, 3)] {
            let mut pieces = claims(n, readers, usize::MAX, &mut Default::default());
            // From the front the pieces shrink, and only the last one may be under MIN_PIECE.
            let sizes: Vec<usize> = pieces.iter().map(|(a, b)| b - a).collect();
            assert!(sizes.iter().rev().skip(1).all(|s| *s >= MIN_PIECE.min(n)), "{sizes:?}");
            assert!(sizes[0] <= n / (2 * readers) + MIN_PIECE, "{sizes:?}");
            pieces.sort();
            let mut at = 0;
            for (a, b) in pieces {
                assert_eq!(a, at, "pieces must tile 0..{n}");
                at = b;
            }
            assert_eq!(at, n);
        }
    }

    #[test]
    fn pool_stops_handing_out_pieces_after_a_failed_one() {
        let pieces = claims(10_000, 2, 3_000, &mut Default::default());
        assert!(pieces.iter().all(|(a, _)| *a <= 3_000), "{pieces:?}");
        assert!(pieces.iter().any(|(a, b)| *a <= 2_999 && 2_999 < *b), "entries before the failure are still read");
    }

    #[test]
    fn joined_pieces_keep_registry_order_and_close_gaps() {
        let n = 1000;
        let mut out: TaskReads = Default::default();
        let pieces = claims(n, 2, usize::MAX, &mut out);
        // Write every piece's room, leaving its last entry unwritten (a task no longer pending).
        let mut results = Vec::new();
        {
            let (records, links, _) = &mut out;
            let recs = Vec::spare_capacity_mut(records);
            let lks = Vec::spare_capacity_mut(links);
            for &(a, b) in &pieces {
                let mut room = Room::new(&mut recs[a..b], &mut lks[a..b]);
                for i in a..b - 1 {
                    room.task(
                        TaskSnap { name: format!("t{i}").into(), ..Default::default() },
                        TaskLinks { addr: i as u64, ..Default::default() },
                    );
                }
                let (written, spill) = room.finish();
                results.push(PieceResult { start: a, result: Ok(()), written, spill });
            }
        }
        results.reverse();
        join_pieces(results, &mut out).unwrap();
        let want: Vec<u64> = pieces.iter().flat_map(|&(a, b)| (a..b - 1).map(|i| i as u64)).collect();
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(out.1.iter().map(|l| l.addr).collect::<Vec<_>>(), sorted);
        assert!(out.0.iter().zip(&out.1).all(|(r, l)| r.name == format!("t{}", l.addr)));
    }
}
