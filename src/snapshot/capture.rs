//! Capturing the record: threads (stacks, GIL, native state, lock facts), tasks, loops and locks
//! from one pass over target memory; torn reads are retried, then kept as marked partial entries.

use crate::asyncio::readers::SideJob;
use crate::error::{Error, Result};
use crate::model::{
    hex, CaptureInfo, GilModuleRef, GilReason, InterpSnap, LockSnap, LoopSnap, NativeState, PythonInfo, Snapshot,
    ThreadSnap, ThreadState, SCHEMA,
};
use crate::runtime::thread_waits::LockTable;
use crate::runtime::threads::{InterpInfo, ThreadRecord};
use crate::runtime::PyProcess;
use crate::source::os::{OsThreadState, OsView};
use crate::source::{Buf, MemError};
use std::collections::HashMap;
use std::time::Instant;

/// How many times a snapshot is retried when memory changed under us.
pub const MAX_ATTEMPTS: usize = 5;

#[derive(Debug, Clone, Default)]
pub struct CaptureOptions {
    /// Collect lock facts for threads (holders, waiters): needed for deadlock findings.
    pub thread_locks: bool,
    /// The target is stopped for the read (so no retries are needed: memory cannot change).
    pub paused: bool,
    /// A core file's path, for the record.
    pub core: Option<String>,
    /// Thread facts taken earlier (in a pause whose memory copy is being decoded) instead of now.
    pub os: Option<std::sync::Arc<crate::source::os::FrozenOs>>,
    /// More samples of this process follow (`watch`, `top`, `metrics`, `deadlocks --duration`):
    /// the first sample already records what later ones check (see `reuse`), so the second one
    /// is cheap too, not only the third.
    pub repeated: bool,
}

impl CaptureOptions {
    /// Everything: what `dump --json`, `deadlocks`, `top` and a saved record need.
    pub fn full() -> CaptureOptions {
        CaptureOptions { thread_locks: true, ..Default::default() }
    }

    /// Everything, for one of a series of samples of the same process.
    pub fn repeated() -> CaptureOptions {
        CaptureOptions { repeated: true, ..CaptureOptions::full() }
    }
}

/// A full capture (every fact), retried on torn reads.
pub fn capture(py: &PyProcess) -> Result<Snapshot> {
    capture_with(py, &CaptureOptions::full())
}

/// A full capture that more samples of the same process will follow (`CaptureOptions::repeated`).
pub fn capture_repeated(py: &PyProcess) -> Result<Snapshot> {
    capture_with(py, &CaptureOptions::repeated())
}

pub fn capture_with(py: &PyProcess, opts: &CaptureOptions) -> Result<Snapshot> {
    let mut last = None;
    // A stopped target (paused, or a core) cannot change: one tolerant pass says all there is.
    let attempts = if opts.paused || py.os.kind() != "live" { 1 } else { MAX_ATTEMPTS };
    let os: &dyn OsView = match &opts.os {
        Some(f) => f.as_ref(),
        None => py.os.as_ref(),
    };
    for attempt in 0..attempts {
        let last_attempt = attempt + 1 == attempts;
        let t0 = Instant::now();
        py.begin_snapshot();
        let r = capture_once(py, os, opts, last_attempt);
        py.end_snapshot();
        match r {
            Ok(mut s) => {
                if let Some(c) = s.capture.as_mut() {
                    c.read_ms = (t0.elapsed().as_secs_f64() * 1e5).round() / 100.0;
                }
                return Ok(s);
            }
            Err(MemError::Exited) => return Err(Error::TargetExited(py.pid)),
            Err(MemError::Interrupted) => return Err(Error::Interrupted),
            Err(e @ (MemError::Permission | MemError::Deadline)) => return Err(py.err(e)),
            Err(e) => {
                if !py.os.alive() {
                    return Err(Error::TargetExited(py.pid));
                }
                last = Some(e);
                if !last_attempt {
                    std::thread::sleep(std::time::Duration::from_millis(2 << attempt));
                }
            }
        }
    }
    Err(Error::Inconsistent(last.map(|e| e.to_string()).unwrap_or_default()))
}

fn native(os: &OsThreadState) -> NativeState {
    NativeState {
        state: os.state.map(|c| c.to_string()),
        syscall: os.syscall.flatten(),
        futex: os.futex_addr.map(hex),
        on_cpu: os.on_cpu(),
    }
}

