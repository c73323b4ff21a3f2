//! Offsets of asyncio's C objects (Future/Task, FutureIter), coroutine objects and per-thread
//! asyncio state: layout data for 3.8–3.13, the target's AsyncioDebug table for 3.14+.

use crate::runtime::layout_file::LayoutFile;
use crate::runtime::version::PyVersion;

/// 3.14+ `Py_AsyncioModuleDebugOffsets` (13 × u64), read from the `.AsyncioDebug` section.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsyncioDebug {
    pub task_size: u64,
    pub task_name: u64,
    pub task_awaited_by: u64,
    pub task_is_task: u64,
    pub task_awaited_by_is_set: u64,
    pub task_coro: u64,
    pub task_node: u64,
    pub interp_size: u64,
    pub interp_tasks_head: u64,
    pub thread_size: u64,
    pub thread_running_loop: u64,
    pub thread_running_task: u64,
    pub thread_tasks_head: u64,
}

impl AsyncioDebug {
    pub fn parse(b: &[u8]) -> Option<AsyncioDebug> {
        let v: Vec<u64> = crate::source::words(b).take(13).collect();
        if v.len() < 13 || v[0] == 0 || v[0] > 4096 || v[5] >= v[0] {
            return None;
        }
        Some(AsyncioDebug {
            task_size: v[0],
            task_name: v[1],
            task_awaited_by: v[2],
            task_is_task: v[3],
            task_awaited_by_is_set: v[4],
            task_coro: v[5],
            task_node: v[6],
            interp_size: v[7],
            interp_tasks_head: v[8],
            thread_size: v[9],
            thread_running_loop: v[10],
            thread_running_task: v[11],
            thread_tasks_head: v[12],
        })
    }
}

/// How a 3.8–3.10 frame object says it is executing right now (3.11+ keep the state in the
/// coroutine: `gen_frame_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRunning {
    /// 3.8–3.9 `f_executing`: a char, non-zero while the frame runs.
    Executing,
    /// 3.10 `f_state`: a signed char, FRAME_EXECUTING = 0.
    State,
}

/// How a suspended coroutine's awaited object ("yield from" target) is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YieldFrom {
    /// 3.8–3.9: next opcode is YIELD_FROM, value at `f_stacktop[-1]`.
    StackTop,
    /// 3.10: next opcode YIELD_FROM, value at `f_valuestack[f_stackdepth - 1]`.
    StackDepth,
    /// 3.11–3.12: next code unit is RESUME (any of `opcodes`) with oparg >= 2; value at `localsplus[stacktop-1]`.
    Resume { opcodes: [u8; 2] },
    /// 3.13: frame state SUSPENDED_YIELD_FROM; value at `localsplus[stacktop-1]`.
    StateIndex,
    /// 3.14+: frame state SUSPENDED_YIELD_FROM; value at `stackpointer[-depth]` (tagged).
    StatePointer { depth: u64 },
}

#[derive(Debug, Clone)]
pub struct AsyncioOffsets {
    pub fut_loop: u64,
    pub fut_callback0: u64,
    pub fut_callbacks: u64,
    pub fut_state: u64,
    pub task_fut_waiter: u64,
    pub task_coro: u64,
    pub task_name: u64,
    pub task_read_size: u64,
    pub fut_awaited_by: Option<u64>,
    pub fut_awaited_by_is_set: Option<u64>,
    pub futureiter_future: u64,
    /// 3.8–3.10: `cr_frame` pointer
    pub gen_frame: Option<u64>,
    /// 3.11+: embedded interpreter frame
    pub gen_iframe: Option<u64>,
    pub gen_frame_state: Option<u64>,
    /// frame-state value meaning "suspended in yield from/await" (3.13+) or "suspended" (3.11–3.12)
    pub state_suspended: i8,
    /// states at or above this are finished (COMPLETED/CLEARED), or exactly CLEARED for 3.15
    pub state_finished: Vec<i8>,
    pub state_created: i8,
    pub yield_from: YieldFrom,
    // PyFrameObject (3.8–3.10)
    pub f_valuestack: u64,
    pub f_stacktop: Option<u64>,
    pub f_stackdepth: Option<u64>,
    /// 3.8–3.9: `f_executing` (non-zero while the frame runs); 3.10: `f_state` (0 = executing).
    pub f_running: Option<(u64, FrameRunning)>,
    /// 3.8–3.9: the coroutine's `gi_running`, set before its frame is entered (the window in
    /// which the value it is resumed with already sits on its stack).
    pub gen_running: Option<u64>,
    pub f_lasti: u64,
    pub f_code: u64,
    pub f_localsplus: u64,
    pub code_code: Option<u64>,
    // _PyInterpreterFrame (3.11+)
    pub if_stack: u64,
    pub if_localsplus: u64,
    pub if_instr: u64,
    /// 3.8–3.12: running-loop holder stored in the thread-state dict (`rl_loop` offset, None for 3.12: the loop itself)
    pub tstate_dict_loop: Option<Option<u64>>,
    /// 3.13: `_PyThreadStateImpl.asyncio_running_loop`
    pub impl_running_loop: Option<u64>,
    pub debug: Option<AsyncioDebug>,
    /// `PyModuleObject.md_state`
    pub md_state: u64,
    pub set_mask: u64,
    pub set_table: u64,
    pub weakref_object: u64,
}

