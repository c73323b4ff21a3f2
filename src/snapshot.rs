//! The snapshot: the JSON contract (`taskspy/1`) every command emits or extends, and `capture`,
//! which assembles one from the runtime walkers with bounded retries for torn reads.

use crate::attach::{Buf, MemError};
use crate::error::{Error, Result};
use crate::runtime::frames::Frame;
use crate::runtime::threads::{os_thread_ids, os_thread_state, InterpInfo, ThreadRecord};
use crate::runtime::PyProcess;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub const SCHEMA: &str = "taskspy/1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema: String,
    pub pid: i32,
    pub captured_at: String,
    pub python: PythonInfo,
    pub threads: Vec<ThreadSnap>,
    pub tasks: Vec<TaskSnap>,
    pub findings: Vec<crate::analysis::deadlock::Finding>,
    /// One entry per interpreter (additive key).
    #[serde(default)]
    pub interpreters: Vec<InterpSnap>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PythonInfo {
    pub version: String,
    pub executable: String,
    pub free_threaded: bool,
    pub gil_enabled: bool,
    /// The shared libpython, when the runtime lives in one (additive key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub library: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterpSnap {
    pub id: i64,
    pub gil_held: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gil_holder_tid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gil_switch_number: Option<u64>,
}

/// One asyncio task (pending tasks only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskSnap {
    /// Address of the task object, hex.
    pub id: String,
    pub name: String,
    /// pending | done | cancelled
    pub state: String,
    /// Native TID of the thread whose event loop runs the task (null if unknown).
    pub thread: Option<i32>,
    pub interpreter: i64,
    /// The task's coroutine chain, innermost first.
    pub coroutine_stack: Vec<Frame>,
    /// Tasks this task awaits (directly, via gather, or as TaskGroup parent).
    pub awaiting: Vec<String>,
    /// Tasks awaiting this one (same meaning as CPython 3.14's awaited_by).
    pub awaited_by: Vec<String>,
    pub waiting_on: WaitingOn,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitingOn {
    /// task | gather | taskgroup | future | lock | event | condition | semaphore | queue | sleep | unknown
    pub kind: String,
    /// The future the task is blocked on (`_fut_waiter`), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future: Option<String>,
    /// The asyncio primitive (Lock, Event, Queue...) waited on, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_type: Option<String>,
    /// Not blocked on anything: ready to run or running.
    #[serde(default)]
    pub runnable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadState {
    Running,
    Idle,
    WaitingGil,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Kernel thread name (`/proc/.../comm`), additive key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// The stack was cut at taskspy's depth limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Why the stack could not be read (after retries); frames may be partial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How many times a snapshot is retried when memory changed under us.
pub const MAX_ATTEMPTS: usize = 5;

pub fn capture(py: &PyProcess) -> Result<Snapshot> {
    let mut last = None;
    for attempt in 0..MAX_ATTEMPTS {
        let last_attempt = attempt + 1 == MAX_ATTEMPTS;
        py.begin_snapshot();
        let r = capture_once(py, last_attempt);
        py.end_snapshot();
        match r {
            Ok(s) => return Ok(s),
            Err(MemError::Exited) => return Err(Error::TargetExited(py.pid)),
            Err(MemError::Permission) => return Err(py.err(MemError::Permission)),
            Err(e) => {
                if !std::path::Path::new(&format!("/proc/{}", py.pid)).exists() {
                    return Err(Error::TargetExited(py.pid));
                }
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(2 << attempt));
            }
        }
    }
    Err(Error::Inconsistent(last.map(|e| e.to_string()).unwrap_or_default()))
}

fn capture_once(py: &PyProcess, tolerate: bool) -> std::result::Result<Snapshot, MemError> {
    let interps = py.interpreters()?;
    let current = py.tstate_current()?;
    let os_tids = os_thread_ids(py.pid);
    let mut threads = Vec::new();
    let mut tasks = Vec::new();
    let mut interp_snaps = Vec::new();
    let aio = crate::asyncio::Asyncio::new(py);
    let mut gil_enabled = true;
    for interp in &interps {
        gil_enabled &= interp.gil_enabled;
        let records = py.threads_of(interp, current)?;
        let names = py.thread_names(interp.addr).unwrap_or_else(|e| {
            if std::env::var_os("TASKSPY_DEBUG").is_some() {
                eprintln!("debug: thread names: {e}");
            }
            Default::default()
        });
        let pthread_tid_off =
            if py.off.ts_native_thread_id.is_none() { pthread_tid_offset(py, &records) } else { None };
        let mut holder_tid = None;
        let mut with_tids = Vec::new();
        for rec in records.iter().rev() {
            let info = names.get(&rec.ident);
            let tid = rec
                .native_tid
                .or_else(|| info.and_then(|i| i.native_id))
                .or_else(|| pthread_tid_off.and_then(|off| py.mem().read_i32(rec.ident + off).ok()))
                .filter(|t| os_tids.contains(t));
            let (stack, error) = match py.walk_frames(rec.top_frame) {
                Ok(s) => (s, None),
                Err(e @ (MemError::Exited | MemError::Permission)) => return Err(e),
                Err(e) if !tolerate => return Err(e),
                Err(e) => (Default::default(), Some(e.to_string())),
            };
            let os = tid.map(|t| os_thread_state(py.pid, t)).unwrap_or_default();
            let state = classify(py, rec, interp, &os, tid.is_some());
            if rec.holds_gil {
                holder_tid = tid;
            }
            with_tids.push((rec.clone(), tid));
            threads.push(ThreadSnap {
                tid,
                ident: rec.ident,
                name: info.and_then(|i| i.name.clone()),
                interpreter: interp.id,
                holds_gil: rec.holds_gil,
                state,
                frames: stack.frames,
                os_name: os.comm,
                truncated: stack.truncated,
                error,
            });
        }
        match aio.collect_tasks(interp, &with_tids) {
            Ok(t) => tasks.extend(t),
            Err(e @ (MemError::Exited | MemError::Permission)) => return Err(e),
            Err(e) if !tolerate => return Err(e),
            Err(e) => {
                if std::env::var_os("TASKSPY_DEBUG").is_some() {
                    eprintln!("debug: tasks of interpreter {}: {e}", interp.id);
                }
            }
        }
        interp_snaps.push(InterpSnap {
            id: interp.id,
            gil_held: interp.gil_locked,
            gil_holder_tid: holder_tid,
            gil_switch_number: interp.gil_switch_number,
        });
    }
    // Main interpreter first, main thread first within it.
    threads.sort_by_key(|t| (t.interpreter, t.tid != Some(py.pid)));
    interp_snaps.sort_by_key(|i| i.id);
    Ok(Snapshot {
        schema: SCHEMA.to_string(),
        pid: py.pid,
        captured_at: rfc3339_now(),
        python: PythonInfo {
            version: py.version.to_string(),
            executable: py.executable.clone(),
            free_threaded: py.free_threaded,
            gil_enabled,
            library: py.library.clone(),
        },
        threads,
        tasks,
        findings: Vec::new(),
        interpreters: interp_snaps,
    })
}

fn classify(
    py: &PyProcess,
    rec: &ThreadRecord,
    interp: &InterpInfo,
    os: &crate::runtime::threads::OsThreadState,
    has_tid: bool,
) -> ThreadState {
    if !interp.gil_enabled {
        // No GIL: attached (running Python) or not.
        return match (rec.active, os.state) {
            (_, Some('R')) | (Some(true), _) => ThreadState::Running,
            (_, Some(_)) => ThreadState::Idle,
            _ => ThreadState::Unknown,
        };
    }
    if rec.holds_gil {
        return ThreadState::Running;
    }
    if rec.gil_requested {
        return ThreadState::WaitingGil;
    }
    if interp.is_gil_futex(os.futex_addr, py.off.gil_size) {
        return ThreadState::WaitingGil;
    }
    if !has_tid {
        return ThreadState::Unknown;
    }
    match os.state {
        Some('R') => ThreadState::Running,
        Some(_) => ThreadState::Idle,
        None => ThreadState::Unknown,
    }
}

/// 3.8–3.10 keep no kernel TID in the thread state. glibc's `struct pthread` (whose address is the
/// ident) holds it at a fixed offset: find it on the main thread (TID == PID) and reuse it.
fn pthread_tid_offset(py: &PyProcess, records: &[ThreadRecord]) -> Option<u64> {
    let tids = os_thread_ids(py.pid);
    // The main thread state is the tail of the list.
    let main = records.last()?;
    let block = py.mem().read_vec(main.ident, 2048).ok()?;
    let pid = py.pid as u32;
    (0..block.len() as u64 / 4).map(|i| i * 4).find(|&off| {
        let v = block[..].u32_at(off);
        v == pid
            && records.iter().all(|r| match py.mem().read_i32(r.ident + off) {
                Ok(t) => tids.contains(&t),
                Err(_) => false,
            })
    })
}

/// Current UTC time as RFC 3339 with milliseconds, without a date library.
pub fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

pub fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Index of threads by tid for renderers.
pub fn threads_by_tid(s: &Snapshot) -> HashMap<i32, &ThreadSnap> {
    s.threads.iter().filter_map(|t| Some((t.tid?, t))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_795_600_000, 0), "2026-11-25T09:46:40.000Z");
    }
}
