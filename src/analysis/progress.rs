//! Progress over a series of snapshots: how long each task has sat at its await point, tasks
//! stuck there while their event loop kept running others (`stuck-task`), and loops whose ready
//! queue keeps work waiting (`loop-lag`). Pure: it remembers only what earlier snapshots said.

use crate::model::{AwaitPoint, Evidence, Finding, Snapshot, TaskSnap};
use rustc_hash::FxHashMap as HashMap;

#[derive(Debug, Clone)]
struct TaskTrack {
    point: Option<AwaitPoint>,
    /// When the task was first seen at its current point.
    since: f64,
    event_loop: Option<String>,
    /// The sample that last listed the task (tasks not in the latest one have finished).
    seen_in: usize,
}

/// Most ready-queue marks kept per loop.
const MAX_MARKS: usize = 512;

#[derive(Debug, Clone, Default)]
struct LoopTrack {
    /// Last time any task of the loop moved (changed await point, appeared or finished).
    last_activity: Option<f64>,
    /// (time, deque mutation counter, queue length) of earlier samples whose last queued callback
    /// has not run yet: the ready deque is FIFO, so that callback runs after `length` pops.
    marks: std::collections::VecDeque<(f64, u64, u64)>,
    /// How long the oldest still-queued callback (of those marked) has waited.
    lag: f64,
    ready: Option<u64>,
    /// The ready deque's mutation counter at the previous sample.
    mutations: Option<u64>,
}

/// Tracks a series; feed it snapshots in time order.
#[derive(Debug, Default)]
pub struct Progress {
    tasks: HashMap<String, TaskTrack>,
    loops: HashMap<String, LoopTrack>,
    first: Option<f64>,
    last: f64,
    samples: usize,
}

impl Progress {
    pub fn observe(&mut self, s: &Snapshot, t: f64) {
        let first_sample = self.first.is_none();
        self.first.get_or_insert(t);
        self.last = t;
        self.samples += 1;
        let sample = self.samples;
        for task in &s.tasks {
            let moved = match self.tasks.get_mut(task.id.as_str()) {
                Some(tr) if tr.point == task.await_point => {
                    tr.seen_in = sample;
                    false
                }
                Some(tr) => {
                    tr.point = task.await_point.clone();
                    tr.since = t;
                    tr.seen_in = sample;
                    true
                }
                None => {
                    self.tasks.insert(
                        task.id.to_string(),
                        TaskTrack {
                            point: task.await_point.clone(),
                            since: t,
                            event_loop: task.event_loop.as_ref().map(|l| l.to_string()),
                            seen_in: sample,
                        },
                    );
                    !first_sample
                }
            };
            if moved {
                if let Some(lp) = &task.event_loop {
                    self.loops.entry(lp.to_string()).or_default().last_activity = Some(t);
                }
            }
        }
        // Tasks that finished count as their loop's activity.
        let loops = &mut self.loops;
        self.tasks.retain(|_, tr| {
            if tr.seen_in == sample {
                return true;
            }
            if let Some(lp) = tr.event_loop.take() {
                loops.entry(lp).or_default().last_activity = Some(t);
            }
            false
        });
        for lp in &s.loops {
            let tr = self.loops.entry(lp.address.clone()).or_default();
            tr.ready = lp.ready;
            // The loop ran callbacks since the last sample: tasks that always park at the same
            // await point (a `while True: await sleep()` loop) look unmoved, the deque does not.
            if let (Some(before), Some(now)) = (tr.mutations, lp.ready_mutations) {
                if before != now {
                    tr.last_activity = Some(t);
                }
            }
            tr.mutations = lp.ready_mutations;
            let (Some(len), Some(state)) = (lp.ready, lp.ready_mutations) else {
                tr.marks.clear();
                tr.lag = 0.0;
                continue;
            };
            // Pops since a mark: every append and pop bumps the counter, and the length moved by
            // appends minus pops, so pops = (Δcounter − Δlength) / 2.
            tr.marks.retain(|&(_, st0, len0)| {
                let d_state = state.wrapping_sub(st0) as i128;
                let pops = (d_state - (len as i128 - len0 as i128)) / 2;
                pops < len0 as i128
            });
            tr.lag = tr.marks.front().map(|m| t - m.0).unwrap_or(0.0);
            if len > 0 && tr.marks.len() < MAX_MARKS {
                tr.marks.push_back((t, state, len));
            }
        }
    }

    /// Seconds the task has been at its current await point, once more than one sample was taken.
    pub fn waiting_s(&self, id: &str) -> Option<f64> {
        if self.samples < 2 {
            return None;
        }
        self.tasks.get(id).map(|tr| ((self.last - tr.since) * 10.0).round() / 10.0)
    }

    /// Fill every task's `waiting_s` in `s` (the latest snapshot of the series).
    pub fn annotate(&self, s: &mut Snapshot) {
        for t in &mut s.tasks {
            t.waiting_s = self.waiting_s(&t.id);
        }
    }

