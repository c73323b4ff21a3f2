//! Where the tasks are: the `_all_tasks` WeakSet (3.8–3.11), `_scheduled_tasks` + `_eager_tasks`
//! (3.12–3.13), per-thread and per-interpreter linked lists plus the module state's sets (3.14+).

use super::Asyncio;
use crate::runtime::threads::InterpInfo;
use crate::source::{Buf, MemError, MemResult};
use rustc_hash::FxHashSet as HashSet;

/// Most tasks enumerated per source (CPython's own reader stops at 65,536 list nodes; we go further).
pub const MAX_TASKS: usize = 2_000_000;

/// Task addresses found in an interpreter's registries.
#[derive(Debug, Default)]
pub struct FoundTasks {
    pub tasks: Vec<u64>,
    /// Registries (lists, sets) that could not be read, or only in part.
    pub unreadable: u64,
}

impl Asyncio<'_> {
    /// Addresses of all live tasks of an interpreter, each once, in discovery order. Each registry
    /// is read on its own: with `tolerate`, one unreadable registry is counted and the others kept.
    pub fn task_addresses(&self, interp: &InterpInfo, tstates: &[u64], tolerate: bool) -> MemResult<FoundTasks> {
        let py = self.py;
        let mut seen = HashSet::default();
        let mut found = FoundTasks::default();
        let mut take = |r: MemResult<Vec<u64>>, found: &mut FoundTasks| -> MemResult<()> {
            match r {
                Ok(v) => {
                    for t in v {
                        if t != 0 && seen.insert(t) {
                            found.tasks.push(t);
                        }
                    }
                    Ok(())
                }
                Err(e) if e.is_fatal() || !tolerate => Err(e),
                Err(_) => {
                    found.unreadable += 1;
                    Ok(())
                }
            }
        };
        let module_sets = |module: &str, names: &[(&str, bool)]| -> MemResult<Vec<u64>> {
            let mut out = Vec::new();
            let Some(m) = py.find_module(interp.addr, module)? else { return Ok(out) };
            let md = py.module_dict(m)?;
            for (name, weak) in names {
                let Some(obj) = py.dict_get(md, name)? else { continue };
                out.extend(if *weak { self.weakset_members(obj)? } else { self.set_members(obj)? });
            }
            Ok(out)
        };
        if let Some(dbg) = self.off.debug {
            for ts in tstates {
                take(self.walk_llist(ts + dbg.thread_tasks_head, dbg.task_node), &mut found)?;
            }
            take(self.walk_llist(interp.addr + dbg.interp_tasks_head, dbg.task_node), &mut found)?;
            // Tasks that are not asyncio.Task subclasses live in the C module's state.
            let module_state = || -> MemResult<Vec<u64>> {
                let mut out = Vec::new();
                if let Some(m) = py.find_module(interp.addr, "_asyncio")? {
                    let state = py.mem().read_u64(m + self.off.md_state)?;
                    if state != 0 {
                        out.extend(self.weakset_members(py.mem().read_u64(state + 48)?)?);
                        out.extend(self.set_members(py.mem().read_u64(state + 56)?)?);
                    }
                }
                Ok(out)
            };
            take(module_state(), &mut found)?;
            // Pure-Python tasks (no `_asyncio`) register in asyncio.tasks' own sets.
            take(module_sets("asyncio.tasks", &[("_scheduled_tasks", true), ("_eager_tasks", false)]), &mut found)?;
            return Ok(found);
        }
        take(
            module_sets("asyncio.tasks", &[("_all_tasks", true), ("_scheduled_tasks", true), ("_eager_tasks", false)]),
            &mut found,
        )?;
        Ok(found)
    }

    /// Intrusive circular list `llist_node {next, prev}` whose nodes sit `node_off` into each task.
    fn walk_llist(&self, head: u64, node_off: u64) -> MemResult<Vec<u64>> {
        let mem = self.py.mem();
        let mut out = Vec::new();
        let mut node = mem.read_u64(head)?;
        if node == 0 {
            return Ok(out); // list never initialised (thread never used asyncio)
        }
        let mut seen = HashSet::default();
        while node != head {
            if node == 0 || out.len() >= MAX_TASKS || !seen.insert(node) {
                return Err(MemError::Other("task list is corrupt or changing".into()));
            }
            out.push(node.wrapping_sub(node_off));
            node = mem.read_u64(node)?;
        }
        Ok(out)
    }

    /// Live referents of a `weakref.WeakSet` (its `data` set of weak references).
    pub fn weakset_members(&self, ws: u64) -> MemResult<Vec<u64>> {
        let py = self.py;
        let Some(data) = py.getattr(ws, "data")? else { return Ok(Vec::new()) };
        let refs = self.set_members(data)?;
        let mut out = Vec::with_capacity(refs.len());
        let none = py.types.none;
        // One batched read of every weakref's referent.
        let mut bufs: Vec<[u8; 8]> = vec![[0u8; 8]; refs.len()];
        {
            let mut reqs: Vec<(u64, &mut [u8])> =
                refs.iter().zip(bufs.iter_mut()).map(|(r, b)| (r + self.off.weakref_object, &mut b[..])).collect();
            let res = py.mem().read_many(&mut reqs);
            for (i, r) in res.into_iter().enumerate() {
                if r.is_err() {
                    bufs[i] = [0; 8];
                }
            }
        }
        for b in bufs {
            let obj = u64::from_le_bytes(b);
            if obj != 0 && Some(obj) != none {
                out.push(obj);
            }
        }
        Ok(out)
    }

    /// Keys of a `set` (skipping empty and deleted slots).
    pub fn set_members(&self, set: u64) -> MemResult<Vec<u64>> {
        let py = self.py;
        let mask = py.mem().read_u64(set + self.off.set_mask)?;
        if mask > (1 << 26) || !(mask + 1).is_power_of_two() {
            return Err(MemError::Other("set mask out of range".into()));
        }
        let table = py.mem().read_u64(set + self.off.set_table)?;
        let raw = py.mem().read_vec(table, (mask as usize + 1) * 16)?;
        let dummy = py.types.set_dummy;
        Ok(raw.chunks_exact(16).map(|c| c.u64_at(0)).filter(|k| *k != 0 && Some(*k) != dummy).collect())
    }
}
