//! model: the record of one look at a process (`taskspy/1`) — threads, frames, tasks, locks, loops,
//! native thread state, findings. Plain data every layer speaks; it reads nothing and imports nothing.

pub mod findings;
pub mod frame;
pub mod processes;
pub mod sample;
pub mod time;

pub use findings::{Evidence, Finding, LockRef};
pub use frame::{Frame, FrameIdentity};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub const SCHEMA: &str = "taskspy/1";

/// Keys are a contract: they are only ever added (with defaults, so older files still load).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: String,
    pub pid: i32,
    pub captured_at: String,
    pub python: PythonInfo,
    pub threads: Vec<ThreadSnap>,
    pub tasks: Vec<TaskSnap>,
    pub findings: Vec<Finding>,
    /// One entry per interpreter.
    #[serde(default)]
    pub interpreters: Vec<InterpSnap>,
    /// How this record was taken (source, pause, which facts it holds, whether it was cut).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureInfo>,
    /// The process's command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Every threading/asyncio lock a thread or task holds or waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<LockSnap>,
    /// Every event loop that has tasks or a thread running it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loops: Vec<LoopSnap>,
    /// The PID as the target's own PID namespace numbers it (a container read from the host), when
    /// it differs from `pid` (the reader's numbering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_pid: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureInfo {
    /// "live" or "core".
    pub source: String,
    /// The core file read (source "core").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<String>,
    /// The target was stopped for the read (`--blocking`, or already stopped, or a core).
    #[serde(default)]
    pub paused: bool,
    /// Lock facts (threads/tasks `holds_locks`/`waits_for_lock`, `locks`) were collected.
    #[serde(default)]
    pub lock_facts: bool,
    /// Wall time of the read, milliseconds.
    #[serde(default)]
    pub read_ms: f64,
    /// How long taskspy held the target stopped (`--blocking`), milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_ms: Option<f64>,
    /// `--blocking`: bytes of writable memory copied in the pause and decoded after resuming
    /// (absent when the objects were read one by one while the target was stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_bytes: Option<u64>,
    /// The target was already stopped (SIGSTOP, a debugger) and was left stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub already_stopped: bool,
    /// Why the read stopped early (deadline, Ctrl-C); what was read is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<String>,
    /// Objects (threads' stacks, tasks, registry entries) that could not be read and are marked
    /// with an `error` where they appear.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PythonInfo {
    pub version: String,
    pub executable: String,
    pub free_threaded: bool,
    pub gil_enabled: bool,
    /// The shared libpython, when the runtime lives in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
    /// Free-threaded builds with the GIL on: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gil_reason: Option<GilReason>,
}

/// Why a free-threaded build runs with the GIL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GilReason {
    /// "configuration" (`PYTHON_GIL=1`, `-X gil=1`), "extension_modules" (re-enabled at run time by
    /// importing a module without free-threading support) or "unknown".
    pub cause: String,
    /// In words, e.g. "PYTHON_GIL=1 in the environment".
    pub detail: String,
    /// Loaded extension modules that need the GIL (no `Py_mod_gil = Py_MOD_GIL_NOT_USED`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<GilModuleRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GilModuleRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterpSnap {
    pub id: i64,
    pub gil_held: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gil_holder_tid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gil_switch_number: Option<u64>,
    /// A stop-the-world pause is in progress (free-threaded builds: GC, fork...).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub world_stopped: bool,
    /// The thread that asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world_stopped_by: Option<i32>,
}

