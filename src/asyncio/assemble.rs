//! Turning raw tasks into the snapshot's task records: which thread's loop runs each task, the
//! awaited-by edges (explicit on 3.14+, inferred from waiters/gather/TaskGroup callbacks before),
//! and what each task waits on.

use super::task::{FutState, RawTask};
use super::{Asyncio, ObjKind};
use crate::model::{hex, hex_id, AwaitPoint, LoopSnap, TaskSnap, WaitingOn};
use crate::runtime::thread_waits::LockTable;
use crate::runtime::threads::{InterpInfo, ThreadRecord};
use crate::source::{Buf, MemError, MemResult};
use rustc_hash::{FxHashMap as HashMap, FxHashSet};

/// Most event loops recorded per interpreter.
const MAX_LOOPS: usize = 4096;

/// Entries read together, one step of their walks at a time (`read_part`): at 10,101 tasks a
/// batch's pages (~130) stay well inside the page cache's window.
const BATCH: usize = 256;

/// Times a task caught mid-step is read again (each read takes microseconds; a step of a
/// healthy loop about as long, so the second read almost always sees the task at rest).
const REREADS: usize = 3;

/// Bytes of a task's name object fetched with its coroutine (the header and a short name).
const NAME_PREFETCH: usize = 64;

/// An entry of a batch after its first bytes were read.
enum Entry {
    /// A C task: its fields, and the index of its chain's walk if it has one.
    CTask(super::task::CTaskHead, Option<usize>),
    /// A task read whole when its outcome is taken (a pure-Python task, or a C task whose
    /// first bytes could not be copied in one piece), by its kind.
    OnItsOwn(ObjKind),
    /// Not a task.
    Skip,
    Failed(MemError),
}
/// Most objects visited below one awaited gather.
const MAX_GATHER_OBJECTS: usize = 1_000_000;

/// Everything asyncio contributes to one snapshot of an interpreter.
#[derive(Debug, Default, Clone)]
pub struct AsyncioRecord {
    pub tasks: Vec<TaskSnap>,
    pub loops: Vec<LoopSnap>,
    pub locks: LockTable,
    /// Whether task lock facts were collected (only when some task waits on a lock).
    pub lock_facts: bool,
    /// Registry entries or tasks that could not be read (each is in `tasks` with an `error`, or
    /// counted here when not even its address was readable).
    pub unreadable: u64,
}

/// What the edge, loop and lock passes need of a read task besides its record (kept beside the
/// records, by position, instead of whole raw tasks: a 100,000-task read holds a third less
/// memory, which on a VM is time spent faulting fresh pages in).
#[derive(Debug, Default)]
pub struct TaskLinks {
    pub addr: u64,
    pub loop_addr: u64,
    /// What the task waits on: its `fut_waiter`, else what its innermost coroutine awaits.
    pub awaited: Option<u64>,
    /// 3.14+: tasks recorded in `fut_awaited_by`.
    pub awaited_by: Option<Vec<u64>>,
    /// Callback objects of the task's future (TaskGroup parents before 3.14).
    pub callbacks: Vec<u64>,
    /// The await chain's coroutine objects with their frames' first locals, innermost first.
    pub coroutines: Vec<(u64, u64)>,
}

/// Pending tasks read from the registries (records without thread, edges and lock facts, and
/// their links, by position), and the entries that could not be read.
pub(super) type TaskReads = (Vec<TaskSnap>, Vec<TaskLinks>, Vec<(u64, MemError)>);

/// The addresses linked to each task position, in one flat list (compressed rows): the tasks a
/// task awaits, or the tasks awaiting it. Both ends of every edge are read tasks; a task's
/// entries keep the order of the sorted edges (deterministic output).
struct Adjacency {
    /// Entries of position i: `addrs[start[i]..start[i + 1]]`.
    start: Vec<usize>,
    addrs: Vec<u64>,
}

impl Adjacency {
    /// `row` maps an edge to (task position, linked address), or None to leave it out.
    fn new(n: usize, edges: &[(u64, u64)], row: impl Fn(&(u64, u64)) -> Option<(usize, u64)>) -> Adjacency {
        let rows: Vec<(usize, u64)> = edges.iter().filter_map(row).filter(|(i, _)| *i < n).collect();
        let mut start = vec![0usize; n + 1];
        for (i, _) in &rows {
            start[i + 1] += 1;
        }
        for i in 0..n {
            start[i + 1] += start[i];
        }
        let mut next = start.clone();
        let mut addrs = vec![0u64; rows.len()];
        for (i, a) in rows {
            addrs[next[i]] = a;
            next[i] += 1;
        }
        Adjacency { start, addrs }
    }