/// `threading`'s records of an interpreter's threads (names, native ids); none if unreadable.
fn thread_names(py: &PyProcess, interp: &InterpInfo) -> HashMap<u64, crate::runtime::thread_names::PyThreadInfo> {
    py.thread_names(interp.addr).unwrap_or_else(|e| {
        if std::env::var_os("TASKSPY_DEBUG").is_some() {
            eprintln!("debug: thread names: {e}");
        }
        Default::default()
    })
}

/// What reading one interpreter's threads needs: its thread states with their kernel ids.
#[derive(Clone, Copy)]
struct ThreadPart<'a> {
    py: &'a PyProcess,
    os: &'a dyn OsView,
    opts: &'a CaptureOptions,
    interp: &'a InterpInfo,
    with_tids: &'a [(ThreadRecord, Option<i32>)],
    ns_tids: &'a HashMap<i32, i32>,
    tolerate: bool,
}

/// One interpreter's threads read, or why not.
type ThreadsResult = std::result::Result<ThreadsRead, MemError>;

/// One interpreter's threads as records.
struct ThreadsRead {
    threads: Vec<ThreadSnap>,
    /// The thread holding the GIL.
    holder_tid: Option<i32>,
    /// Threads whose stack could not be read in full.
    unreadable: u64,
}

impl ThreadPart<'_> {
    /// Every thread's stack, state and lock facts (into `locks`); `names` if already read.
    fn read(
        &self,
        names: Option<HashMap<u64, crate::runtime::thread_names::PyThreadInfo>>,
        locks: &mut LockTable,
    ) -> ThreadsResult {
        let _phase = crate::timing::Phase::start("threads");
        let py = self.py;
        let names = names.unwrap_or_else(|| thread_names(py, self.interp));
        let mut out =
            ThreadsRead { threads: Vec::with_capacity(self.with_tids.len()), holder_tid: None, unreadable: 0 };
        for (rec, tid) in self.with_tids {
            let tid = *tid;
            let info = names.get(&rec.ident);
            let ns_tid = tid.and_then(|t| self.ns_tids.iter().find(|(_, r)| **r == t).map(|(inner, _)| *inner));
            let stack = py.walk_frames(rec.top_frame)?;
            if let (Some(e), false) = (&stack.error, self.tolerate) {
                return Err(e.clone());
            }
            let os = tid.map(|t| self.os.thread_state(t)).unwrap_or_default();
            let state = classify(py, rec, self.interp, &os, tid.is_some());
            if rec.holds_gil {
                out.holder_tid = tid;
            }
            let facts = if self.opts.thread_locks && tid.is_some() {
                py.thread_lock_facts(rec, &stack, &os, locks)
            } else {
                Default::default()
            };
            if stack.error.is_some() {
                out.unreadable += 1;
            }
            out.threads.push(ThreadSnap {
                tid,
                ident: rec.ident,
                name: info.and_then(|i| i.name.clone()),
                interpreter: self.interp.id,
                holds_gil: rec.holds_gil,
                state,
                frames: stack.frames,
                os_name: os.comm.clone(),
                truncated: stack.truncated,
                error: stack.error.map(|e| e.to_string()),
                native: tid.map(|_| native(&os)),
                holds_locks: facts.holds.iter().map(|l| hex(*l)).collect(),
                waits_for_lock: facts.waits_for.map(hex),
                attached: if py.free_threaded { rec.py_state.map(|s| s == 1) } else { None },
                ns_tid,
            });
        }
        Ok(out)
    }
}

