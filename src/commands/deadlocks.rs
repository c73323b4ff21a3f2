//! `taskspy deadlocks`: one snapshot (or samples over `--duration`) → await cycles, lock cycles
//! (tasks and threads), lock waits on stuck holders, and blocked event loops. Exit 3 on findings.

use super::Output;
use crate::analysis::deadlock::{self, Evidence, Finding};
use crate::asyncio::Asyncio;
use crate::attach::{self, pause, MemError};
use crate::error::{exit, Error, Result};
use crate::render::escape::escape;
use crate::runtime::threads::ThreadRecord;
use crate::runtime::PyProcess;
use crate::snapshot::{self, Snapshot};
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write;
use std::time::{Duration, Instant};

pub struct DeadlockOptions {
    pub pid: i32,
    pub duration: f64,
    pub threshold: f64,
    pub json: bool,
}

/// Findings from one consistent look at the process.
pub fn analyze(py: &PyProcess, snap: &Snapshot) -> std::result::Result<Vec<Finding>, MemError> {
    let mut findings = deadlock::await_cycles(&snap.tasks);
    let aio = Asyncio::new(py);
    let names: HashMap<u64, Option<String>> = snap.threads.iter().map(|t| (t.ident, t.name.clone())).collect();
    let tids: HashMap<u64, Option<i32>> = snap.threads.iter().map(|t| (t.ident, t.tid)).collect();
    let interps = py.interpreters()?;
    let current = py.tstate_current()?;
    let mut all_threads = Vec::new();
    for interp in &interps {
        let recs: Vec<(ThreadRecord, Option<i32>)> = py
            .threads_of(interp, current)?
            .into_iter()
            .map(|r| {
                let t = tids.get(&r.ident).copied().flatten().or(r.native_tid);
                (r, t)
            })
            .collect();
        // Lock findings need a waiter: skip the (expensive) per-task stack scan when no task of
        // this interpreter waits on an asyncio lock.
        let lock_waiters = snap.tasks.iter().any(|t| {
            t.interpreter == interp.id && matches!(t.waiting_on.kind.as_str(), "lock" | "semaphore" | "condition")
        });
        if lock_waiters {
            let (actors, locks) = aio.task_wait_facts(interp, &recs)?;
            findings.extend(deadlock::lock_findings(&actors, &locks, "lock-cycle", false));
        }
        for (r, t) in recs {
            let n = names.get(&r.ident).cloned().flatten();
            all_threads.push((r, t, n));
        }
    }
    let facts = py.thread_wait_facts(&all_threads)?;
    findings.extend(deadlock::lock_findings(&facts.actors, &facts.locks, "thread-lock-cycle", true));
    Ok(findings)
}

fn key(f: &Finding) -> String {
    let mut members: Vec<String> = f.tasks.clone();
    members.extend(f.threads.iter().map(|t| t.to_string()));
    members.sort();
    format!("{}:{}", f.kind, members.join(","))
}

/// Per event-loop thread: which task has been running since when, without returning to the selector.
#[derive(Default)]
struct LoopWatch {
    since: HashMap<i32, (String, Instant)>,
    worst: HashMap<i32, (String, String, f64, usize, Vec<crate::runtime::frames::Frame>)>,
}

fn in_selector(frames: &[crate::runtime::frames::Frame]) -> bool {
    frames.iter().take(3).any(|f| {
        let func = f.function.rsplit('.').next().unwrap_or("");
        (f.file.ends_with("selectors.py") && func == "select")
            || matches!(func, "poll" | "select" | "_run_once" if f.file.ends_with("selectors.py"))
    }) || frames.first().map(|f| f.file.contains("uvloop")).unwrap_or(false)
}

impl LoopWatch {
    fn observe(&mut self, py: &PyProcess, snap: &Snapshot, now: Instant) {
        let aio = Asyncio::new(py);
        for t in &snap.threads {
            let Some(tid) = t.tid else { continue };
            // A thread runs an event loop if some task belongs to it.
            let loop_tasks: Vec<&crate::snapshot::TaskSnap> =
                snap.tasks.iter().filter(|k| k.thread == Some(tid)).collect();
            if loop_tasks.is_empty() || in_selector(&t.frames) || t.frames.is_empty() {
                self.since.remove(&tid);
                continue;
            }
            // The running task: the one whose coroutine frames are on the thread's stack.
            let running = loop_tasks.iter().find(|k| {
                k.waiting_on.runnable
                    && k.coroutine_stack
                        .iter()
                        .any(|c| t.frames.iter().any(|f| f.function == c.function && f.file == c.file))
            });
            let Some(task) = running.or_else(|| loop_tasks.iter().find(|k| k.waiting_on.runnable)) else {
                self.since.remove(&tid);
                continue;
            };
            let entry = self.since.entry(tid).or_insert_with(|| (task.id.clone(), now));
            if entry.0 != task.id {
                *entry = (task.id.clone(), now);
            }
            let secs = now.duration_since(entry.1).as_secs_f64();
            // Every other task of this loop is starved while it does not return to the selector.
            let ready = loop_tasks.iter().filter(|k| k.id != task.id).count();
            let _ = &aio;
            let w = self.worst.entry(tid).or_insert_with(|| (task.id.clone(), task.name.clone(), 0.0, 0, vec![]));
            if secs >= w.2 {
                *w = (task.id.clone(), task.name.clone(), secs, ready, t.frames.clone());
            }
        }
    }