    fn of(&self, i: usize) -> &[u64] {
        match (self.start.get(i), self.start.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.addrs[a..b],
            _ => &[],
        }
    }
}

/// A pending task read as its record (thread, edges and lock facts still to come) and its links.
fn split(t: RawTask, wait: WaitingOn, interp_id: i64) -> (TaskSnap, TaskLinks) {
    let awaited = t.awaited();
    let record = TaskSnap {
        id: hex_id(t.addr),
        name: t.name,
        state: t.state.as_str().into(),
        thread: None,
        interpreter: interp_id,
        coroutine_stack: t.chain.frames,
        awaiting: Default::default(),
        awaited_by: Default::default(),
        waiting_on: wait,
        await_point: t.chain.point.map(|(code, offset)| AwaitPoint {
            code: hex_id(code),
            offset,
            awaited: awaited.map(hex_id),
        }),
        event_loop: (t.loop_addr != 0).then(|| hex_id(t.loop_addr)),
        holds_locks: vec![],
        waits_for_lock: None,
        error: t.error,
        waiting_s: None,
    };
    let links = TaskLinks {
        addr: t.addr,
        loop_addr: t.loop_addr,
        awaited,
        awaited_by: t.awaited_by,
        callbacks: t.callbacks,
        coroutines: t.chain.coroutines,
    };
    (record, links)
}

/// Hex ids of `addrs` as a record's shared list (the empty list as the default one).
fn ids(addrs: &[u64]) -> std::sync::Arc<[crate::model::Text]> {
    if addrs.is_empty() {
        Default::default()
    } else {
        addrs.iter().map(|a| hex_id(*a)).collect()
    }
}