fn capture_once(
    py: &PyProcess,
    os_view: &dyn OsView,
    opts: &CaptureOptions,
    tolerate: bool,
) -> std::result::Result<Snapshot, MemError> {
    let interps = py.interpreters()?;
    let current = py.tstate_current()?;
    let os_tids = os_view.thread_ids();
    // A target in another PID namespace keeps its own thread numbering in memory: map it to ours.
    let ns_tids = os_view.ns_tids();
    let ns_pid = os_view.ns_pid();
    let mem_tids: Vec<i32> = if ns_tids.is_empty() { os_tids.clone() } else { ns_tids.keys().copied().collect() };
    let mut threads = Vec::new();
    let mut tasks = Vec::new();
    let mut loops: Vec<LoopSnap> = Vec::new();
    let mut interp_snaps = Vec::new();
    let mut locks = LockTable::new();
    let mut unreadable = 0u64;
    let aio = crate::asyncio::Asyncio::new(py);
    let mut gil_enabled = true;
    // Only a live target read in place can be checked again later (not a paused copy, not a core).
    let reusable = !opts.paused && opts.os.is_none() && py.os.kind() == "live";
    for interp in &interps {
        gil_enabled &= interp.gil_enabled;
        let records = py.threads_of(interp, current)?;
        // Thread ids come from the thread states (3.11+); older ones need `threading`'s records
        // (native_id) or the pthread's copy of the tid, read first.
        let tids_need_names = records.iter().any(|r| r.native_tid.is_none());
        let mut names = if tids_need_names { Some(thread_names(py, interp)) } else { None };
        let pthread_tid_off = if py.off.ts_native_thread_id.is_none() {
            pthread_tid_offset(py, &records, &mem_tids, ns_pid)
        } else {
            None
        };
        let with_tids: Vec<(ThreadRecord, Option<i32>)> = records
            .iter()
            .rev()
            .map(|rec| {
                let info = names.as_ref().and_then(|n| n.get(&rec.ident));
                let tid = rec
                    .native_tid
                    .or_else(|| info.and_then(|i| i.native_id))
                    .or_else(|| pthread_tid_off.and_then(|off| py.mem().read_i32(rec.ident + off).ok()))
                    .and_then(|t| if ns_tids.is_empty() { Some(t) } else { ns_tids.get(&t).copied() })
                    .filter(|t| os_tids.contains(t));
                (rec.clone(), tid)
            })
            .collect();
        let part = ThreadPart { py, os: os_view, opts, interp, with_tids: &with_tids, ns_tids: &ns_tids, tolerate };
        // The threads' stacks, states and lock facts are read on a second thread (its own page
        // cache) while this one walks the task registries: the two need nothing of each other.
        // The threads' stacks, states and lock facts: read by a helper reader while this thread
        // walks the task registries (see `SideJob`), or here after the tasks.
        let thread_locks = std::sync::Mutex::new(std::mem::take(&mut locks));
        let threads_slot: std::sync::Mutex<Option<ThreadsResult>> = Default::default();
        let side = SideJob::new(|reader: &PyProcess| {
            let part = ThreadPart { py: reader, ..part };
            let r = part.read(names.take(), &mut crate::sync::lock(&thread_locks));
            *crate::sync::lock(&threads_slot) = Some(r);
        });
        let tasks_read = super::reuse::collect(py, &aio, interp, &with_tids, tolerate, reusable, opts.repeated, &side);
        side.run(py);
        drop(side);
        locks = thread_locks.into_inner().unwrap_or_else(|p| p.into_inner());
        let threads_read = threads_slot.into_inner().unwrap_or_else(|p| p.into_inner());
        let read = threads_read.unwrap_or_else(|| Err(MemError::Other("the thread reader failed".into())))?;
        let holder_tid = read.holder_tid;
        unreadable += read.unreadable;
        threads.extend(read.threads);
        match tasks_read {
            Ok(rec) => {
                // Move, not copy: 10,000 task records copied into a fresh vector fault in megabytes.
                if tasks.is_empty() {
                    tasks = rec.tasks;
                } else {
                    tasks.extend(rec.tasks);
                }
                loops.extend(rec.loops);
                unreadable += rec.unreadable;
                for (addr, info) in rec.locks {
                    locks.entry(addr).or_insert(info);
                }
            }
            Err(e) if e.is_fatal() || !tolerate => return Err(e),
            Err(e) => {
                unreadable += 1;
                if std::env::var_os("TASKSPY_DEBUG").is_some() {
                    eprintln!("debug: tasks of interpreter {}: {e}", interp.id);
                }
            }
        }
        let stw = if py.free_threaded { py.stop_the_world(Some(interp.addr)).ok().flatten() } else { None };
        let stw = stw.filter(|w| w.stopped);
        interp_snaps.push(InterpSnap {
            id: interp.id,
            gil_held: interp.gil_locked,
            gil_holder_tid: holder_tid,
            gil_switch_number: interp.gil_switch_number,
            world_stopped: stw.is_some(),
            world_stopped_by: stw
                .and_then(|w| with_tids.iter().find(|(r, _)| r.tstate == w.requester))
                .and_then(|(_, t)| *t),
        });
    }
    // Main interpreter first, main thread first within it.
    threads.sort_by_key(|t| (t.interpreter, t.tid != Some(py.pid)));
    interp_snaps.sort_by_key(|i| i.id);
    for l in &mut loops {
        l.in_selector = l
            .thread
            .and_then(|tid| threads.iter().find(|t| t.tid == Some(tid)))
            .map(|t| crate::model::frame::in_selector(&t.frames));
    }
    let tid_of_ident: HashMap<u64, Option<i32>> = threads.iter().map(|t| (t.ident, t.tid)).collect();
    let mut lock_snaps: Vec<LockSnap> = locks
        .into_iter()
        .map(|(addr, l)| LockSnap {
            address: hex(addr),
            kind: l.kind.label().to_string(),
            name: l.name,
            held: l.held,
            owner_thread: l.owner_ident.and_then(|i| tid_of_ident.get(&i).copied().flatten()),
        })
        .collect();
    lock_snaps.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(Snapshot {
        schema: SCHEMA.to_string(),
        pid: py.pid,
        captured_at: crate::model::time::rfc3339_now(),
        python: PythonInfo {
            version: py.version.to_string(),
            executable: py.executable.clone(),
            free_threaded: py.free_threaded,
            gil_enabled,
            library: py.library.clone(),
            gil_reason: if py.free_threaded && gil_enabled {
                gil_reason(py, interps.first().map(|i| i.addr))
            } else {
                None
            },
        },
        threads,
        tasks,
        findings: Vec::new(),
        interpreters: interp_snaps,
        ns_pid,
        capture: Some(CaptureInfo {
            source: py.os.kind().to_string(),
            core: opts.core.clone(),
            paused: opts.paused || py.os.kind() == "core",
            lock_facts: opts.thread_locks,
            read_ms: 0.0,
            paused_ms: None,
            copied_bytes: None,
            already_stopped: false,
            cut: None,
            unreadable,
        }),
        cmdline: Some(py.os.cmdline()).filter(|c| !c.is_empty()),
        locks: lock_snaps,
        loops,
    })
}

