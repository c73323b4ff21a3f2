//! Where the tasks are: the `_all_tasks` WeakSet (3.8–3.11), `_scheduled_tasks` + `_eager_tasks`
//! (3.12–3.13), per-thread and per-interpreter linked lists plus the module state's sets (3.14+).

use super::Asyncio;
use crate::attach::{Buf, MemError, MemResult};
use crate::runtime::threads::InterpInfo;
use std::collections::HashSet;

/// Most tasks enumerated per source (CPython's own reader stops at 65,536 list nodes; we go further).
pub const MAX_TASKS: usize = 2_000_000;

impl Asyncio<'_> {
    /// Addresses of all live tasks of an interpreter, each once, in discovery order.
    pub fn task_addresses(&self, interp: &InterpInfo, tstates: &[u64]) -> MemResult<Vec<u64>> {
        let py = self.py;
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        let mut add = |t: u64, out: &mut Vec<u64>| {
            if t != 0 && seen.insert(t) {
                out.push(t);
            }
        };
        if let Some(dbg) = self.off.debug {
            for ts in tstates {
                for t in self.walk_llist(ts + dbg.thread_tasks_head, dbg.task_node)? {
                    add(t, &mut out);
                }
            }
            for t in self.walk_llist(interp.addr + dbg.interp_tasks_head, dbg.task_node)? {
                add(t, &mut out);
            }
            // Tasks that are not asyncio.Task subclasses live in the C module's state.
            if let Some(m) = py.find_module(interp.addr, "_asyncio")? {
                let state = py.mem().read_u64(m + self.off.md_state)?;
                if state != 0 {
                    let ws = py.mem().read_u64(state + 48)?;
                    let eager = py.mem().read_u64(state + 56)?;
                    for t in self.weakset_members(ws).unwrap_or_default() {
                        add(t, &mut out);
                    }
                    for t in self.set_members(eager).unwrap_or_default() {
                        add(t, &mut out);
                    }
                }
            }
            // Pure-Python tasks (no `_asyncio`) register in asyncio.tasks' own sets.
            if let Some(tasks_mod) = py.find_module(interp.addr, "asyncio.tasks")? {
                let md = py.module_dict(tasks_mod)?;
                for (name, weak) in [("_scheduled_tasks", true), ("_eager_tasks", false)] {
                    let Some(obj) = py.dict_get(md, name)? else { continue };
                    let members = if weak { self.weakset_members(obj) } else { self.set_members(obj) };
                    for t in members.unwrap_or_default() {
                        add(t, &mut out);
                    }
                }
            }
            return Ok(out);
        }
        let Some(tasks_mod) = py.find_module(interp.addr, "asyncio.tasks")? else { return Ok(out) };
        let md = py.module_dict(tasks_mod)?;
        for (name, weak) in [("_all_tasks", true), ("_scheduled_tasks", true), ("_eager_tasks", false)] {
            let Some(obj) = py.dict_get(md, name)? else { continue };
            let members = if weak { self.weakset_members(obj)? } else { self.set_members(obj)? };
            for t in members {
                add(t, &mut out);
            }
        }
        Ok(out)
    }

    /// Intrusive circular list `llist_node {next, prev}` whose nodes sit `node_off` into each task.
    fn walk_llist(&self, head: u64, node_off: u64) -> MemResult<Vec<u64>> {
        let mem = self.py.mem();
        let mut out = Vec::new();
        let mut node = mem.read_u64(head)?;
        if node == 0 {
            return Ok(out); // list never initialised (thread never used asyncio)
        }
        let mut seen = HashSet::new();
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
