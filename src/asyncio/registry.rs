//! Where the tasks are: the `_all_tasks` WeakSet (3.8–3.11), `_scheduled_tasks` + `_eager_tasks`
//! (3.12–3.13), per-thread and per-interpreter linked lists plus the module state's sets (3.14+).

use super::Asyncio;
use crate::runtime::threads::InterpInfo;
use crate::source::{Buf, MemError, MemResult, Memory};
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
        // Each task once: a linked list holds no task twice (a node seen twice is a cycle, an
        // error), so the first list is taken as it is; a set of the tasks so far is built only
        // when a second source has any.
        let mut seen: Option<HashSet<u64>> = None;
        let mut found = FoundTasks::default();
        let mut take = |r: MemResult<Vec<u64>>, unique: bool, found: &mut FoundTasks| -> MemResult<()> {
            match r {
                Ok(v) if unique && found.tasks.is_empty() && seen.is_none() => {
                    found.tasks = v;
                    found.tasks.retain(|t| *t != 0);
                    Ok(())
                }
                Ok(v) => {
                    if v.is_empty() {
                        return Ok(());
                    }
                    let seen = seen.get_or_insert_with(|| found.tasks.iter().copied().collect());
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
                take(walk_llist(py.mem(), ts + dbg.thread_tasks_head, dbg.task_node), true, &mut found)?;
            }
            take(walk_llist(py.mem(), interp.addr + dbg.interp_tasks_head, dbg.task_node), true, &mut found)?;
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
            take(module_state(), false, &mut found)?;
            // Pure-Python tasks (no `_asyncio`) register in asyncio.tasks' own sets.
            take(
                module_sets("asyncio.tasks", &[("_scheduled_tasks", true), ("_eager_tasks", false)]),
                false,
                &mut found,
            )?;
            return Ok(found);
        }
        take(
            module_sets("asyncio.tasks", &[("_all_tasks", true), ("_scheduled_tasks", true), ("_eager_tasks", false)]),
            false,
            &mut found,
        )?;
        Ok(found)
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

/// Intrusive circular list `llist_node {next, prev}` whose nodes sit `node_off` into each task.
fn walk_llist(mem: &dyn Memory, head: u64, node_off: u64) -> MemResult<Vec<u64>> {
    let mut out = Vec::new();
    let mut node = mem.read_u64(head)?;
    if node == 0 {
        return Ok(out); // list never initialised (thread never used asyncio)
    }
    // A node seen twice is a cycle that misses the head (Brent's method: the tortoise jumps
    // to the hare at powers of two; no set of 100,000 nodes to fill).
    let (mut tortoise, mut power, mut steps) = (0u64, 1usize, 0usize);
    while node != head {
        if node == 0 || out.len() >= MAX_TASKS || node == tortoise {
            return Err(MemError::Other("task list is corrupt or changing".into()));
        }
        steps += 1;
        if steps == power {
            tortoise = node;
            power = power.saturating_mul(2);
            steps = 0;
        }
        out.push(node.wrapping_sub(node_off));
        node = mem.read_u64(node)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SyntheticMemory;

    /// Nodes at 0x1000 + 0x100 * i, each `next` pointing where `links` says (0: the head).
    fn list(links: &[u64]) -> SyntheticMemory {
        let mut m = SyntheticMemory::new();
        let mut bytes = vec![0u8; 0x100 * (links.len() + 1)];
        for (i, next) in links.iter().enumerate() {
            let to = 0x1000 + 0x100 * next;
            bytes[0x100 * i..][..8].copy_from_slice(&to.to_le_bytes());
        }
        m.map(0x1000, bytes);
        m
    }

    #[test]
    fn linked_list_in_order_and_cycles_are_errors() {
        // head (node 0) -> 1 -> 2 -> 3 -> head; tasks sit 0x10 before their nodes.
        let m = list(&[1, 2, 3, 0]);
        assert_eq!(walk_llist(&m, 0x1000, 0x10).unwrap(), vec![0x10f0, 0x11f0, 0x12f0]);
        // An empty list points at itself.
        assert!(walk_llist(&list(&[0]), 0x1000, 0x10).unwrap().is_empty());
        // Cycles that miss the head, of every length up to 40, and a node pointing at itself.
        for len in 1..=40u64 {
            let mut links: Vec<u64> = (1..=41).collect();
            links[40] = 41 - len;
            let m = list(&links);
            let r = walk_llist(&m, 0x1000, 0x10);
            assert!(matches!(r, Err(MemError::Other(_))), "cycle of {len}: {r:?}");
        }
        // A null link and an unmapped one are errors too.
        assert!(walk_llist(&list(&[1, 2]), 0x1000, 0).is_err());
    }
}