    fn stuck_ids(&self, stuck_after: f64, s: &Snapshot) -> HashMap<String, f64> {
        let mut out = HashMap::default();
        for task in &s.tasks {
            let Some(tr) = self.tasks.get(task.id.as_str()) else { continue };
            let waited = self.last - tr.since;
            if waited < stuck_after || task.waiting_on.runnable || task.state != "pending" || tr.point.is_none() {
                continue;
            }
            // Waiting on other tasks (reported themselves if stuck) or on a timer is not stuck.
            if matches!(task.waiting_on.kind.as_str(), "task" | "gather" | "taskgroup" | "sleep") {
                continue;
            }
            // Stuck, not idle: its loop ran other work after the task parked here.
            let loop_moved = task
                .event_loop
                .as_ref()
                .and_then(|lp| self.loops.get(lp.as_str()))
                .and_then(|l| l.last_activity)
                .map(|a| a > tr.since)
                .unwrap_or(false);
            if loop_moved {
                out.insert(task.id.to_string(), waited);
            }
        }
        out
    }

    /// `stuck-task` findings: tasks at the same await point for at least `stuck_after` seconds
    /// while their event loop kept running other tasks. A task waiting on a lock whose holder is
    /// stuck too says so.
    pub fn stuck_tasks(&self, stuck_after: f64, s: &Snapshot) -> Vec<Finding> {
        let stuck = self.stuck_ids(stuck_after, s);
        let by_id: HashMap<&str, &TaskSnap> = s.tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        let mut ids: Vec<(&String, &f64)> = stuck.iter().collect();
        ids.sort_by(|a, b| b.1.partial_cmp(a.1).unwrap_or(std::cmp::Ordering::Equal).then(a.0.cmp(b.0)));
        let mut out = Vec::new();
        for (id, waited) in ids.into_iter().take(100) {
            let Some(t) = by_id.get(id.as_str()) else { continue };
            let at = t
                .coroutine_stack
                .first()
                .map(|f| format!("{} ({}:{})", f.function, f.file, f.line))
                .unwrap_or_else(|| "?".into());
            let on = match (&t.waiting_on.object_type, &t.waiting_on.object, &t.waiting_on.future) {
                (Some(ty), Some(o), _) => format!("{} {ty} {o}", t.waiting_on.kind),
                (_, _, Some(f)) => format!("{} {f}", t.waiting_on.kind),
                _ => t.waiting_on.kind.to_string(),
            };
            // A lock held by another stuck task: name it, both are part of one problem.
            let holder = t.waits_for_lock.as_ref().and_then(|l| {
                s.tasks.iter().find(|h| h.id != t.id && h.holds_locks.contains(l) && stuck.contains_key(h.id.as_str()))
            });
            let link = holder.map(|h| format!("; the lock is held by task {} ({}), stuck too", h.name, h.id));
            let mut tasks = vec![t.id.to_string()];
            let mut evidence = vec![Evidence {
                actor: format!("task {} ({})", t.name, t.id),
                note: format!("at the same await point for {waited:.0} s, waiting on {on}"),
                frames: t.coroutine_stack.to_vec(),
            }];
            if let Some(h) = holder {
                tasks.push(h.id.to_string());
                evidence.push(Evidence {
                    actor: format!("task {} ({})", h.name, h.id),
                    note: "holds the lock, stuck itself".into(),
                    frames: h.coroutine_stack.to_vec(),
                });
            }
            out.push(Finding {
                kind: "stuck-task".into(),
                severity: "warning".into(),
                summary: format!(
                    "task {} has not moved for {waited:.0} s (at {at}, waiting on {on}) while its event loop kept running other tasks{}",
                    t.name,
                    link.unwrap_or_default()
                ),
                threads: t.thread.into_iter().collect(),
                tasks,
                locks: vec![],
                evidence,
            });
        }
        out
    }

    /// Number of stuck tasks per interpreter-wide count (for metrics).
    pub fn stuck_count(&self, stuck_after: f64, s: &Snapshot) -> usize {
        self.stuck_ids(stuck_after, s).len()
    }

    /// `loop-lag` findings: loops where a callback has waited in the ready queue for at least
    /// `threshold` s (measured from the deque's mutation counter between samples).
    pub fn loop_lag(&self, threshold: f64, s: &Snapshot) -> Vec<Finding> {
        let mut out = Vec::new();
        for lp in &s.loops {
            let Some(tr) = self.loops.get(&lp.address) else { continue };
            if tr.lag < threshold {
                continue;
            }
            let thread = lp.thread.map(|t| format!("thread {t}")).unwrap_or_else(|| "an unknown thread".into());
            out.push(Finding {
                kind: "loop-lag".into(),
                severity: "warning".into(),
                summary: format!(
                    "event loop {} on {thread} keeps work waiting: a callback has waited {:.1} s in its ready \
                     queue ({} queued now); it is fed faster than it runs",
                    lp.address,
                    tr.lag,
                    tr.ready.map(|r| r.to_string()).unwrap_or_else(|| "?".into())
                ),
                threads: lp.thread.into_iter().collect(),
                tasks: lp.current_task.iter().cloned().collect(),
                locks: vec![],
                evidence: vec![],
            });
        }
        out
    }

