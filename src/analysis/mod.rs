//! analysis: pure functions over one snapshot or a series — the awaited-by tree and its cycles,
//! deadlock findings, blocked loops, GIL statistics. Nothing here reads target memory.

pub mod deadlock;
pub mod gil;
pub mod loops;
pub mod progress;
pub mod roles;
pub mod tree;

use crate::model::{Finding, Snapshot};
use rustc_hash::FxHashMap as HashMap;

/// Findings over a series of snapshots, fed one at a time (only the running state is kept):
/// deadlock candidates present in every snapshot (momentary contention is no alarm), and loops
/// that ran one task synchronously longer than a threshold.
#[derive(Default)]
pub struct Series {
    persistent: Option<HashMap<String, Finding>>,
    watch: loops::LoopWatch,
    pub progress: progress::Progress,
    pub samples: usize,
}

fn key(f: &Finding) -> String {
    let mut members: Vec<String> = f.tasks.clone();
    members.extend(f.threads.iter().map(|t| t.to_string()));
    members.sort();
    format!("{}:{}", f.kind, members.join(","))
}

impl Series {
    /// Add a snapshot taken at `t` seconds (any fixed origin); `findings` are its own (see
    /// `deadlock::findings`, or the ones a saved snapshot carries).
    pub fn add(&mut self, s: &Snapshot, findings: &[Finding], t: f64) {
        self.samples += 1;
        let this: HashMap<String, Finding> = findings.iter().map(|f| (key(f), f.clone())).collect();
        self.persistent = Some(match self.persistent.take() {
            None => this,
            Some(prev) => prev.into_keys().filter_map(|k| this.get(&k).map(|f| (k.clone(), f.clone()))).collect(),
        });
        self.watch.observe(s, t);
        self.progress.observe(s, t);
    }

    /// What is wrong now, for `watch`: the latest snapshot's deadlock candidates, stuck tasks,
    /// lagging and blocked loops.
    pub fn findings_now(&self, last: &Snapshot, stuck_after: f64, lag: f64, blocked: f64) -> Vec<Finding> {
        let mut out = last.findings.clone();
        out.extend(self.progress.stuck_tasks(stuck_after, last));
        let blocked = self.watch.findings(blocked, last);
        out.extend(without_blocked(self.progress.loop_lag(lag, last), &blocked));
        out.extend(blocked);
        out
    }

    /// The findings so far; over time (`over_time`) also blocked loops (`threshold`), stuck
    /// tasks (`stuck_after`) and lagging loops (`lag`).
    pub fn findings(&self, over_time: Option<OverTime>, last: &Snapshot) -> Vec<Finding> {
        let mut findings: Vec<Finding> = self.persistent.clone().unwrap_or_default().into_values().collect();
        findings.sort_by(|a, b| (&a.kind, &a.summary).cmp(&(&b.kind, &b.summary)));
        if let Some(o) = over_time {
            let blocked = self.watch.findings(o.blocked, last);
            findings.extend(self.progress.stuck_tasks(o.stuck_after, last));
            findings.extend(without_blocked(self.progress.loop_lag(o.lag, last), &blocked));
            findings.extend(blocked);
        }
        findings
    }
}

/// A blocked loop makes its queued work wait too: report the cause (blocked-loop), not both.
fn without_blocked(lag: Vec<Finding>, blocked: &[Finding]) -> Vec<Finding> {
    lag.into_iter().filter(|l| !blocked.iter().any(|b| b.threads.iter().any(|t| l.threads.contains(t)))).collect()
}

/// Thresholds of the findings only a series can show, seconds.
#[derive(Debug, Clone, Copy)]
pub struct OverTime {
    pub blocked: f64,
    pub stuck_after: f64,
    pub lag: f64,
}
