//! Interpreters and their thread states: the interpreter list, each thread-state list, thread
//! identity (ident, native TID), who holds the GIL and whether a thread is attached.

use super::PyProcess;
use crate::source::{Buf, MemError, MemResult};
use std::collections::HashSet;

pub const MAX_INTERPRETERS: usize = 256;
pub const MAX_THREADS: usize = 16_384;

#[derive(Debug, Clone)]
pub struct InterpInfo {
    pub addr: u64,
    pub id: i64,
    /// Address of the GIL struct this interpreter uses.
    pub gil: Option<u64>,
    pub gil_locked: bool,
    pub gil_holder: u64,
    pub gil_switch_number: Option<u64>,
    /// Free-threaded builds: whether the GIL is currently enabled. GIL builds: always true.
    pub gil_enabled: bool,
}

impl InterpInfo {
    /// Whether a futex address lies in this interpreter's GIL (its mutex or condition variable):
    /// a detached thread sleeping there is waiting for the GIL.
    pub fn is_gil_futex(&self, futex: Option<u64>, gil_size: u64) -> bool {
        matches!((futex, self.gil), (Some(f), Some(g)) if f >= g && f < g.wrapping_add(gil_size))
    }
}

#[derive(Debug, Clone)]
pub struct ThreadRecord {
    pub interp_id: i64,
    pub tstate: u64,
    pub ident: u64,
    pub native_tid: Option<i32>,
    pub holds_gil: bool,
    /// 3.15: the thread asked for the GIL and is waiting for it.
    pub gil_requested: bool,
    /// 3.12+: attached to the interpreter (running Python or holding the GIL).
    pub active: Option<bool>,
    /// 3.13+ `tstate->state`: 0 detached, 1 attached, 2 suspended (free-threaded builds).
    pub py_state: Option<i32>,
    pub top_frame: u64,
    /// 3.8–3.10: tstate->dict, used for asyncio's running loop later.
    pub dict: u64,
}

impl PyProcess {
    pub fn interpreters(&self) -> MemResult<Vec<InterpInfo>> {
        let o = &self.off;
        let mem = self.mem();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut addr = mem.read_u64(self.runtime_addr + o.rt_interpreters_head)?;
        while addr != 0 {
            if out.len() >= MAX_INTERPRETERS || !seen.insert(addr) {
                return Err(MemError::Other("interpreter list loops or is too long".into()));
            }
            let id = mem.read_i64(addr + o.interp_id)?;
            let gil = match (o.interp_ceval_gil, o.rt_gil) {
                (Some(p), _) => Some(mem.read_u64(addr + p)?).filter(|g| *g != 0),
                (None, Some(g)) => Some(self.runtime_addr + g),
                _ => None,
            };
            let (mut gil_locked, mut gil_holder, mut sw, mut enabled) = (false, 0, None, true);
            if let Some(g) = gil {
                let b = mem.read_vec(g, o.gil_size.max(40) as usize)?;
                gil_locked = b.i32_at(o.gil_locked) != 0;
                gil_holder = b.u64_at(o.gil_last_holder);
                sw = o.gil_switch_number.map(|s| b.u64_at(s));
                if let Some(e) = o.gil_enabled {
                    enabled = b.i32_at(e) != 0;
                }
            }
            out.push(InterpInfo { addr, id, gil, gil_locked, gil_holder, gil_switch_number: sw, gil_enabled: enabled });
            addr = mem.read_u64(addr + o.interp_next)?;
        }
        Ok(out)
    }

    /// 3.8–3.11: the thread state that holds the GIL right now (NULL when released).
    pub fn tstate_current(&self) -> MemResult<Option<u64>> {
        match self.off.rt_tstate_current {
            Some(off) => Ok(Some(self.mem().read_u64(self.runtime_addr + off)?)),
            None => Ok(None),
        }
    }

    pub fn threads_of(&self, interp: &InterpInfo, current: Option<u64>) -> MemResult<Vec<ThreadRecord>> {
        let o = &self.off;
        let mem = self.mem();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut ts = mem.read_u64(interp.addr + o.interp_threads_head)?;
        while ts != 0 {
            if out.len() >= MAX_THREADS || !seen.insert(ts) {
                return Err(MemError::Other("thread list loops or is too long".into()));
            }
            let b = mem.read_vec(ts, o.ts_read_size as usize)?;
            if b.u64_at(o.ts_interp) != interp.addr {
                return Err(MemError::Other(format!("thread state 0x{ts:x} belongs to another interpreter")));
            }
            let ident = b.u64_at(o.ts_thread_id);
            let native_tid = o.ts_native_thread_id.map(|f| b.i32_at(f)).filter(|t| *t > 0);
            let status = o.ts_status.map(|f| b.u32_at(f));
            let active = match (status, o.status_active_bit) {
                (Some(s), Some(bit)) => Some((s >> bit) & 1 == 1),
                _ => None,
            };
            // Who holds the GIL: the thread's own flag where it has one (3.13+), else the GIL struct
            // (3.12) or the runtime's current tstate (3.8–3.11).
            let holds_gil = if !interp.gil_enabled {
                false
            } else if let Some(f) = o.ts_holds_gil {
                b.i32_at(f) != 0
            } else if let (Some(s), Some(bit)) = (status, o.status_holds_gil_bit) {
                (s >> bit) & 1 == 1
            } else if let Some(cur) = current {
                cur == ts
            } else {
                interp.gil_locked && interp.gil_holder == ts
            };
            let gil_requested = o.ts_gil_requested.map(|f| b.i32_at(f) != 0).unwrap_or(false);
            let py_state = o.ts_state.map(|f| b.i32_at(f));
            let top_frame = if let Some(f) = o.ts_current_frame {
                b.u64_at(f)
            } else if let Some(f) = o.ts_frame {
                b.u64_at(f)
            } else if let (Some(cf), Some(cur)) = (o.ts_cframe, o.cframe_current_frame) {
                let cframe = b.u64_at(cf);
                if cframe == 0 {
                    0
                } else {
                    mem.read_u64(cframe + cur)?
                }
            } else {
                0
            };
            let dict = o.ts_dict.map(|f| b.u64_at(f)).unwrap_or(0);
            out.push(ThreadRecord {
                interp_id: interp.id,
                tstate: ts,
                ident,
                native_tid,
                holds_gil,
                gil_requested,
                active,
                py_state,
                top_frame,
                dict,
            });
            ts = b.u64_at(o.ts_next);
        }
        Ok(out)
    }
}

/// Kernel view of one thread: scheduler state letter and, when blocked in futex(2), its address.
#[derive(Debug, Clone, Default)]
pub struct OsThreadState {
    pub state: Option<char>,
    pub futex_addr: Option<u64>,
    pub comm: Option<String>,
}

pub fn os_thread_state(pid: i32, tid: i32) -> OsThreadState {
    let base = format!("/proc/{pid}/task/{tid}");
    let state = std::fs::read_to_string(format!("{base}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()));
    // `syscall` is "202 0xUADDR ..." while blocked in futex; needs the same permission as reading memory.
    let futex_addr = std::fs::read_to_string(format!("{base}/syscall")).ok().and_then(|s| {
        let mut it = s.split_whitespace();
        if it.next()? != "202" {
            return None;
        }
        u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()
    });
    let comm = std::fs::read_to_string(format!("{base}/comm")).ok().map(|s| s.trim_end_matches('\n').to_string());
    OsThreadState { state, futex_addr, comm }
}

/// Kernel thread ids of the process.
pub fn os_thread_ids(pid: i32) -> Vec<i32> {
    let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}
