//! Blocked event loops over a series of snapshots: a loop whose thread keeps running one task
//! without returning to the selector longer than a threshold starves every other task of it.

use crate::model::frame::in_selector;
use crate::model::{Evidence, Finding, Frame, Snapshot, TaskSnap};
use rustc_hash::FxHashMap as HashMap;

/// Per event-loop thread: which task has been running since when, without returning to the selector.
#[derive(Default)]
pub struct LoopWatch {
    since: HashMap<i32, (String, f64)>,
    worst: HashMap<i32, Worst>,
}

struct Worst {
    task: String,
    name: String,
    secs: f64,
    starved: usize,
    frames: Vec<Frame>,
}

impl LoopWatch {
    /// Add one snapshot taken at `t` seconds (any fixed origin).
    pub fn observe(&mut self, snap: &Snapshot, t: f64) {
        let mut tasks_of: HashMap<i32, Vec<&TaskSnap>> = HashMap::default();
        for k in &snap.tasks {
            if let Some(tid) = k.thread {
                tasks_of.entry(tid).or_default().push(k);
            }
        }
        for th in &snap.threads {
            let Some(tid) = th.tid else { continue };
            let Some(loop_tasks) = tasks_of.get(&tid) else {
                self.since.remove(&tid);
                continue;
            };
            let lp = snap.loops.iter().find(|l| l.thread == Some(tid) && l.running);
            let idle = lp.and_then(|l| l.in_selector).unwrap_or_else(|| in_selector(&th.frames));
            if idle || th.frames.is_empty() {
                self.since.remove(&tid);
                continue;
            }
            // The running task: the loop's current task where recorded, else the runnable task
            // whose coroutine frames are on the thread's stack.
            let current = lp.and_then(|l| l.current_task.as_deref());
            let running = current.and_then(|c| loop_tasks.iter().find(|k| k.id == c)).or_else(|| {
                loop_tasks.iter().find(|k| {
                    k.waiting_on.runnable
                        && k.coroutine_stack
                            .iter()
                            .any(|c| th.frames.iter().any(|f| f.function == c.function && f.file == c.file))
                })
            });
            let Some(task) = running.or_else(|| loop_tasks.iter().find(|k| k.waiting_on.runnable)) else {
                self.since.remove(&tid);
                continue;
            };
            let entry = self.since.entry(tid).or_insert_with(|| (task.id.to_string(), t));
            if entry.0 != task.id {
                *entry = (task.id.to_string(), t);
            }
            let secs = t - entry.1;
            // Every other task of this loop is starved while it does not return to the selector.
            let starved = loop_tasks.iter().filter(|k| k.id != task.id).count();
            let w = self.worst.entry(tid).or_insert_with(|| Worst {
                task: task.id.to_string(),
                name: task.name.to_string(),
                secs: 0.0,
                starved: 0,
                frames: vec![],
            });
            if secs >= w.secs {
                *w = Worst {
                    task: task.id.to_string(),
                    name: task.name.to_string(),
                    secs,
                    starved,
                    frames: th.frames.clone(),
                };
            }
        }
    }

    /// One `blocked-loop` finding per loop thread that ran one task synchronously >= `threshold` s.
    pub fn findings(&self, threshold: f64, snap: &Snapshot) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut tids: Vec<&i32> = self.worst.keys().collect();
        tids.sort();
        for tid in tids {
            let w = &self.worst[tid];
            if w.secs < threshold {
                continue;
            }
            let tname = snap
                .threads
                .iter()
                .find(|t| t.tid == Some(*tid))
                .and_then(|t| t.name.clone())
                .unwrap_or_else(|| "?".into());
            let top = w.frames.first().map(|f| format!("{} ({}:{})", f.function, f.file, f.line)).unwrap_or_default();
            out.push(Finding {
                kind: "blocked-loop".into(),
                severity: "critical".into(),
                summary: format!(
                    "event loop on thread {tid} ({tname}) has run task {} synchronously for {:.1} s without returning to the loop (now in {top}); {} other task(s) of this loop cannot run meanwhile",
                    w.name, w.secs, w.starved
                ),
                threads: vec![*tid],
                tasks: vec![w.task.clone()],
                locks: vec![],
                evidence: vec![Evidence {
                    actor: format!("thread {tid} ({tname})"),
                    note: format!("running task {} for {:.1} s", w.name, w.secs),
                    frames: w.frames.clone(),
                }],
            });
        }
        out
    }
}