/// One asyncio task (pending tasks only).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskSnap {
    /// Address of the task object, hex.
    pub id: Text,
    pub name: Text,
    /// pending | done | cancelled
    pub state: Text,
    /// Native TID of the thread whose event loop runs the task (null if unknown).
    pub thread: Option<i32>,
    pub interpreter: i64,
    /// The task's coroutine chain, innermost first.
    /// Shared: repeated samples and tree nodes hand the same frames on without copying them.
    pub coroutine_stack: std::sync::Arc<[Frame]>,
    /// Tasks this task awaits (directly, via gather, or as TaskGroup parent).
    pub awaiting: std::sync::Arc<[Text]>,
    /// Tasks awaiting this one (same meaning as CPython 3.14's awaited_by).
    pub awaited_by: std::sync::Arc<[Text]>,
    pub waiting_on: WaitingOn,
    /// Where the task is suspended: innermost coroutine's code object and instruction offset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub await_point: Option<AwaitPoint>,
    /// The event loop the task belongs to, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_loop: Option<Text>,
    /// Locks (addresses, see `locks`) held through `async with` in the task's coroutines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds_locks: Vec<Text>,
    /// The lock the task is blocked acquiring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for_lock: Option<Text>,
    /// Why (part of) this task could not be read; the rest of the entry is what could be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds the task has been at its current await point (known when several samples were taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AwaitPoint {
    /// Code object of the innermost coroutine frame, hex.
    pub code: Text,
    /// Instruction offset in it (bytes on 3.8–3.9, code units from 3.10).
    pub offset: i64,
    /// The object awaited there (future, task, gather), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaited: Option<Text>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WaitingOn {
    /// task | gather | taskgroup | future | lock | event | condition | semaphore | queue | sleep | unknown
    pub kind: Text,
    /// The future the task is blocked on (`_fut_waiter`), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future: Option<Text>,
    /// The asyncio primitive (Lock, Event, Queue...) waited on, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Text>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<Text>,
    /// Not blocked on anything: ready to run or running.
    #[serde(default)]
    pub runnable: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadState {
    Running,
    Idle,
    WaitingGil,
    #[default]
    Unknown,
}

impl ThreadState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ThreadState::Running => "running",
            ThreadState::Idle => "idle",
            ThreadState::WaitingGil => "waiting_gil",
            ThreadState::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ThreadSnap {
    /// Kernel thread id (null when it cannot be told, e.g. a thread state not yet bound).
    pub tid: Option<i32>,
    /// `threading.get_ident()` of the thread.
    pub ident: u64,
    /// Python thread name from `threading` (null for threads it does not know).
    pub name: Option<String>,
    pub interpreter: i64,
    pub holds_gil: bool,
    pub state: ThreadState,
    pub frames: Vec<Frame>,
    /// Kernel thread name (`/proc/.../comm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// The stack was cut at taskspy's depth limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Why the stack could not be read (after retries); `frames` holds the readable part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the kernel knew of the thread when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<NativeState>,
    /// Locks (addresses, see `locks`) the thread holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds_locks: Vec<String>,
    /// The lock the thread is blocked acquiring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_for_lock: Option<String>,
    /// Free-threaded builds: the thread is attached to the interpreter (may run Python) rather
    /// than detached (blocked, or in C code that released it) or suspended (world stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<bool>,
    /// The thread id in the target's own PID namespace, when it differs from `tid` (the reader's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns_tid: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeState {
    /// Kernel scheduler state letter (R, S, D, T...), live processes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// System call the thread is in (202 = futex), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<i64>,
    /// futex(2) address the thread sleeps on, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub futex: Option<String>,
    /// Running (or runnable, or stopped outside a system call) rather than blocked in the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_cpu: Option<bool>,
}

