//! Which asyncio locks a task holds (`async with lock:` keeps the lock's `__aexit__`, or from
//! 3.14 the lock itself, on the suspended coroutine's value stack) and which one it is acquiring.

use super::assemble::TaskLinks;
use super::Asyncio;
use crate::model::Frame;
use crate::runtime::locks::{FrameValues, LockKind};
use crate::runtime::thread_waits::{LockFacts, LockInfo, LockTable};

impl Asyncio<'_> {
    /// Condition variables are held through their underlying lock: compare locks by that.
    fn normalize(&self, kind: LockKind, obj: u64) -> u64 {
        if kind == LockKind::AsyncCondition {
            if let Ok(Some(l)) = self.py.getattr(obj, "_lock") {
                return l;
            }
        }
        obj
    }

    /// Lock facts of one task from its already-read await chain.
    pub fn task_lock_facts(&self, t: &TaskLinks, frames: &[Frame], locks: &mut LockTable) -> LockFacts {
        let py = self.py;
        let new_lock = |l: u64, kind: LockKind, locks: &mut LockTable| {
            locks.entry(l).or_insert_with(|| LockInfo { kind, name: None, held: None, owner_ident: None });
        };
        // Waiting: the innermost coroutine is an asyncio lock's acquire, `self` is the lock.
        let mut waits_for = None;
        if let (Some(f), Some((_, slf))) = (frames.first(), t.coroutines.first()) {
            let func = f.function.rsplit('.').next().unwrap_or("");
            if func == "acquire" && f.file.ends_with("locks.py") {
                if let Some(k) = py.lock_kind(*slf) {
                    let l = self.normalize(k, *slf);
                    waits_for = Some(l);
                    new_lock(l, k, locks);
                }
            }
        }
        let mut holds = Vec::new();
        for (i, (coro, _)) in t.coroutines.iter().enumerate() {
            if i == 0 && waits_for.is_some() {
                continue; // the acquire frame itself
            }
            let Ok(values) = self.coro_stack_values(*coro) else { continue };
            for v in values {
                let Some((k, obj)) = py.lock_held_by_with(v) else { continue };
                if k.is_thread() {
                    continue;
                }
                let l = self.normalize(k, obj);
                if Some(l) != waits_for && !holds.contains(&l) {
                    holds.push(l);
                }
                new_lock(l, k, locks);
                if let Some(e) = locks.get_mut(&l) {
                    if e.name.is_none() {
                        e.name = self.lock_name(*coro, obj);
                    }
                }
            }
        }
        LockFacts { waits_for, holds }
    }

    /// A name for a lock seen from a coroutine's frame: a local, `self.<attr>`, or a module global.
    fn lock_name(&self, coro: u64, lock: u64) -> Option<String> {
        let py = self.py;
        let mem = py.mem();
        let o = &self.off;
        let mut fv = FrameValues::default();
        if let Some(fo) = o.gen_frame {
            let f = mem.read_u64(coro + fo).ok()?;
            let (frame, code) = (f, mem.read_u64(f + o.f_code).ok()?);
            if let Ok(v) = py.frame_values(frame, code, false) {
                fv = v;
            }
        } else {
            let iframe = coro + o.gen_iframe?;
            let code = mem.read_u64(iframe + self.code_field()).ok()? & !3;
            if let Ok(v) = py.frame_values(iframe, code, false) {
                fv = v;
            }
        }
        py.name_for(lock, &fv)
    }
}
