//! Which threading locks a thread holds and which one it is blocked acquiring: RLock owners,
//! `with lock:` frames (the bound `__exit__`, or 3.14+ the lock itself, on the value stack), and
//! the futex a blocked thread sleeps on (3.8–3.13: the lock's semaphore).

use super::frames::Stack;
use super::locks::LockKind;
use super::threads::ThreadRecord;
use super::PyProcess;
use crate::source::os::OsThreadState;
use std::collections::HashMap;

/// What is known about one lock object.
#[derive(Debug, Clone)]
pub struct LockInfo {
    pub kind: LockKind,
    /// A variable or attribute name that refers to the lock, where one could be found.
    pub name: Option<String>,
    /// Read from the lock itself (threading locks); `None` where only holders tell.
    pub held: Option<bool>,
    /// RLock owner (thread ident), when held.
    pub owner_ident: Option<u64>,
}

/// Lock objects seen in one snapshot, by address.
pub type LockTable = HashMap<u64, LockInfo>;

/// Frames (innermost first) whose locals are searched for locks; deeper frames only show what
/// their value stacks hold (where `with lock:` keeps a held lock). A blocked acquire has its lock
/// in the innermost frames; scanning every local of a 10,000-frame stack costs seconds.
pub const LOCALS_SCANNED_FRAMES: usize = 32;

/// What one thread or task holds and waits for (lock addresses).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockFacts {
    pub waits_for: Option<u64>,
    pub holds: Vec<u64>,
}

impl PyProcess {
    /// Lock facts of one thread from its already-walked stack and its kernel state.
    pub fn thread_lock_facts(
        &self,
        rec: &ThreadRecord,
        stack: &Stack,
        os: &OsThreadState,
        locks: &mut LockTable,
    ) -> LockFacts {
        let blocked_in_futex = os.futex_addr.is_some() && !rec.holds_gil;
        let mut held: Vec<u64> = Vec::new();
        let mut waits_for = None;
        // innermost-frame stack locks, in push order (last = most recently pushed)
        let mut innermost_stack_locks: Vec<u64> = Vec::new();
        let mut contended_bare: Vec<u64> = Vec::new();
        for (i, (faddr, code)) in stack.raw.iter().enumerate() {
            let with_locals = i < LOCALS_SCANNED_FRAMES;
            let Ok(fv) = self.frame_values_with(*faddr, *code, i == 0, with_locals) else { continue };
            let mut candidates: Vec<(u64, bool)> = fv.stack.iter().map(|v| (*v, true)).collect();
            if with_locals {
                candidates.extend(fv.locals.iter().map(|(_, v)| (*v, false)));
            }
            for (v, on_stack) in candidates {
                // Any reference can be the lock a blocked thread is acquiring (matched by its
                // semaphore below), but only `with` evidence on the stack means "held".
                let Some((kind, lock)) = self.lock_of(v) else { continue };
                if !kind.is_thread() {
                    continue;
                }
                let with_evidence = on_stack && self.lock_held_by_with(v).is_some();
                let Ok(st) = self.thread_lock_state(lock, kind) else { continue };
                let entry = locks.entry(lock).or_insert_with(|| LockInfo {
                    kind,
                    name: None,
                    held: Some(st.held),
                    owner_ident: st.owner,
                });
                if entry.name.is_none() {
                    entry.name = self.name_for(lock, &fv).or_else(|| self.name_for(v, &fv));
                }
                if let (Some(f), Some(sem)) = (os.futex_addr, st.sem) {
                    if blocked_in_futex && (f == sem || f == sem + 4) {
                        waits_for = Some(lock);
                    }
                }
                match kind {
                    LockKind::RLock => {
                        if st.owner == Some(rec.ident) && !held.contains(&lock) {
                            held.push(lock);
                        } else if with_evidence && i == 0 && st.held {
                            // Held by someone else and entered by our innermost `with`: the
                            // one we are blocked acquiring (3.14+ has no semaphore to match).
                            innermost_stack_locks.push(lock);
                        }
                    }
                    _ => {
                        if on_stack && i == 0 && !with_evidence && st.held && st.contended {
                            // A PyMutex lock (3.13.x+/3.14+) someone is parked on, loaded by our
                            // innermost frame but not yet entered: likely the one we wait for.
                            contended_bare.push(lock);
                        }
                        if with_evidence && st.held {
                            if i == 0 {
                                innermost_stack_locks.push(lock);
                            }
                            if !held.contains(&lock) {
                                held.push(lock);
                            }
                        }
                    }
                }
            }
        }
        // 3.14+ parks on a per-thread semaphore, not the lock: the lock being acquired is the
        // most recently pushed lock on the innermost frame's stack.
        if waits_for.is_none() && blocked_in_futex {
            if let Some(l) = contended_bare.last().or(innermost_stack_locks.last()) {
                waits_for = Some(*l);
            }
        }
        if let Some(w) = waits_for {
            // An RLock we own is re-entered, not waited for; a lock we are acquiring is not held yet.
            if locks.get(&w).map(|l| l.kind) == Some(LockKind::RLock) && held.contains(&w) {
                waits_for = None;
            } else {
                held.retain(|l| *l != w);
            }
        }
        LockFacts { waits_for, holds: held }
    }
}