impl Asyncio<'_> {
    /// The running loop of each thread (loop address -> native tid).
    pub fn loops_by_thread(&self, records: &[(ThreadRecord, Option<i32>)]) -> HashMap<u64, Option<i32>> {
        let py = self.py;
        let mut out = HashMap::default();
        for (rec, tid) in records {
            let lp = if let Some(off) = self.off.impl_running_loop {
                py.mem().read_u64(rec.tstate + off).unwrap_or(0)
            } else if let (Some(holder_off), true) = (self.off.tstate_dict_loop, rec.dict != 0) {
                match py.dict_get(rec.dict, "__asyncio_running_event_loop__") {
                    Ok(Some(h)) => match holder_off {
                        Some(off) => py.mem().read_u64(h + off).unwrap_or(0),
                        None => h,
                    },
                    _ => 0,
                }
            } else {
                0
            };
            if lp != 0 && Some(lp) != py.types.none {
                out.insert(lp, *tid);
            }
        }
        out
    }

    /// The task each running loop is executing now: 3.14+ per thread state, before that
    /// `asyncio.tasks._current_tasks` (loop -> task).
    fn current_tasks(&self, interp: &InterpInfo, records: &[(ThreadRecord, Option<i32>)]) -> HashMap<u64, u64> {
        let py = self.py;
        let mut out = HashMap::default();
        if let (Some(dbg), Some(loop_off)) = (self.off.debug, self.off.impl_running_loop) {
            for (rec, _) in records {
                let lp = py.mem().read_u64(rec.tstate + loop_off).unwrap_or(0);
                let task = py.mem().read_u64(rec.tstate + dbg.thread_running_task).unwrap_or(0);
                if lp != 0 && task != 0 && Some(task) != py.types.none {
                    out.insert(lp, task);
                }
            }
        }
        let dict = py
            .find_module(interp.addr, "asyncio.tasks")
            .ok()
            .flatten()
            .and_then(|m| py.module_dict(m).ok())
            .and_then(|md| py.dict_get(md, "_current_tasks").ok().flatten());
        if let Some(d) = dict {
            for (lp, task) in py.dict_items(d).unwrap_or_default().into_iter().take(MAX_LOOPS) {
                out.entry(lp).or_insert(task);
            }
        }
        out
    }

    /// Tasks, their loops and (when some task waits on a lock) their lock facts. With `tolerate`
    /// an unreadable task becomes an entry with an `error` instead of failing the whole read.
    /// `side`: work a helper reader may do meanwhile (see `SideJob`).
    pub fn collect(
        &self,
        interp: &InterpInfo,
        records: &[(ThreadRecord, Option<i32>)],
        tolerate: bool,
        side: &super::readers::SideJob<'_>,
    ) -> MemResult<AsyncioRecord> {
        let py = self.py;
        let mut rec = AsyncioRecord::default();
        let tstates: Vec<u64> = records.iter().map(|(r, _)| r.tstate).collect();
        // Each task is read, and what it waits on decoded, in one pass over the registries.
        let (found, (mut snaps, raw, broken)) = self.find_and_read_tasks(interp, &tstates, tolerate, side)?;
        rec.unreadable += found.unreadable;
        let phase = crate::timing::Phase::start("tasks: edges");
        let running = self.loops_by_thread(records);
        let current = self.current_tasks(interp, records);
        let idents: HashMap<u64, Option<i32>> = records.iter().map(|(r, t)| (r.ident, *t)).collect();
        let index: HashMap<u64, usize> = raw.iter().enumerate().map(|(i, t)| (t.addr, i)).collect();

        // Edges parent -> child ("child is awaited by parent"), sorted and deduplicated (a list,
        // not a set: 100,000 edges of a 100,000-task snapshot in one flat block).
        let mut edges: Vec<(u64, u64)> = Vec::new();
        let explicit = raw.iter().any(|t| t.awaited_by.is_some());
        for t in &raw {
            if let Some(ab) = &t.awaited_by {
                for p in ab {
                    if index.contains_key(p) {
                        edges.push((*p, t.addr));
                    }
                }
            }
        }
        if !explicit {
            self.infer_edges(&raw, &index, &mut edges);
        }
        edges.sort_unstable();
        edges.dedup();
        let awaiting = Adjacency::new(raw.len(), &edges, |&(p, c)| Some((*index.get(&p)?, c)));
        let awaited_by = Adjacency::new(raw.len(), &edges, |&(p, c)| Some((*index.get(&c)?, p)));

        // Every loop with a task or a thread, and the thread that runs (or last ran) it.
        let mut loop_thread: HashMap<u64, Option<i32>> = running.clone();
        for t in &raw {
            if loop_thread.contains_key(&t.loop_addr) || t.loop_addr == 0 || loop_thread.len() >= MAX_LOOPS {
                continue;
            }
            // A loop that is not running right now still remembers its thread
            // (BaseEventLoop._thread_id); looked up once per loop.
            let tid = py
                .getattr(t.loop_addr, "_thread_id")
                .ok()
                .flatten()
                .and_then(|o| py.read_long(o).ok())
                .and_then(|ident| idents.get(&(ident as u64)).copied().flatten());
            loop_thread.insert(t.loop_addr, tid);
        }

        drop(phase);
        let _phase = crate::timing::Phase::start("tasks: records");
        // Lock facts need a waiter: without a task waiting on an asyncio lock no lock cycle or
        // lock wait among tasks exists, and the per-coroutine stack scan is skipped.
        rec.lock_facts = snaps.iter().any(|t| matches!(t.waiting_on.kind.as_str(), "lock" | "semaphore" | "condition"));
        rec.unreadable += snaps.iter().filter(|t| t.error.is_some()).count() as u64;
        // The records were made while reading; what needed every task is filled in now.
        // Tasks awaited by one parent (the children of a TaskGroup or gather) share that parent's
        // one-id list: one list per parent, not one per child.
        let mut single_parent: HashMap<u64, std::sync::Arc<[crate::model::Text]>> = HashMap::default();
        for (i, (r, t)) in snaps.iter_mut().zip(&raw).enumerate() {
            r.thread = loop_thread.get(&t.loop_addr).copied().flatten();
            r.awaiting = ids(awaiting.of(i));
            r.awaited_by = match awaited_by.of(i) {
                [one] => single_parent.entry(*one).or_insert_with(|| ids(&[*one])).clone(),
                many => ids(many),
            };
            if rec.lock_facts {
                let facts = self.task_lock_facts(t, &r.coroutine_stack, &mut rec.locks);
                r.holds_locks = facts.holds.iter().map(|l| hex_id(*l)).collect();
                r.waits_for_lock = facts.waits_for.map(hex_id);
            }
        }
        drop(raw);
        rec.tasks = snaps;
        rec.tasks.reserve(broken.len());
        drop(_phase);
        let _phase = crate::timing::Phase::start("tasks: loops");
        for (a, e) in broken {
            rec.unreadable += 1;
            rec.tasks.push(TaskSnap {
                id: hex_id(a),
                name: "<unreadable>".into(),
                state: "unknown".into(),
                thread: None,
                interpreter: interp.id,
                coroutine_stack: Default::default(),
                awaiting: Default::default(),
                awaited_by: Default::default(),
                waiting_on: WaitingOn { kind: "unknown".into(), ..Default::default() },
                await_point: None,
                event_loop: None,
                holds_locks: vec![],
                waits_for_lock: None,
                error: Some(e.to_string()),
                waiting_s: None,
            });
        }
        let mut loops: Vec<(u64, Option<i32>)> = loop_thread.into_iter().collect();
        loops.sort_unstable();
        for (lp, tid) in loops {
            let ready = self.ready_queue(lp);
            rec.loops.push(LoopSnap {
                address: hex(lp),
                interpreter: interp.id,
                thread: tid,
                running: running.contains_key(&lp),
                current_task: current.get(&lp).map(|t| hex(*t)),
                in_selector: None,
                ready: ready.map(|r| r.0),
                ready_mutations: ready.and_then(|r| r.1),
            });
        }
        Ok(rec)
    }

    /// Read the tasks at `addrs` (part of the registries' entries) into `out`, each with what it
    /// waits on: the pending ones, and the entries that could not be read (with `tolerate`;
    /// without it the first such entry ends the read, so a torn read of a live process is
    /// retried whole).
    ///
    /// Entries are read BATCH at a time, one step of all their walks at once: the entries, then
    /// their coroutines and names, then each next link of every await chain. Before each step
    /// the pages it will read are fetched together (`Memory::prefetch`): one system call per
    /// step of a batch instead of one per 16 KiB span met on the way, and only the pages read.
    /// Every entry's outcome is then taken in registry order, as one entry at a time would give.
    pub(super) fn read_part(
        &self,
        addrs: &[u64],
        tolerate: bool,
        interp_id: i64,
        out: &mut impl super::readers::TaskSink,
    ) -> MemResult<()> {
        let py = self.py;
        // One copy of each entry's first bytes serves its type and, for a C task, its fields.
        let size = self.off.task_read_size as usize;
        let mut bytes = vec![0u8; size];
        let mut ranges: Vec<(u64, usize)> = Vec::new();
        let mut entries: Vec<Entry> = Vec::with_capacity(BATCH.min(addrs.len()));
        let mut walks: Vec<(super::coro::ChainWalk, Option<MemError>)> = Vec::with_capacity(BATCH.min(addrs.len()));
        let mut spare_frames: Vec<Vec<crate::model::Frame>> = Vec::new();
        let mut link_buf: super::coro::LinkBuf = [0u8; 512];
        for batch in addrs.chunks(BATCH) {
            // Step 0: the entries themselves.
            ranges.clear();
            ranges.extend(batch.iter().map(|&a| (a, size)));
            py.mem().prefetch(&ranges);
            entries.clear();
            walks.clear();
            ranges.clear();
            for &a in batch {
                // Registries may legally hold other objects (a WeakSet anyone can add to): only
                // tasks are read; an entry whose type cannot even be read is reported, not dropped.
                // (An entry too close to a mapping's end for the full copy is typed on its own.)
                let copied = py.mem().read(a, &mut bytes).is_ok();
                let ty = if copied { Ok(bytes.u64_at(py.off.ob_type)) } else { py.ob_type(a) };
                let entry = match ty.map(|ty| self.kind_of_type(ty)) {
                    Ok(ObjKind::Task) if copied => match self.c_task_head(a, &bytes) {
                        Ok(head) => {
                            let walk = head.follows_chain().then(|| {
                                let w = self.chain_start(head.coro, spare_frames.pop().unwrap_or_default());
                                ranges.push(self.chain_next_range(&w));
                                walks.push((w, None));
                                walks.len() - 1
                            });
                            if head.name_obj != 0 {
                                ranges.push((head.name_obj, NAME_PREFETCH));
                            }
                            Entry::CTask(head, walk)
                        }
                        Err(e) => Entry::Failed(e),
                    },
                    Ok(kind @ (ObjKind::Task | ObjKind::PyTask)) => Entry::OnItsOwn(kind),
                    Ok(_) => Entry::Skip,
                    Err(e) => Entry::Failed(e),
                };
                entries.push(entry);
            }
            // Steps 1..: one link of every chain still going, its objects fetched first.
            while !ranges.is_empty() {
                py.mem().prefetch(&ranges);
                ranges.clear();
                for (w, err) in walks.iter_mut().filter(|(w, _)| !w.done()) {
                    if let Err(e) = self.chain_step(w, &mut link_buf) {
                        *err = Some(e);
                    } else if !w.done() {
                        ranges.push(self.chain_next_range(w));
                    }
                }
            }
            // Every entry's outcome, in registry order.
            let mut finished: Vec<Option<MemResult<super::coro::AwaitChain>>> = Vec::with_capacity(walks.len());
            for (w, err) in walks.drain(..) {
                finished.push(Some(match err {
                    Some(e) => Err(e),
                    None => {
                        let (chain, frames) = self.chain_finish(w);
                        spare_frames.push(frames);
                        Ok(chain)
                    }
                }));
            }
            for (&a, entry) in batch.iter().zip(entries.drain(..)) {
                let read = match entry {
                    Entry::CTask(head, walk) => {
                        let chain = walk.and_then(|i| finished.get_mut(i).and_then(Option::take));
                        self.c_task_finish(head, chain).map(Some)
                    }
                    Entry::OnItsOwn(ObjKind::PyTask) => self.read_py_task(a).map(Some),
                    Entry::OnItsOwn(_) => self.task_bytes(a).and_then(|b| self.read_c_task(a, &b)).map(Some),
                    Entry::Skip => Ok(None),
                    Entry::Failed(e) => Err(e),
                };
                match read {
                    Ok(Some(t)) if t.error.is_some() && !tolerate => {
                        return Err(MemError::Other(t.error.unwrap_or_default()));
                    }
                    Ok(Some(t)) if t.state == FutState::Pending => {
                        let t = if t.torn() { self.read_again(t) } else { t };
                        let wait = self.waiting_on(&t);
                        let (record, link) = split(t, wait, interp_id);
                        out.task(record, link);
                    }
                    Ok(_) => {}
                    Err(e) if e.is_fatal() || !tolerate => return Err(e),
                    Err(e) => out.broken(a, e),
                }
            }
        }
        Ok(())
    }

    /// A task read while its loop stepped it (`RawTask::torn`), read again past the page cache
    /// (its pages were fetched at different moments) until a read is whole, at most
    /// REREADS times; the latest read if none is (a task the loop steps without pause).
    fn read_again(&self, mut t: RawTask) -> RawTask {
        for _ in 0..REREADS {
            match self.py.past_cache(|| self.read_task(t.addr)) {
                // (A read that lost part of the task, its chain or name, does not replace one
                // that has it all.)
                Some(Ok(again)) if again.state == FutState::Pending && (again.error.is_none() || t.error.is_some()) => {
                    let whole = !again.torn();
                    t = again;
                    if whole {
                        break;
                    }
                }
                // Finished meanwhile, unreadable now or not re-readable (a paused copy): the
                // latest read stands.
                _ => break,
            }
        }
        t
    }

    /// `loop._ready` of a pure-Python event loop (uvloop keeps no such deque): its length and
    /// the deque's mutation counter (`state`, bumped by every append and pop).
    fn ready_queue(&self, lp: u64) -> Option<(u64, Option<u64>)> {
        let py = self.py;
        let d = py.getattr(lp, "_ready").ok().flatten()?;
        let n = py.mem().read_i64(d.wrapping_add(py.off.ob_size)).ok()?;
        if !(0..1 << 40).contains(&n) {
            return None;
        }
        // After PyObject_VAR_HEAD: leftblock, rightblock, leftindex, rightindex, state (3.8-3.15).
        let state_off = py.layout.as_ref().and_then(|l| l.field("dequeobject", "state")).unwrap_or(py.off.ob_size + 40);
        Some((n as u64, py.mem().read_u64(d.wrapping_add(state_off)).ok()))
    }

    /// 3.8–3.13 record no awaited-by relation: rebuild it from the objects.
    fn infer_edges(&self, raw: &[TaskLinks], index: &HashMap<u64, usize>, edges: &mut Vec<(u64, u64)>) {
        let py = self.py;
        for t in raw {
            if let Some(w) = t.awaited {
                let mut leaves = Vec::new();
                self.gather_leaves(w, &mut leaves);
                for c in leaves {
                    if index.contains_key(&c) && c != t.addr {
                        edges.push((t.addr, c));
                    }
                }
            }
        }
        // TaskGroup children: their done-callback is the bound method TaskGroup._on_task_done.
        for c in raw {
            for cb in &c.callbacks {
                let Ok(ty) = py.ob_type(*cb) else { continue };
                if Some(ty) != py.types.method {
                    continue;
                }
                let Ok(tg) = py.mem().read_u64(cb.wrapping_add(py.off.method_self)) else { continue };
                let is_tg =
                    py.ob_type(tg).ok().and_then(|t| py.type_name(t).ok()).map(|n| n == "TaskGroup").unwrap_or(false);
                if !is_tg {
                    continue;
                }
                if let Ok(Some(parent)) = py.getattr(tg, "_parent_task") {
                    if index.contains_key(&parent) && parent != c.addr {
                        edges.push((parent, c.addr));
                    }
                }
            }
        }
    }

    /// Tasks behind an awaited object: itself if a task, every child of a gather (nested gathers
    /// followed, each object visited once: a gather may contain itself).
    fn gather_leaves(&self, obj: u64, out: &mut Vec<u64>) {
        let mut seen: FxHashSet<u64> = FxHashSet::default();
        let mut work = vec![obj];
        while let Some(o) = work.pop() {
            if !seen.insert(o) || seen.len() > MAX_GATHER_OBJECTS {
                continue;
            }
            match self.kind(o) {
                ObjKind::Task | ObjKind::PyTask => out.push(o),
                ObjKind::GatheringFuture => {
                    let Ok(Some(children)) = self.py.getattr(o, "_children") else { continue };
                    work.extend(self.py.read_sequence(children, false, MAX_GATHER_OBJECTS as u64).unwrap_or_default());
                }
                _ => {}
            }
        }
    }

    fn waiting_on(&self, t: &RawTask) -> WaitingOn {
        let py = self.py;
        let waited = t.awaited();
        let inner = t.chain.frames.first();
        let inner_self = t.chain.coroutines.first().map(|c| c.1).unwrap_or(0);
        let func = inner.map(|f| f.function.rsplit('.').next().unwrap_or("")).unwrap_or("");
        let file: &str = inner.map(|f| &*f.file).unwrap_or("");
        let in_asyncio = |m: &str| file.ends_with(m) && file[..file.len() - m.len()].ends_with("asyncio/");
        // The type of `self` only matters inside asyncio's own modules.
        let self_type = if inner_self != 0 && (in_asyncio("locks.py") || in_asyncio("queues.py")) {
            py.ob_type(inner_self).ok().and_then(|ty| py.type_text(ty).ok()).unwrap_or_default()
        } else {
            Default::default()
        };
        let primitive = if in_asyncio("locks.py") {
            match (self_type.as_str(), func) {
                ("Lock", _) => Some("lock"),
                ("Event", _) => Some("event"),
                ("Condition", _) => Some("condition"),
                ("Semaphore" | "BoundedSemaphore", _) => Some("semaphore"),
                (_, "acquire") => Some("lock"),
                _ => None,
            }
        } else if in_asyncio("queues.py") && matches!(func, "get" | "put" | "join") {
            Some("queue")
        } else if in_asyncio("tasks.py") && func == "sleep" {
            Some("sleep")
        } else if in_asyncio("taskgroups.py") {
            Some("taskgroup")
        } else {
            None
        };
        let object = if primitive.is_some()
            && matches!(primitive, Some("lock" | "event" | "condition" | "semaphore" | "queue"))
            && inner_self != 0
        {
            Some(hex_id(inner_self))
        } else {
            None
        };
        // The awaited object's type is read only when the frame does not say (a TaskGroup's
        // future sits on a page of its own: reading it for 101 groups fetched 131 spans).
        let kind = match primitive {
            Some(p) => p,
            None => match waited.map(|w| self.kind(w)) {
                Some(ObjKind::Task | ObjKind::PyTask) => "task",
                Some(ObjKind::GatheringFuture) => "gather",
                Some(ObjKind::Future | ObjKind::PyFuture) => "future",
                _ => "unknown",
            },
        };
        WaitingOn {
            kind: kind.into(),
            future: waited.map(hex_id),
            object: object.clone(),
            object_type: if object.is_some() { Some(self_type) } else { None },
            runnable: waited.is_none(),
        }
    }
}
