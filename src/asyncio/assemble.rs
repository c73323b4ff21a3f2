//! Turning raw tasks into the snapshot's task records: which thread's loop runs each task, the
//! awaited-by edges (explicit on 3.14+, inferred from waiters/gather/TaskGroup callbacks before),
//! and what each task waits on.

use super::task::{FutState, RawTask};
use super::{Asyncio, ObjKind};
use crate::attach::MemResult;
use crate::runtime::threads::{InterpInfo, ThreadRecord};
use crate::snapshot::{TaskSnap, WaitingOn};
use rustc_hash::{FxHashMap as HashMap, FxHashSet};

/// "0x…" without going through the formatting machinery (called for every task and edge).
pub fn hex(addr: u64) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 18];
    let mut i = buf.len();
    let mut v = addr;
    loop {
        i -= 1;
        buf[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    i -= 1;
    buf[i] = b'x';
    i -= 1;
    buf[i] = b'0';
    String::from_utf8_lossy(&buf[i..]).into_owned()
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

    pub fn collect_tasks(
        &self,
        interp: &InterpInfo,
        records: &[(ThreadRecord, Option<i32>)],
    ) -> MemResult<Vec<TaskSnap>> {
        let py = self.py;
        let tstates: Vec<u64> = records.iter().map(|(r, _)| r.tstate).collect();
        let addrs = self.task_addresses(interp, &tstates)?;
        let mut raw: Vec<RawTask> = Vec::with_capacity(addrs.len());
        for a in addrs {
            let t = self.read_task(a)?;
            if t.state == FutState::Pending {
                raw.push(t);
            }
        }
        let loops = self.loops_by_thread(records);
        let idents: HashMap<u64, Option<i32>> = records.iter().map(|(r, t)| (r.ident, *t)).collect();
        let index: HashMap<u64, usize> = raw.iter().enumerate().map(|(i, t)| (t.addr, i)).collect();

        // Edges parent -> child ("child is awaited by parent").
        let mut edges: FxHashSet<(u64, u64)> = FxHashSet::default();
        let explicit = raw.iter().any(|t| t.awaited_by.is_some());
        for t in &raw {
            if let Some(ab) = &t.awaited_by {
                for p in ab {
                    if index.contains_key(p) {
                        edges.insert((*p, t.addr));
                    }
                }
            }
        }
        if !explicit {
            self.infer_edges(&raw, &index, &mut edges);
        }
        let mut awaiting: HashMap<u64, Vec<u64>> = HashMap::default();
        let mut awaited_by: HashMap<u64, Vec<u64>> = HashMap::default();
        // Deterministic order for output: sort the edges.
        let mut edges: Vec<(u64, u64)> = edges.into_iter().collect();
        edges.sort_unstable();
        for (p, c) in &edges {
            awaiting.entry(*p).or_default().push(*c);
            awaited_by.entry(*c).or_default().push(*p);
        }

        let mut out = Vec::with_capacity(raw.len());
        let mut loops = loops;
        for t in &raw {
            let thread = match loops.get(&t.loop_addr) {
                Some(t) => *t,
                None => {
                    // A loop that is not running right now still remembers its thread
                    // (BaseEventLoop._thread_id); looked up once per loop.
                    let tid = py
                        .getattr(t.loop_addr, "_thread_id")
                        .ok()
                        .flatten()
                        .and_then(|o| py.read_long(o).ok())
                        .and_then(|ident| idents.get(&(ident as u64)).copied().flatten());
                    loops.insert(t.loop_addr, tid);
                    tid
                }
            };
            out.push(TaskSnap {
                id: hex(t.addr),
                name: t.name.clone(),
                state: t.state.as_str().to_string(),
                thread,
                interpreter: interp.id,
                coroutine_stack: t.chain.frames.clone(),
                awaiting: awaiting.get(&t.addr).map(|v| v.iter().map(|a| hex(*a)).collect()).unwrap_or_default(),
                awaited_by: awaited_by.get(&t.addr).map(|v| v.iter().map(|a| hex(*a)).collect()).unwrap_or_default(),
                waiting_on: self.waiting_on(t),
            });
        }
        Ok(out)
    }

    /// 3.8–3.13 record no awaited-by relation: rebuild it from the objects.
    fn infer_edges(&self, raw: &[RawTask], index: &HashMap<u64, usize>, edges: &mut FxHashSet<(u64, u64)>) {
        let py = self.py;
        for t in raw {
            let waited = t.fut_waiter.or(t.chain.awaited);
            if let Some(w) = waited {
                let mut leaves = Vec::new();
                self.gather_leaves(w, 0, &mut leaves);
                for c in leaves {
                    if index.contains_key(&c) && c != t.addr {
                        edges.insert((t.addr, c));
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
                        edges.insert((parent, c.addr));
                    }
                }
            }
        }
    }

    /// Tasks behind an awaited object: itself if a task, every child of a gather (recursively).
    fn gather_leaves(&self, obj: u64, depth: usize, out: &mut Vec<u64>) {
        if depth > 32 {
            return;
        }
        match self.kind(obj) {
            ObjKind::Task | ObjKind::PyTask => out.push(obj),
            ObjKind::GatheringFuture => {
                let Ok(Some(children)) = self.py.getattr(obj, "_children") else { return };
                for c in self.py.read_sequence(children, false, 1_000_000).unwrap_or_default() {
                    self.gather_leaves(c, depth + 1, out);
                }
            }
            _ => {}
        }
    }

    fn waiting_on(&self, t: &RawTask) -> WaitingOn {
        let py = self.py;
        let waited = t.fut_waiter.or(t.chain.awaited);
        let inner = t.chain.frames.first();
        let inner_self = t.chain.first_locals.first().copied().unwrap_or(0);
        let func = inner.map(|f| f.function.rsplit('.').next().unwrap_or("")).unwrap_or("");
        let file: &str = inner.map(|f| &*f.file).unwrap_or("");
        let in_asyncio = |m: &str| file.ends_with(m) && file[..file.len() - m.len()].ends_with("asyncio/");
        // The type of `self` only matters inside asyncio's own modules.
        let self_type = if inner_self != 0 && (in_asyncio("locks.py") || in_asyncio("queues.py")) {
            py.ob_type(inner_self).ok().and_then(|ty| py.type_name(ty).ok()).unwrap_or_default()
        } else {
            String::new()
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
            Some(hex(inner_self))
        } else {
            None
        };
        let kind = match (primitive, waited.map(|w| self.kind(w))) {
            (Some(p), _) => p,
            (None, Some(ObjKind::Task | ObjKind::PyTask)) => "task",
            (None, Some(ObjKind::GatheringFuture)) => "gather",
            (None, Some(ObjKind::Future | ObjKind::PyFuture)) => "future",
            _ => "unknown",
        };
        WaitingOn {
            kind: kind.to_string(),
            future: waited.map(hex),
            object: object.clone(),
            object_type: if object.is_some() { Some(self_type) } else { None },
            runnable: waited.is_none(),
        }
    }
}