impl NativeState {
    /// Blocked in the kernel (sleeping in a system call).
    pub fn blocked(&self) -> bool {
        self.on_cpu == Some(false)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockSnap {
    /// Address of the lock object, hex.
    pub address: String,
    /// threading.Lock | threading.RLock | asyncio.Lock | asyncio.Semaphore | asyncio.Condition
    #[serde(rename = "type")]
    pub kind: String,
    /// A variable or attribute name that refers to the lock, where one could be found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the lock is held (threading locks: read from the lock itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<bool>,
    /// RLock owner (TID), when held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_thread: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopSnap {
    /// Address of the event loop object, hex.
    pub address: String,
    pub interpreter: i64,
    /// TID of the thread running it (or that last ran it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<i32>,
    /// The loop is running on its thread right now.
    #[serde(default)]
    pub running: bool,
    /// The task the loop is executing at this moment (its `current_task`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_task: Option<String>,
    /// The loop's thread sits in the selector (waiting for I/O or timers): the loop is idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_selector: Option<bool>,
    /// Callbacks in the loop's ready queue (`len(loop._ready)`), where it can be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<u64>,
    /// The ready deque's mutation counter (one per append and per pop): with `ready` it tells
    /// how many callbacks ran between two snapshots, so how long queued work has waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_mutations: Option<u64>,
}

impl Snapshot {
    /// Threads by TID, for renderers and analyses.
    pub fn threads_by_tid(&self) -> HashMap<i32, &ThreadSnap> {
        self.threads.iter().filter_map(|t| Some((t.tid?, t))).collect()
    }

    /// Locks by address.
    pub fn locks_by_address(&self) -> HashMap<&str, &LockSnap> {
        self.locks.iter().map(|l| (l.address.as_str(), l)).collect()
    }

    /// Whether lock facts were collected (older snapshots lack them).
    pub fn has_lock_facts(&self) -> bool {
        self.capture.as_ref().map(|c| c.lock_facts).unwrap_or(false)
    }
}

/// Short text of a task record (ids, names, states): kept inline up to 24 bytes, so a
/// 10,000-task record is not 100,000 tiny heap allocations.
pub type Text = compact_str::CompactString;

/// "0x…" as a record's inline text (ids of tasks, loops, futures, code objects).
pub fn hex_id(addr: u64) -> Text {
    let mut buf = [0u8; 18];
    let digits = hex_digits(addr, &mut buf);
    // SAFETY: `hex_digits` writes only '0', 'x' and bytes of its digit table: ASCII, so UTF-8.
    // (Validating 80,000 ids per 10,000-task snapshot cost more than building them.)
    Text::new(unsafe { std::str::from_utf8_unchecked(digits) })
}

/// Write "0x…" for `addr` at the end of `buf` and return that part.
fn hex_digits(addr: u64, buf: &mut [u8; 18]) -> &[u8] {
    // Eight nibbles spread into eight bytes, most significant first, then made ASCII digits all
    // at once (a digit of 10 or more gets the distance from '9' + 1 to 'a' added): a few
    // instructions per half instead of a loop per digit (there are ~80,000 ids per 10,000 tasks).
    fn eight(x: u32) -> [u8; 8] {
        let x = x as u64;
        let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
        let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
        let x = (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
        let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        (x + 0x3030_3030_3030_3030 + letters * (b'a' - b'9' - 1) as u64).to_be_bytes()
    }
    buf[2..10].copy_from_slice(&eight((addr >> 32) as u32));
    buf[10..].copy_from_slice(&eight(addr as u32));
    let digits = (64 - addr.leading_zeros() as usize).div_ceil(4).max(1);
    let start = 16 - digits;
    buf[start] = b'0';
    buf[start + 1] = b'x';
    &buf[start..]
}

/// "0x…" without going through the formatting machinery (called for every task and edge).
pub fn hex(addr: u64) -> String {
    let mut buf = [0u8; 18];
    let digits = hex_digits(addr, &mut buf);
    // SAFETY: as in `hex_id`: ASCII only.
    unsafe { std::str::from_utf8_unchecked(digits) }.to_owned()
}

/// The address a hex id names (`"0x7f…"`).
pub fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.strip_prefix("0x")?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut values = vec![0u64, 1, 9, 10, 15, 16, 0xa, 0xdead_beef, u64::MAX, 0x7f00_0000_0000];
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            values.push(x >> (x % 64));
        }
        for v in values {
            assert_eq!(hex(v), format!("0x{v:x}"));
            assert_eq!(hex_id(v), format!("0x{v:x}"));
            assert_eq!(parse_hex(&hex(v)), Some(v));
        }
    }

    #[test]
    fn old_snapshots_load_with_defaults() {
        let j = r#"{"schema":"taskspy/1","pid":1,"captured_at":"x","python":{"version":"3.12.1","executable":"/p",
            "free_threaded":false,"gil_enabled":true},"threads":[{"tid":1,"ident":2,"name":null,"interpreter":0,
            "holds_gil":false,"state":"idle","frames":[]}],"tasks":[],"findings":[]}"#;
        let s: Snapshot = serde_json::from_str(j).unwrap();
        assert!(!s.has_lock_facts());
        assert!(s.locks.is_empty() && s.loops.is_empty());
        assert_eq!(s.threads[0].native, None);
    }
}
