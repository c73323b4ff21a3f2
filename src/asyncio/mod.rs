//! asyncio: every task of every event loop, found from memory per version, with its coroutine
//! stack (await chain), what it waits on, and the awaited-by relation (explicit in 3.14+, inferred before).

pub mod assemble;
pub mod coro;
pub mod offsets;
pub mod readers;
pub mod registry;
pub mod task;
pub mod waits;

use crate::runtime::PyProcess;
use offsets::{AsyncioDebug, AsyncioOffsets};
use rustc_hash::FxHashMap as HashMap;
use std::cell::RefCell;

/// asyncio reader bound to one `PyProcess`.
pub struct Asyncio<'a> {
    pub py: &'a PyProcess,
    pub off: AsyncioOffsets,
    /// type address -> kind, cached (types outlive snapshots). A walker belongs to one capture
    /// on one thread: plain cells, no lock per lookup (tens of thousands per snapshot).
    kinds: RefCell<HashMap<u64, ObjKind>>,
    /// callbacks list address -> its callback objects (read once per snapshot)
    callbacks: RefCell<HashMap<u64, std::sync::Arc<Vec<u64>>>>,
    /// Coroutine frames decoded so far in this walk (see `PyProcess::interp_frame_memo`).
    frames: RefCell<crate::runtime::frames::FrameMemo>,
    /// Frames of the await chain being read (see `await_chain`).
    chain_scratch: RefCell<Vec<crate::model::Frame>>,
    /// Coroutine stacks made so far in this walk, by a hash of their frames (see `shared_stack`).
    stacks: RefCell<HashMap<u64, std::sync::Arc<[crate::model::Frame]>>>,
}

/// What an object is, as far as await chains and waits are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjKind {
    Coroutine,
    Generator,
    AsyncGenASend,
    FutureIter,
    /// C Task or a subclass
    Task,
    /// pure-Python `asyncio.tasks._PyTask` (or subclass)
    PyTask,
    GatheringFuture,
    /// C Future or subclass (not a Task)
    Future,
    PyFuture,
    Other,
}

impl<'a> Asyncio<'a> {
    pub fn new(py: &'a PyProcess) -> Asyncio<'a> {
        let debug =
            py.asyncio_debug_addr.and_then(|a| py.mem().read_vec(a, 104).ok()).and_then(|b| AsyncioDebug::parse(&b));
        let off = AsyncioOffsets::resolve(
            py.version,
            py.free_threaded,
            py.layout.as_deref(),
            debug,
            py.debug_offsets.as_ref(),
        );
        Asyncio::with(py, off, HashMap::default())
    }

    /// A walker over `py` (a sibling reader, see `PyProcess::sibling`) for a helper thread: the
    /// same offsets and type kinds (types are the same objects), its own per-walk caches.
    pub fn helper<'b>(&self, py: &'b PyProcess) -> Asyncio<'b> {
        Asyncio::with(py, self.off.clone(), self.kinds.borrow().clone())
    }

    /// A walker with these offsets and type kinds, its per-walk caches empty.
    fn with<'b>(py: &'b PyProcess, off: AsyncioOffsets, kinds: HashMap<u64, ObjKind>) -> Asyncio<'b> {
        Asyncio {
            py,
            off,
            kinds: RefCell::new(kinds),
            callbacks: RefCell::new(HashMap::default()),
            frames: RefCell::new(Default::default()),
            chain_scratch: RefCell::new(Vec::new()),
            stacks: RefCell::new(HashMap::default()),
        }
    }

    /// Classify an object by its type (and its MRO for subclasses).
    pub fn kind(&self, obj: u64) -> ObjKind {
        let Ok(ty) = self.py.ob_type(obj) else { return ObjKind::Other };
        self.kind_of_type(ty)
    }

    /// Classify a type address (cached per type).
    pub fn kind_of_type(&self, ty: u64) -> ObjKind {
        if ty == 0 {
            return ObjKind::Other;
        }
        if let Some(k) = self.kinds.borrow().get(&ty) {
            return *k;
        }
        let t = &self.py.types;
        let k = if Some(ty) == t.coro {
            ObjKind::Coroutine
        } else if Some(ty) == t.gen {
            ObjKind::Generator
        } else {
            self.kind_by_names(ty)
        };
        self.kinds.borrow_mut().insert(ty, k);
        k
    }

    fn kind_by_names(&self, ty: u64) -> ObjKind {
        let names = self.mro_names(ty);
        let has = |n: &str| names.iter().any(|x| x == n);
        let first = names.first().map(String::as_str).unwrap_or("");
        match first {
            "coroutine" => return ObjKind::Coroutine,
            "generator" => return ObjKind::Generator,
            "async_generator_asend" => return ObjKind::AsyncGenASend,
            "_asyncio.FutureIter" | "FutureIter" => return ObjKind::FutureIter,
            _ => {}
        }
        if has("_asyncio.Task") {
            ObjKind::Task
        } else if has("_GatheringFuture") {
            ObjKind::GatheringFuture
        } else if has("_asyncio.Future") {
            ObjKind::Future
        } else if has("_PyTask") || (has("Task") && has("Future")) {
            ObjKind::PyTask
        } else if has("_PyFuture") || has("Future") {
            ObjKind::PyFuture
        } else {
            ObjKind::Other
        }
    }

    /// `tp_name` of the type and of every class on its MRO.
    pub fn mro_names(&self, ty: u64) -> Vec<String> {
        let py = self.py;
        let mut out = Vec::new();
        if let Ok(n) = py.type_name(ty) {
            out.push(n);
        }
        let mro_off = py.layout.as_ref().and_then(|l| l.field("PyTypeObject", "tp_mro")).unwrap_or(344 + py.off.head);
        if let Ok(mro) = py.mem().read_u64(ty + mro_off) {
            if mro != 0 {
                if let Ok(items) = py.read_sequence(mro, true, 64) {
                    for t in items.into_iter().skip(1) {
                        if let Ok(n) = py.type_name(t) {
                            out.push(n);
                        }
                    }
                }
            }
        }
        out
    }
}
