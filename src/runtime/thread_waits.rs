//! Which threading locks each thread holds and which one it is blocked acquiring: RLock owners,
//! `with lock:` frames (the bound `__exit__`, or 3.14+ the lock itself, on the value stack), and
//! the futex a blocked thread sleeps on (3.8–3.13: the lock's semaphore).

use super::locks::LockKind;
use super::threads::{os_thread_state, ThreadRecord};
use super::PyProcess;
use crate::analysis::deadlock::{Actor, ActorId, LockRef};
use crate::attach::MemResult;
use std::collections::HashMap;

pub struct ThreadFacts {
    pub actors: Vec<Actor>,
    pub locks: HashMap<u64, LockRef>,
}

impl PyProcess {
    /// `threads`: (record, tid, name) for every thread of every interpreter.
    pub fn thread_wait_facts(&self, threads: &[(ThreadRecord, Option<i32>, Option<String>)]) -> MemResult<ThreadFacts> {
        let mut actors = Vec::new();
        let mut locks: HashMap<u64, LockRef> = HashMap::new();
        for (rec, tid, name) in threads {
            let Some(tid) = *tid else { continue };
            let stack = match self.walk_frames(rec.top_frame) {
                Ok(s) => s,
                Err(_) => continue,
            };
            let os = os_thread_state(self.pid, tid);
            let blocked_in_futex = os.futex_addr.is_some() && !rec.holds_gil;
            let mut held: Vec<u64> = Vec::new();
            let mut waits_for = None;
            // innermost-frame stack locks, in push order (last = most recently pushed)
            let mut innermost_stack_locks: Vec<u64> = Vec::new();
            let mut contended_bare: Vec<u64> = Vec::new();
            for (i, (faddr, code)) in stack.raw.iter().enumerate() {
                let Ok(fv) = self.frame_values(*faddr, *code, i == 0) else { continue };
                let mut candidates: Vec<(u64, bool)> = fv.stack.iter().map(|v| (*v, true)).collect();
                candidates.extend(fv.locals.iter().map(|(_, v)| (*v, false)));
                for (v, on_stack) in candidates {
                    // Any reference can be the lock a blocked thread is acquiring (matched by its
                    // semaphore below), but only `with` evidence on the stack means "held".
                    let Some((kind, lock)) = self.lock_of(v) else { continue };
                    let with_evidence = on_stack && self.lock_held_by_with(v).is_some();
                    if !kind.is_thread() {
                        continue;
                    }
                    let Ok(st) = self.thread_lock_state(lock, kind) else { continue };
                    locks.entry(lock).or_insert_with(|| LockRef {
                        kind: kind.label().into(),
                        address: format!("0x{lock:x}"),
                        name: self.name_for(lock, &fv).or_else(|| self.name_for(v, &fv)),
                    });
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
                if self.lock_kind(w) == Some(LockKind::RLock) && held.contains(&w) {
                    waits_for = None;
                } else {
                    held.retain(|l| *l != w);
                }
            }
            let label = format!("thread {tid} ({})", name.clone().unwrap_or_else(|| "?".into()));
            let idle = matches!(os.state, Some('S') | Some('D'));
            let parked = if idle && waits_for.is_none() {
                Some(match stack.frames.first() {
                    Some(f) => format!("blocked in {} ({}:{})", f.function, f.file, f.line),
                    None => "blocked".into(),
                })
            } else {
                None
            };
            actors.push(Actor {
                id: ActorId::Thread(tid),
                label,
                waits_for,
                holds: held,
                parked,
                frames: stack.frames.clone(),
            });
        }
        Ok(ThreadFacts { actors, locks })
    }
}