    fn findings(&self, threshold: f64, snap: &Snapshot) -> Vec<Finding> {
        let mut out = Vec::new();
        for (tid, (task_id, name, secs, ready, frames)) in &self.worst {
            if *secs < threshold {
                continue;
            }
            let tname = snap
                .threads
                .iter()
                .find(|t| t.tid == Some(*tid))
                .and_then(|t| t.name.clone())
                .unwrap_or_else(|| "?".into());
            let top = frames.first().map(|f| format!("{} ({}:{})", f.function, f.file, f.line)).unwrap_or_default();
            out.push(Finding {
                kind: "blocked-loop".into(),
                severity: "critical".into(),
                summary: format!(
                    "event loop on thread {tid} ({tname}) has run task {name} synchronously for {secs:.1} s without returning to the loop (now in {top}); {ready} other task(s) of this loop cannot run meanwhile"
                ),
                threads: vec![*tid],
                tasks: vec![task_id.clone()],
                locks: vec![],
                evidence: vec![Evidence { actor: format!("thread {tid} ({tname})"), note: format!("running task {name} for {secs:.1} s"), frames: frames.clone() }],
            });
        }
        out
    }
}

pub fn run(opts: &DeadlockOptions) -> Result<Output> {
    pause::install_interrupt_handler();
    let py = PyProcess::open(attach::attach(opts.pid)?)?;
    let mut persistent: Option<HashMap<String, Finding>> = None;
    let mut watch = LoopWatch::default();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(opts.duration.max(0.0));
    let mut last_snap;
    let mut samples = 0u32;
    loop {
        let snap = snapshot::capture(&py)?;
        let now = Instant::now();
        py.begin_snapshot();
        let found = analyze(&py, &snap);
        py.end_snapshot();
        let found = match found {
            Ok(f) => f,
            Err(MemError::Exited) => return Err(Error::TargetExited(opts.pid)),
            Err(e) => return Err(py.err(e)),
        };
        samples += 1;
        watch.observe(&py, &snap, now);
        let this: HashMap<String, Finding> = found.into_iter().map(|f| (key(&f), f)).collect();
        // Over a duration only what persists in every sample is reported (no false alarms on
        // momentary contention).
        persistent = Some(match persistent {
            None => this,
            Some(prev) => prev
                .into_iter()
                .filter(|(k, _)| this.contains_key(k))
                .map(|(k, _)| (k.clone(), this[&k].clone()))
                .collect(),
        });
        last_snap = snap;
        if Instant::now() >= end || pause::interrupted() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut findings: Vec<Finding> = persistent.unwrap_or_default().into_values().collect();
    findings.sort_by_key(|f| (f.kind.clone(), f.summary.clone()));
    if opts.duration > 0.0 {
        findings.extend(watch.findings(opts.threshold, &last_snap));
    }
    let code = if findings.is_empty() { exit::OK } else { exit::FINDINGS };
    let out = if opts.json {
        Output::Json(serde_json::json!({
            "schema": "taskspy-deadlocks/1", "pid": opts.pid, "captured_at": last_snap.captured_at,
            "python": last_snap.python, "samples": samples, "duration_s": start.elapsed().as_secs_f64(),
            "findings": findings,
        }))
    } else {
        Output::Text(text(&findings, opts.pid, samples, start.elapsed().as_secs_f64()))
    };
    Ok(Output::WithCode(Box::new(out), code))
}

pub fn text(findings: &[Finding], pid: i32, samples: u32, secs: f64) -> String {
    let mut o = String::new();
    if findings.is_empty() {
        let _ = writeln!(o, "No deadlock candidates in PID {pid} ({samples} sample(s) over {secs:.1} s).");
        return o;
    }
    let _ = writeln!(o, "{} finding(s) in PID {pid} ({samples} sample(s) over {secs:.1} s):", findings.len());
    for f in findings {
        let _ = writeln!(o, "\n[{}] {}: {}", f.severity.to_uppercase(), f.kind, escape(&f.summary));
        let locks: BTreeSet<String> = f
            .locks
            .iter()
            .map(|l| {
                format!(
                    "{} {}{}",
                    l.kind,
                    l.address,
                    l.name.as_ref().map(|n| format!(" ({})", escape(n))).unwrap_or_default()
                )
            })
            .collect();
        for l in locks {
            let _ = writeln!(o, "  lock: {l}");
        }
        for e in &f.evidence {
            let _ = writeln!(o, "  {} — {}", escape(&e.actor), escape(&e.note));
            for fr in e.frames.iter().take(8) {
                let _ = writeln!(o, "      {} ({}:{})", escape(&fr.function), escape(&fr.file), fr.line);
            }
        }
    }
    o
}