    /// The worst ready-queue wait of each loop now, seconds (for metrics).
    pub fn loop_lags(&self) -> impl Iterator<Item = (&str, f64)> {
        self.loops.iter().map(|(k, v)| (k.as_str(), v.lag))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LoopSnap, PythonInfo, WaitingOn};

    fn snap(tasks: Vec<TaskSnap>, loops: Vec<LoopSnap>) -> Snapshot {
        Snapshot {
            schema: "taskspy/1".into(),
            pid: 1,
            captured_at: String::new(),
            python: PythonInfo {
                version: "3.12.1".into(),
                executable: "/p".into(),
                free_threaded: false,
                gil_enabled: true,
                library: None,
                gil_reason: None,
            },
            threads: vec![],
            tasks,
            findings: vec![],
            interpreters: vec![],
            capture: None,
            cmdline: None,
            locks: vec![],
            ns_pid: None,
            loops,
        }
    }

    fn task(id: &str, offset: i64) -> TaskSnap {
        TaskSnap {
            id: id.into(),
            name: compact_str::format_compact!("n{id}"),
            state: "pending".into(),
            event_loop: Some("0xl".into()),
            await_point: Some(AwaitPoint { code: "0xc".into(), offset, awaited: Some("0xf".into()) }),
            waiting_on: WaitingOn { kind: "future".into(), future: Some("0xf".into()), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn stuck_only_while_the_loop_moves_on() {
        let mut p = Progress::default();
        // t=0..40: "a" never moves; "b" moves every sample.
        for i in 0..=40 {
            p.observe(&snap(vec![task("a", 10), task("b", i)], vec![]), i as f64);
        }
        let s = snap(vec![task("a", 10), task("b", 40)], vec![]);
        let f = p.stuck_tasks(30.0, &s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].tasks, vec!["a".to_string()]);
        assert!(f[0].summary.contains("40 s"));
        assert_eq!(p.waiting_s("a"), Some(40.0));
        assert!(p.stuck_tasks(50.0, &s).is_empty(), "not before the threshold");
        // A loop where nothing moves at all is idle, not stuck.
        let mut q = Progress::default();
        for i in 0..=40 {
            q.observe(&snap(vec![task("a", 10), task("b", 7)], vec![]), i as f64);
        }
        assert!(q.stuck_tasks(30.0, &s).is_empty());
    }

    #[test]
    fn loop_running_callbacks_counts_as_moving_on() {
        // Two samples only; the other task ("b", a sleep loop) looks unmoved both times, but the
        // ready deque's counter moved: the loop ran work while "a" sat there.
        let lp = |state: u64| LoopSnap {
            address: "0xl".into(),
            interpreter: 0,
            thread: Some(5),
            running: true,
            current_task: None,
            in_selector: Some(true),
            ready: Some(0),
            ready_mutations: Some(state),
        };
        let mut sleeper = task("b", 3);
        sleeper.waiting_on.kind = "sleep".into();
        let mut p = Progress::default();
        p.observe(&snap(vec![task("a", 10), sleeper.clone()], vec![lp(100)]), 0.0);
        let s = snap(vec![task("a", 10), sleeper.clone()], vec![lp(160)]);
        p.observe(&s, 3.0);
        let f = p.stuck_tasks(2.0, &s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].tasks, vec!["a".to_string()]);
        // The same counter both times: an idle loop, nothing stuck.
        let mut q = Progress::default();
        q.observe(&snap(vec![task("a", 10), sleeper.clone()], vec![lp(100)]), 0.0);
        let s2 = snap(vec![task("a", 10), sleeper], vec![lp(100)]);
        q.observe(&s2, 3.0);
        assert!(q.stuck_tasks(2.0, &s2).is_empty());
    }

    #[test]
    fn queued_work_waits_until_as_many_pops_as_were_ahead() {
        let lp = |ready: u64, state: u64| LoopSnap {
            address: "0xl".into(),
            interpreter: 0,
            thread: Some(5),
            running: true,
            current_task: None,
            in_selector: Some(false),
            ready: Some(ready),
            ready_mutations: Some(state),
        };
        // Fed faster than it runs: +300 appends, +100 pops per second.
        let mut p = Progress::default();
        let (mut len, mut st) = (100u64, 1000u64);
        for i in 0..=4 {
            p.observe(&snap(vec![], vec![lp(len, st)]), i as f64);
            len += 200;
            st += 400;
        }
        // At t=4 the last callback queued at t=2 (500 ahead of it, 100 run per second) still waits;
        // the one queued at t=1 (300 ahead) has just run.
        let f = p.loop_lag(2.0, &snap(vec![], vec![lp(len, st)]));
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].summary.contains("2.0 s"), "{}", f[0].summary);
        // Saturated but draining (one queued, a thousand run per second): no lag.
        let mut q = Progress::default();
        for i in 0..=4u64 {
            q.observe(&snap(vec![], vec![lp(1, 7 + 2000 * i)]), i as f64);
        }
        assert!(q.loop_lag(0.5, &snap(vec![], vec![lp(1, 8007)])).is_empty());
    }
}
