//! Lock objects and frame contents for deadlock analysis: what a frame holds on its value stack
//! or in its locals, what kind of lock an object is, its state (held, owner), and a name for it.

use super::offsets::FrameOffsets;
use super::PyProcess;
use crate::source::{words, MemResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `_thread.lock` (threading.Lock)
    ThreadLock,
    /// `_thread.RLock` (threading.RLock)
    RLock,
    AsyncLock,
    AsyncSemaphore,
    AsyncCondition,
}

impl LockKind {
    pub fn label(&self) -> &'static str {
        match self {
            LockKind::ThreadLock => "threading.Lock",
            LockKind::RLock => "threading.RLock",
            LockKind::AsyncLock => "asyncio.Lock",
            LockKind::AsyncSemaphore => "asyncio.Semaphore",
            LockKind::AsyncCondition => "asyncio.Condition",
        }
    }
    pub fn is_thread(&self) -> bool {
        matches!(self, LockKind::ThreadLock | LockKind::RLock)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadLockState {
    pub held: bool,
    /// RLock owner ident (pthread id), when held.
    pub owner: Option<u64>,
    /// 3.8–3.13: address of the semaphore a blocked acquirer sleeps on.
    pub sem: Option<u64>,
    /// 3.14+: someone is parked waiting for it.
    pub contended: bool,
}

/// Values in a frame: its locals (slot index and value; `names` per slot) and its evaluation stack.
#[derive(Debug, Clone, Default)]
pub struct FrameValues {
    pub names: std::sync::Arc<[String]>,
    pub locals: Vec<(usize, u64)>,
    pub stack: Vec<u64>,
    pub globals: u64,
}

const MAX_SLOTS: u64 = 1024;

impl PyProcess {
    /// Module name of a heap type (its `__module__`), for telling asyncio.Lock from other "Lock"s.
    pub fn type_module(&self, ty: u64) -> Option<String> {
        let d = self.mem().read_u64(ty.wrapping_add(self.off.tp_dict)).ok()?;
        if d == 0 {
            return None;
        }
        let m = self.dict_get(d, "__module__").ok()??;
        self.read_str(m).ok()
    }

    /// A lock that a `with`/`async with` block keeps on the value stack: the bound `__exit__` /
    /// `__aexit__` before 3.14, the lock object itself from 3.14 (LOAD_SPECIAL pushes method and self).
    /// Other references (a stale `lock.locked` or `lock` left by a finished expression) do not count.
    pub fn lock_held_by_with(&self, v: u64) -> Option<(LockKind, u64)> {
        let ty = self.ob_type(v).ok()?;
        let t = &self.types;
        let o = &self.off;
        if Some(ty) == t.cfunction {
            let ml = self.mem().read_u64(v.wrapping_add(o.cfunction_ml)).ok()?;
            let name = self.read_cstr(self.mem().read_u64(ml).ok()?, 32).ok()?;
            if name != "__exit__" {
                return None;
            }
        } else if Some(ty) == t.method {
            let func = self.mem().read_u64(v.wrapping_add(o.method_func)).ok()?;
            let name = self.read_str_max(self.mem().read_u64(func.wrapping_add(o.func_name)).ok()?, 32).ok()?;
            if name != "__aexit__" && name != "__exit__" {
                return None;
            }
        } else if !self.version.at_least(3, 14) {
            return None;
        }
        self.lock_of(v)
    }

    /// Classify an object as a lock; bound methods (`lock.__exit__`, `lock.__aexit__`) count as their lock.
    pub fn lock_of(&self, obj: u64) -> Option<(LockKind, u64)> {
        let ty = self.ob_type(obj).ok()?;
        let t = &self.types;
        if Some(ty) == t.method || Some(ty) == t.cfunction {
            let self_off = if Some(ty) == t.method { self.off.method_self } else { self.off.cfunction_self };
            let slf = self.mem().read_u64(obj.wrapping_add(self_off)).ok()?;
            if slf == 0 || slf == obj {
                return None;
            }
            return self.lock_kind(slf).map(|k| (k, slf));
        }
        self.lock_kind(obj).map(|k| (k, obj))
    }

    pub fn lock_kind(&self, obj: u64) -> Option<LockKind> {
        let ty = self.ob_type(obj).ok()?;
        // Scans of fat frames ask this for every value: classify each type once.
        if let Some(k) = crate::sync::lock(&self.caches.lock_kinds).get(&ty) {
            return *k;
        }
        let k = self.lock_kind_of_type(ty);
        let mut cache = crate::sync::lock(&self.caches.lock_kinds);
        if cache.len() < 100_000 {
            cache.insert(ty, k);
        }
        k
    }

    fn lock_kind_of_type(&self, ty: u64) -> Option<LockKind> {
        let name = self.type_name(ty).ok()?;
        match name.as_str() {
            "_thread.lock" => return Some(LockKind::ThreadLock),
            "_thread.RLock" => return Some(LockKind::RLock),
            _ => {}
        }
        let kind = match name.as_str() {
            "Lock" => LockKind::AsyncLock,
            "Semaphore" | "BoundedSemaphore" => LockKind::AsyncSemaphore,
            "Condition" => LockKind::AsyncCondition,
            _ => return None,
        };
        (self.type_module(ty).as_deref() == Some("asyncio.locks")).then_some(kind)
    }

    /// State of a `_thread.lock` / `_thread.RLock`.
    pub fn thread_lock_state(&self, obj: u64, kind: LockKind) -> MemResult<ThreadLockState> {
        let h = self.off.head;
        let m = self.mem();
        let lay = |st: &str, f: &str| self.layout.as_ref().and_then(|l| l.field(st, f));
        // The PyMutex-based locks (24-byte lock, 40-byte RLock) arrived in 3.14, and for the plain
        // lock already in a 3.13 patch release: decide by the object's size, not the version.
        let basicsize =
            self.ob_type(obj).and_then(|t| self.mem().read_u64(t.wrapping_add(self.off.tp_basicsize))).unwrap_or(0);
        let pymutex = match kind {
            LockKind::RLock => basicsize == 40 + h,
            _ => basicsize == 24 + h,
        };
        if pymutex {
            let bits = m.read_u8(obj + 16 + h)?;
            let held = bits & 1 == 1;
            let owner = if kind == LockKind::RLock && held { Some(m.read_u64(obj + 24 + h)?) } else { None };
            return Ok(ThreadLockState { held, owner, sem: None, contended: bits & 2 == 2 });
        }
        match kind {
            LockKind::RLock => {
                let sem = m.read_u64(obj + lay("rlockobject", "rlock_lock").unwrap_or(16 + h))?;
                let owner = m.read_u64(obj + lay("rlockobject", "rlock_owner").unwrap_or(24 + h))?;
                let count = m.read_u64(obj + lay("rlockobject", "rlock_count").unwrap_or(32 + h))?;
                Ok(ThreadLockState {
                    held: count > 0,
                    owner: (count > 0).then_some(owner),
                    sem: Some(sem),
                    contended: false,
                })
            }
            _ => {
                let sem = m.read_u64(obj + lay("lockobject", "lock_lock").unwrap_or(16 + h))?;
                let locked = m.read_u8(obj + lay("lockobject", "locked").unwrap_or(32 + h))?;
                Ok(ThreadLockState { held: locked != 0, owner: None, sem: Some(sem), contended: false })
            }
        }
    }

    /// Names of a code object's locals (`co_localsplusnames` 3.11+, `co_varnames` before), read
    /// once per code object.
    pub fn local_names(&self, code: u64) -> std::sync::Arc<[String]> {
        let Ok(info) = self.code_info(code) else { return std::sync::Arc::from(Vec::new()) };
        info.local_names
            .get_or_init(|| {
                let field = if self.version.at_least(3, 11) { "co_localsplusnames" } else { "co_varnames" };
                let default = if self.version.at_least(3, 11) { 96 } else { 72 } + self.off.head;
                let off = self.layout.as_ref().and_then(|l| l.field("PyCodeObject", field)).unwrap_or(default);
                let Ok(t) = self.mem().read_u64(code + off) else { return std::sync::Arc::from(Vec::new()) };
                self.read_sequence(t, true, 4096)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| self.read_str_max(p, 256).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .into()
            })
            .clone()
    }

    /// Locals and value stack of a thread frame. The innermost frame's stack top is not saved by
    /// CPython before 3.14, so that frame's stack is scanned up to `co_stacksize` (callers validate
    /// every value by type).
    pub fn frame_values(&self, frame: u64, code: u64, innermost: bool) -> MemResult<FrameValues> {
        self.frame_values_with(frame, code, innermost, true)
    }

    /// As `frame_values`; without `locals` only the value stack (and globals) are read.
    pub fn frame_values_with(&self, frame: u64, code: u64, innermost: bool, locals: bool) -> MemResult<FrameValues> {
        let m = self.mem();
        let info = self.code_info(code)?;
        let lay = |st: &str, f: &str| self.layout.as_ref().and_then(|l| l.field(st, f));
        let names = if locals { self.local_names(code) } else { std::sync::Arc::from(Vec::new()) };
        let mut out = FrameValues { names, ..Default::default() };
        match self.off.frame {
            FrameOffsets::Object { .. } => {
                let lp = frame
                    + lay("PyFrameObject", "f_localsplus").unwrap_or(if self.version.minor == 10 { 352 } else { 360 });
                let vs = m.read_u64(frame + lay("PyFrameObject", "f_valuestack").unwrap_or(64))?;
                out.globals = m.read_u64(frame + lay("PyFrameObject", "f_globals").unwrap_or(48))?;
                let nloc = if vs > lp { ((vs - lp) / 8).min(MAX_SLOTS) } else { 0 };
                if locals {
                    let raw = m.read_vec(lp, nloc as usize * 8)?;
                    out.locals.extend(words(&raw).enumerate());
                }
                let stacksize = lay("PyCodeObject", "co_stacksize")
                    .map(|o| m.read_i32(code + o).unwrap_or(0))
                    .unwrap_or(0)
                    .clamp(0, MAX_SLOTS as i32);
                let top = if self.version.minor <= 9 {
                    m.read_u64(frame + lay("PyFrameObject", "f_stacktop").unwrap_or(72))?
                } else {
                    0
                };
                let end = if top > vs && (top - vs) / 8 <= MAX_SLOTS { top } else { vs + 8 * stacksize as u64 };
                if end > vs {
                    let st = m.read_vec(vs, (end - vs) as usize)?;
                    out.stack = words(&st).collect();
                }
            }
            FrameOffsets::Interp { localsplus, stack, tagged, .. } => {
                let globals_off =
                    lay("_PyInterpreterFrame", "f_globals").unwrap_or(if self.version.minor == 11 { 8 } else { 24 });
                out.globals = m.read_u64(frame + globals_off)?;
                let nlp = info.nlocalsplus.unwrap_or(0).clamp(0, MAX_SLOTS as i64) as u64;
                let base = frame + localsplus;
                if locals {
                    let raw = m.read_vec(base, nlp as usize * 8)?;
                    out.locals.extend(words(&raw).map(|v| if tagged { v & !3 } else { v }).enumerate());
                }
                let sbase = base + 8 * nlp;
                let stacksize = info.stacksize.unwrap_or(0).clamp(0, MAX_SLOTS as i64) as u64;
                let end = match stack {
                    Some(off) if self.version.at_least(3, 14) => m.read_u64(frame + off)?,
                    Some(off) if !innermost => base + 8 * (m.read_i32(frame + off)?.max(0) as u64),
                    _ => sbase + 8 * stacksize,
                };
                let end = end.min(sbase + 8 * stacksize.max(1) + 8 * MAX_SLOTS);
                if end > sbase && (end - sbase) / 8 <= MAX_SLOTS {
                    let st = m.read_vec(sbase, (end - sbase) as usize)?;
                    out.stack =
                        words(&st).filter(|v| !tagged || v & 3 != 3).map(|v| if tagged { v & !3 } else { v }).collect();
                }
            }
        }
        out.stack.retain(|v| *v > 0x1000 && v % 8 == 0);
        out.locals.retain(|(_, v)| *v > 0x1000 && v % 8 == 0);
        Ok(out)
    }

    /// A name for `obj` as seen from a frame: a local, an attribute of `self`, or a module global.
    pub fn name_for(&self, obj: u64, fv: &FrameValues) -> Option<String> {
        for (i, v) in &fv.locals {
            if *v == obj {
                if let Some(n) = fv.names.get(*i) {
                    return Some(n.clone());
                }
            }
        }
        if let Some((0, slf)) = fv.locals.first() {
            if fv.names.first().map(String::as_str) == Some("self") {
                if let Ok(Some(store)) = self.instance_attrs(*slf) {
                    let items = match store {
                        super::objects::AttrStore::Dict(d) => self.dict_items(d).unwrap_or_default(),
                        super::objects::AttrStore::Values { keys, values } => {
                            self.keys_items(keys, Some(values)).unwrap_or_default()
                        }
                    };
                    if let Some((k, _)) = items.iter().find(|(_, v)| *v == obj) {
                        return self.read_str_max(*k, 256).ok().map(|n| format!("self.{n}"));
                    }
                }
            }
        }
        if fv.globals != 0 {
            if let Ok(items) = self.dict_items(fv.globals) {
                if let Some((k, _)) = items.iter().find(|(_, v)| *v == obj) {
                    return self.read_str_max(*k, 256).ok();
                }
            }
        }
        None
    }
}
