//! Reading one task: state, name, coroutine chain, the future it waits on, its loop, its
//! callbacks (for inferring who awaits it), and the explicit awaited-by field on 3.14+.

use super::coro::AwaitChain;
use super::{Asyncio, ObjKind};
use crate::source::{Buf, MemResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutState {
    Pending,
    Cancelled,
    Finished,
}

impl FutState {
    pub fn as_str(&self) -> &'static str {
        match self {
            FutState::Pending => "pending",
            FutState::Cancelled => "cancelled",
            FutState::Finished => "done",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RawTask {
    pub addr: u64,
    pub name: crate::model::Text,
    pub state: FutState,
    pub loop_addr: u64,
    pub fut_waiter: Option<u64>,
    pub coro: u64,
    pub chain: AwaitChain,
    /// Objects whose callbacks list holds a wake-up for this task's completion (callback objects).
    pub callbacks: Vec<u64>,
    /// 3.14+: tasks recorded in `fut_awaited_by`.
    pub awaited_by: Option<Vec<u64>>,
    pub python_task: bool,
    /// Why part of the task (its await chain) could not be read.
    pub error: Option<String>,
}

impl RawTask {
    /// The object the task waits on: its `fut_waiter`, else what its innermost coroutine awaits.
    pub fn awaited(&self) -> Option<u64> {
        self.fut_waiter.or(self.chain.awaited)
    }

    /// The task was read while its loop stepped it (the reads straddled the step): its await
    /// chain reached a coroutine that had already returned, or it waits on a future by its own
    /// field while its coroutine runs (a step clears that field before it resumes the coroutine).
    pub fn torn(&self) -> bool {
        self.chain.finished_link || (self.fut_waiter.is_some() && self.chain.running)
    }
}

/// A C task's own fields, read before its await chain is followed.
pub(super) struct CTaskHead {
    addr: u64,
    state: FutState,
    pub(super) name_obj: u64,
    pub(super) coro: u64,
    waiter: u64,
    loop_addr: u64,
    /// 3.14+: `fut_awaited_by` and whether it is a set.
    awaited_by: Option<(u64, bool)>,
}

impl CTaskHead {
    /// Whether the task's coroutine is followed (pending tasks only).
    pub(super) fn follows_chain(&self) -> bool {
        self.coro != 0 && self.state == FutState::Pending
    }
}

/// Follow a task's coroutine; an unreadable link keeps the task, with the error noted.
fn chain_or_error(r: MemResult<AwaitChain>) -> MemResult<(AwaitChain, Option<String>)> {
    match r {
        Ok(c) => Ok((c, None)),
        Err(e) if e.is_fatal() => Err(e),
        Err(e) => Ok((AwaitChain::default(), Some(format!("await chain unreadable: {e}")))),
    }
}

impl Asyncio<'_> {
    pub fn read_task(&self, addr: u64) -> MemResult<RawTask> {
        match self.kind(addr) {
            ObjKind::PyTask => self.read_py_task(addr),
            _ => self.task_bytes(addr).and_then(|b| self.read_c_task(addr, &b)),
        }
    }

    /// A C task's fields in one copy (`task_read_size` bytes, which include the object header).
    pub(super) fn task_bytes(&self, addr: u64) -> MemResult<Vec<u8>> {
        self.py.mem().read_vec(addr, self.off.task_read_size as usize)
    }

    /// A C task from the copy of its fields (`task_bytes`; the caller has read it already to
    /// learn the object's type, so the task costs one read, not two).
    pub(super) fn read_c_task(&self, addr: u64, b: &[u8]) -> MemResult<RawTask> {
        let head = self.c_task_head(addr, b)?;
        let chain = head.follows_chain().then(|| self.await_chain(head.coro));
        self.c_task_finish(head, chain)
    }

    /// A C task's own fields, from the copy of them (`task_bytes`).
    pub(super) fn c_task_head(&self, addr: u64, b: &[u8]) -> MemResult<CTaskHead> {
        let o = &self.off;
        if b.len() < o.task_read_size as usize {
            return Err(crate::source::MemError::Unmapped(addr));
        }
        let state = match b.i32_at(o.fut_state) {
            0 => FutState::Pending,
            1 => FutState::Cancelled,
            _ => FutState::Finished,
        };
        let awaited_by = match (o.fut_awaited_by, o.fut_awaited_by_is_set) {
            (Some(ab), Some(is_set)) => Some((b.u64_at(ab), b.u8_at(is_set) != 0)),
            _ => None,
        };
        Ok(CTaskHead {
            addr,
            state,
            name_obj: b.u64_at(o.task_name),
            coro: b.u64_at(o.task_coro),
            waiter: b.u64_at(o.task_fut_waiter),
            loop_addr: b.u64_at(o.fut_loop),
            awaited_by,
        })
    }

    /// The rest of a C task once its await chain was followed (`chain`: `Some` exactly when
    /// `head.follows_chain()`): its name, awaited-by set and callbacks.
    pub(super) fn c_task_finish(&self, head: CTaskHead, chain: Option<MemResult<AwaitChain>>) -> MemResult<RawTask> {
        let (chain, mut error) = match chain {
            Some(r) => chain_or_error(r)?,
            None => (AwaitChain::default(), None),
        };
        let name = self.name_or_error(head.name_obj, &mut error)?;
        let awaited_by = head.awaited_by.map(|(v, is_set)| {
            if v == 0 {
                vec![]
            } else if is_set {
                self.set_members(v).unwrap_or_default()
            } else {
                vec![v]
            }
        });
        let addr = head.addr;
        Ok(RawTask {
            addr,
            name,
            state: head.state,
            loop_addr: head.loop_addr,
            fut_waiter: (head.waiter != 0).then_some(head.waiter),
            coro: head.coro,
            chain,
            // Callbacks only serve to infer TaskGroup parents where CPython does not record awaited_by.
            callbacks: if awaited_by.is_none() { self.future_callbacks(addr).unwrap_or_default() } else { Vec::new() },
            awaited_by,
            python_task: false,
            error,
        })
    }

    /// Pure-Python `_PyTask`: everything is an instance attribute.
    pub(super) fn read_py_task(&self, addr: u64) -> MemResult<RawTask> {
        let py = self.py;
        let attr = |n: &str| py.getattr(addr, n).ok().flatten().unwrap_or(0);
        // `_state` is a class attribute ("PENDING") until the future completes.
        let state_obj = attr("_state");
        let state = match py.read_str(state_obj).as_deref() {
            Ok("CANCELLED") => FutState::Cancelled,
            Ok("FINISHED") => FutState::Finished,
            Ok(_) => FutState::Pending,
            Err(_) if state_obj == 0 => FutState::Pending,
            Err(_) => FutState::Finished,
        };
        let coro = attr("_coro");
        let waiter = attr("_fut_waiter");
        let (chain, mut error) = if coro != 0 && state == FutState::Pending {
            chain_or_error(self.await_chain(coro))?
        } else {
            (AwaitChain::default(), None)
        };
        let name = self.name_or_error(attr("_name"), &mut error)?;
        let mut callbacks = Vec::new();
        let cbs = attr("_callbacks");
        if cbs != 0 {
            for item in py.read_sequence_prefix(cbs, false, MAX_CALLBACKS).unwrap_or_default() {
                if let Ok(pair) = py.read_sequence(item, true, 4) {
                    if let Some(cb) = pair.first() {
                        callbacks.push(*cb);
                    }
                }
            }
        }
        Ok(RawTask {
            addr,
            name,
            state,
            loop_addr: attr("_loop"),
            fut_waiter: (waiter != 0 && Some(waiter) != py.types.none).then_some(waiter),
            coro,
            chain,
            callbacks,
            awaited_by: None,
            python_task: true,
            error,
        })
    }

    /// A task's name: a str, or (3.12+) an int N meaning "Task-N" until first asked for.
    pub fn task_name(&self, obj: u64) -> MemResult<crate::model::Text> {
        let py = self.py;
        if obj == 0 {
            return Ok(Default::default());
        }
        match py.ob_type(obj)? {
            t if Some(t) == py.types.long => py.read_long(obj).map(|n| compact_str::format_compact!("Task-{n}")),
            _ => py.read_text(obj),
        }
    }

    /// The name, or a placeholder and the reason it could not be read.
    fn name_or_error(&self, obj: u64, error: &mut Option<String>) -> MemResult<crate::model::Text> {
        Ok(match self.task_name(obj) {
            Ok(n) => n,
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => {
                let why = format!("name unreadable: {e}");
                *error = Some(match error.take() {
                    Some(prev) => format!("{prev}; {why}"),
                    None => why,
                });
                "<unreadable name>".into()
            }
        })
    }

    /// The callback objects registered on a C future: `fut_callback0` then `fut_callbacks[i][0]`.
    /// A callbacks list is read once per snapshot (tasks may share one) and only its first
    /// MAX_CALLBACKS entries: they serve to find TaskGroup parents, whose callback comes first.
    pub fn future_callbacks(&self, fut: u64) -> MemResult<Vec<u64>> {
        let py = self.py;
        let o = &self.off;
        let mut out = Vec::new();
        let cb0 = py.mem().read_u64(fut + o.fut_callback0)?;
        if cb0 != 0 {
            out.push(cb0);
        }
        let list = py.mem().read_u64(fut + o.fut_callbacks)?;
        if list != 0 && Some(list) != py.types.none {
            if let Some(cached) = self.callbacks.borrow().get(&list) {
                out.extend(cached.iter().copied());
                return Ok(out);
            }
            let mut cbs = Vec::new();
            for item in py.read_sequence_prefix(list, false, MAX_CALLBACKS)? {
                if let Ok(pair) = py.read_sequence(item, true, 4) {
                    if let Some(cb) = pair.first() {
                        cbs.push(*cb);
                    }
                }
            }
            out.extend(cbs.iter().copied());
            self.callbacks.borrow_mut().insert(list, std::sync::Arc::new(cbs));
        }
        Ok(out)
    }
}

/// Callbacks looked at per future.
pub const MAX_CALLBACKS: u64 = 256;