fn classify(py: &PyProcess, rec: &ThreadRecord, interp: &InterpInfo, os: &OsThreadState, has_tid: bool) -> ThreadState {
    let on_cpu = os.on_cpu();
    if !interp.gil_enabled {
        // No GIL: attached (running Python) or not.
        return match (rec.active, on_cpu) {
            (_, Some(true)) | (Some(true), _) => ThreadState::Running,
            (_, Some(false)) => ThreadState::Idle,
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
    match on_cpu {
        Some(true) => ThreadState::Running,
        Some(false) => ThreadState::Idle,
        None => ThreadState::Unknown,
    }
}

/// Why a free-threaded interpreter runs with the GIL: forced on by its configuration (and by
/// which means, where the OS view tells), or re-enabled when an extension module that does not
/// declare free-threading support was imported.
fn gil_reason(py: &PyProcess, interp: Option<u64>) -> Option<GilReason> {
    let interp = interp?;
    let modules: Vec<GilModuleRef> = py
        .gil_modules(interp)
        .unwrap_or_default()
        .into_iter()
        .map(|m| GilModuleRef { name: m.name, file: m.file })
        .collect();
    let config = py.config_enable_gil(interp).ok().flatten();
    let (cause, detail) = if config == Some(1) {
        let how = if py.os.environ_var("PYTHON_GIL").as_deref() == Some("1") {
            "PYTHON_GIL=1 in the environment".to_string()
        } else if py.os.cmdline().split_whitespace().collect::<Vec<_>>().windows(2).any(|w| w == ["-X", "gil=1"])
            || py.os.cmdline().contains("-Xgil=1")
        {
            "-X gil=1 on the command line".to_string()
        } else {
            "the interpreter's configuration (PyConfig.enable_gil = 1: PYTHON_GIL=1 or -X gil=1)".to_string()
        };
        ("configuration", format!("enabled by {how}"))
    } else if !modules.is_empty() {
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        (
            "extension_modules",
            format!(
                "re-enabled at run time: {} extension module(s) without free-threading support were imported ({})",
                modules.len(),
                names.join(", ")
            ),
        )
    } else {
        ("unknown", "enabled, and neither the configuration nor a loaded extension module says why".to_string())
    };
    Some(GilReason { cause: cause.into(), detail, modules })
}

/// 3.8–3.10 keep no kernel TID in the thread state. glibc's `struct pthread` (whose address is the
/// ident) holds it at a fixed offset: find it on the main thread (TID == PID) and reuse it.
fn pthread_tid_offset(py: &PyProcess, records: &[ThreadRecord], tids: &[i32], ns_pid: Option<i32>) -> Option<u64> {
    // The main thread state is the tail of the list; its pthread holds the PID as the target sees it.
    let main = records.last()?;
    let block = py.mem().read_vec(main.ident, 2048).ok()?;
    let pid = ns_pid.unwrap_or(py.pid) as u32;
    (0..block.len() as u64 / 4).map(|i| i * 4).find(|&off| {
        let v = block[..].u32_at(off);
        v == pid
            && records.iter().all(|r| match py.mem().read_i32(r.ident + off) {
                Ok(t) => tids.contains(&t),
                Err(_) => false,
            })
    })
}
