//! analysis: pure functions over one snapshot or a series — the awaited-by tree and its cycles,
//! deadlock findings, blocked loops, GIL statistics. Nothing here reads target memory.

pub mod deadlock;
pub mod gil;
pub mod loops;
pub mod tree;

use crate::model::{Finding, Snapshot};
use std::collections::HashMap;

/// Findings over a series of snapshots, fed one at a time (only the running state is kept):
/// deadlock candidates present in every snapshot (momentary contention is no alarm), and loops
/// that ran one task synchronously longer than a threshold.
#[derive(Default)]
pub struct Series {
    persistent: Option<HashMap<String, Finding>>,
    watch: loops::LoopWatch,
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
    }

    /// The findings so far; blocked loops only with a `threshold` (a series over time).
    pub fn findings(&self, threshold: Option<f64>, last: &Snapshot) -> Vec<Finding> {
        let mut findings: Vec<Finding> = self.persistent.clone().unwrap_or_default().into_values().collect();
        findings.sort_by(|a, b| (&a.kind, &a.summary).cmp(&(&b.kind, &b.summary)));
        if let Some(th) = threshold {
            findings.extend(self.watch.findings(th, last));
        }
        findings
    }
}