impl AsyncioOffsets {
    pub fn resolve(
        v: PyVersion,
        ft: bool,
        file: Option<&LayoutFile>,
        debug: Option<AsyncioDebug>,
        dbgo: Option<&crate::runtime::debug_offsets::DebugOffsets>,
    ) -> AsyncioOffsets {
        let head = if ft { 16 } else { 0 };
        let f = |st: &str, fields: &[&str]| file.and_then(|l| fields.iter().find_map(|x| l.field(st, x)));
        let d = |k: &str| dbgo.and_then(|d| d.get(k));
        let en = |name: &str| file.and_then(|l| l.enum_value(name)).map(|x| x as i8);
        // Measured defaults (x86-64, GIL build; +16 per object field in free-threaded builds).
        let (d_state, d_waiter, d_coro, d_name) = match v.minor {
            8 => (72, 104, 112, 120),
            9 => (80, 144, 152, 160),
            10 => (88, 152, 160, 168),
            11 | 12 => (88, 128, 136, 144),
            13 => (96, 112, 120, 128),
            _ => (104, 120, 128, 136),
        };
        let (fut_state, task_fut_waiter, task_coro, task_name, fut_awaited_by, fut_awaited_by_is_set) = match debug {
            Some(dbg) => (
                dbg.task_is_task - 4,
                dbg.task_coro - 8,
                dbg.task_coro,
                dbg.task_name,
                Some(dbg.task_awaited_by),
                Some(dbg.task_awaited_by_is_set),
            ),
            None => (
                f("TaskObj", &["task_state", "fut_state"]).unwrap_or(d_state + head),
                f("TaskObj", &["task_fut_waiter"]).unwrap_or(d_waiter + head),
                f("TaskObj", &["task_coro"]).unwrap_or(d_coro + head),
                f("TaskObj", &["task_name"]).unwrap_or(d_name + head),
                f("TaskObj", &["fut_awaited_by"]),
                f("TaskObj", &["fut_awaited_by_is_set"]),
            ),
        };
        let task_read_size = [
            fut_state,
            task_fut_waiter,
            task_coro,
            task_name,
            fut_awaited_by.unwrap_or(0),
            fut_awaited_by_is_set.unwrap_or(0),
        ]
        .into_iter()
        .fold(0, u64::max)
            + 8;
        let (state_created, state_suspended, state_finished) = match v.minor {
            8..=10 => (0, 0, vec![]),
            11 | 12 => (en("FRAME_CREATED").unwrap_or(-2), en("FRAME_SUSPENDED").unwrap_or(-1), vec![1, 4]),
            13 | 14 => (
                en("FRAME_CREATED").unwrap_or(-3),
                en("FRAME_SUSPENDED_YIELD_FROM").unwrap_or(-1),
                vec![en("FRAME_COMPLETED").unwrap_or(1), en("FRAME_CLEARED").unwrap_or(4)],
            ),
            _ => (
                en("FRAME_CREATED").unwrap_or(0),
                en("FRAME_SUSPENDED_YIELD_FROM").unwrap_or(2),
                vec![en("FRAME_CLEARED").unwrap_or(5)],
            ),
        };
        let yield_from = match v.minor {
            8 | 9 => YieldFrom::StackTop,
            10 => YieldFrom::StackDepth,
            11 => YieldFrom::Resume { opcodes: [151, 150] },
            12 => YieldFrom::Resume { opcodes: [151, 240] },
            13 => YieldFrom::StateIndex,
            14 => YieldFrom::StatePointer { depth: 1 },
            _ => YieldFrom::StatePointer { depth: 2 },
        };
        let gen_iframe = if v.minor >= 11 {
            Some(
                d("gen_object.gi_iframe")
                    .or(f("PyGenObject", &["gi_iframe"]))
                    .unwrap_or(if v.minor == 11 { 80 } else { 72 } + head),
            )
        } else {
            None
        };
        let gen_frame_state = if v.minor >= 11 {
            Some(
                d("gen_object.gi_frame_state")
                    .or(f("PyGenObject", &["gi_frame_state"]))
                    .unwrap_or(if v.minor == 11 { 75 } else { 67 } + head),
            )
        } else {
            None
        };
        let tstate_dict_loop = match v.minor {
            8..=11 => Some(Some(f("PyRunningLoopHolder", &["rl_loop"]).unwrap_or(16))),
            12 => Some(None),
            _ => None,
        };
        let impl_running_loop = match (v.minor, debug) {
            // The first field after the embedded PyThreadState: its size comes from the target's
            // debug offsets, which also covers 3.13 patch releases that grew PyThreadState.
            (13, _) => d("thread_state.size").or(f("_PyThreadStateImpl", &["asyncio_running_loop"])).or(Some(304)),
            (_, Some(dbg)) => Some(dbg.thread_running_loop),
            _ => None,
        };
        AsyncioOffsets {
            fut_loop: f("TaskObj", &["task_loop", "fut_loop"]).unwrap_or(16 + head),
            fut_callback0: f("TaskObj", &["task_callback0", "fut_callback0"]).unwrap_or(24 + head),
            fut_callbacks: f("TaskObj", &["task_callbacks", "fut_callbacks"]).unwrap_or(40 + head),
            fut_state,
            task_fut_waiter,
            task_coro,
            task_name,
            task_read_size,
            fut_awaited_by,
            fut_awaited_by_is_set,
            futureiter_future: f("futureiterobject", &["future"]).unwrap_or(16 + head),
            gen_frame: if v.minor <= 10 { Some(f("PyGenObject", &["gi_frame"]).unwrap_or(16)) } else { None },
            gen_iframe,
            gen_frame_state,
            state_suspended,
            state_finished,
            state_created,
            yield_from,
            f_valuestack: f("PyFrameObject", &["f_valuestack"]).unwrap_or(64),
            f_stacktop: f("PyFrameObject", &["f_stacktop"]).or(if v.minor <= 9 { Some(72) } else { None }),
            f_stackdepth: f("PyFrameObject", &["f_stackdepth"]).or(if v.minor == 10 { Some(80) } else { None }),
            gen_running: if v.minor <= 9 { Some(f("PyGenObject", &["gi_running"]).unwrap_or(24)) } else { None },
            f_running: match v.minor {
                8 | 9 => Some((f("PyFrameObject", &["f_executing"]).unwrap_or(116), FrameRunning::Executing)),
                10 => Some((f("PyFrameObject", &["f_state"]).unwrap_or(108), FrameRunning::State)),
                _ => None,
            },
            f_lasti: f("PyFrameObject", &["f_lasti"]).unwrap_or(if v.minor == 10 { 96 } else { 104 }),
            f_code: f("PyFrameObject", &["f_code"]).unwrap_or(32),
            f_localsplus: f("PyFrameObject", &["f_localsplus"]).unwrap_or(if v.minor == 10 { 352 } else { 360 }),
            code_code: f("PyCodeObject", &["co_code"]).or(if v.minor <= 10 { Some(48) } else { None }),
            if_stack: d("interpreter_frame.stackpointer")
                .or(f("_PyInterpreterFrame", &["stackpointer", "stacktop"]))
                .unwrap_or(64),
            if_localsplus: d("interpreter_frame.localsplus")
                .or(f("_PyInterpreterFrame", &["localsplus"]))
                .unwrap_or(if v.minor >= 14 { 80 } else { 72 }),
            if_instr: d("interpreter_frame.instr_ptr")
                .or(f("_PyInterpreterFrame", &["instr_ptr", "prev_instr"]))
                .unwrap_or(56),
            tstate_dict_loop,
            impl_running_loop,
            debug,
            md_state: f("PyModuleObject", &["md_state"]).unwrap_or(if v.minor >= 15 { 24 } else { 32 } + head),
            set_mask: d("set_object.mask").or(f("PySetObject", &["mask"])).unwrap_or(32 + head),
            set_table: d("set_object.table").or(f("PySetObject", &["table"])).unwrap_or(40 + head),
            weakref_object: f("PyWeakReference", &["wr_object"]).unwrap_or(16 + head),
        }
    }
}
