//! GIL and scheduling statistics over samples: share of samples the GIL was held, per thread the
//! share holding it and waiting for it and the stacks it ran while holding it, hand-offs per
//! second; on free-threaded builds how many threads ran Python at once, stop-the-world pauses and
//! who asked for them, and which threads sat blocked on which lock.

use crate::model::sample::{GilSample, StwSample};
use crate::model::{Frame, LockRef};
use serde::Serialize;
use std::collections::HashMap;

type StackKey = Vec<(String, String, i64)>;

fn key_of(frames: &[Frame]) -> StackKey {
    frames.iter().map(|f| (f.function.to_string(), f.file.to_string(), f.line)).collect()
}

#[derive(Debug, Default)]
struct Agg {
    hold: u64,
    wait: u64,
    running: u64,
    lock_wait: u64,
    seen: u64,
    stacks: HashMap<StackKey, (u64, Vec<Frame>)>,
}

#[derive(Debug, Default)]
pub struct GilStats {
    samples: u64,
    held: u64,
    threads: HashMap<i32, Agg>,
    first_switch: Option<u64>,
    last_switch: Option<u64>,
    free_threaded: bool,
    /// Samples by how many threads ran Python at once.
    parallel: Vec<u64>,
    stw: u64,
    stw_by: HashMap<StwSample, u64>,
    lock_waits: HashMap<(i32, String), (u64, LockRef, Option<Frame>)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StackShare {
    pub pct: f64,
    pub frames: Vec<Frame>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadGil {
    pub tid: i32,
    pub name: Option<String>,
    pub holds_gil_pct: f64,
    pub waiting_gil_pct: f64,
    pub cpu_pct: Option<f64>,
    pub top_stacks: Vec<StackShare>,
    /// Free-threaded builds: share of samples running Python on a CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_python_pct: Option<f64>,
    /// Free-threaded builds: share of samples blocked acquiring a lock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_wait_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StwShare {
    pub pct: f64,
    pub requester: Option<i32>,
    pub requester_name: Option<String>,
    /// The garbage collector was running during the pause.
    pub gc: bool,
    pub frame: Option<Frame>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LockWaitShare {
    pub tid: i32,
    pub name: Option<String>,
    pub pct: f64,
    pub lock: LockRef,
    pub frame: Option<Frame>,
}

/// What limits scaling without a GIL.
#[derive(Debug, Clone, Serialize)]
pub struct FreeThreadingReport {
    /// Mean number of threads running Python at the same time (effective parallelism).
    pub parallelism: f64,
    pub parallelism_max: usize,
    /// Share of samples (%) with 0, 1, 2... threads running Python.
    pub parallelism_pct: Vec<f64>,
    /// Share of samples with the world stopped (garbage collection, fork, ...).
    pub stop_the_world_pct: f64,
    pub stop_the_world_by: Vec<StwShare>,
    /// Threads detached and blocked acquiring a lock, by thread and lock.
    pub lock_waits: Vec<LockWaitShare>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GilReport {
    pub samples: u64,
    pub duration_s: f64,
    pub requested_rate_hz: f64,
    pub achieved_rate_hz: f64,
    pub gil_held_pct: f64,
    pub switches_per_s: Option<f64>,
    pub threads: Vec<ThreadGil>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_threading: Option<FreeThreadingReport>,
}

fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        (n as f64 * 1000.0 / d as f64).round() / 10.0
    }
}

impl GilStats {
    /// Statistics for a free-threaded build (parallelism, pauses, lock waits are reported).
    pub fn free_threaded() -> GilStats {
        GilStats { free_threaded: true, ..Default::default() }
    }

    pub fn add(&mut self, s: &GilSample) {
        self.samples += 1;
        if s.gil_held {
            self.held += 1;
        }
        if let Some(n) = s.switch_number {
            self.first_switch.get_or_insert(n);
            self.last_switch = Some(n);
        }
        let mut running = 0usize;
        for t in &s.threads {
            let a = self.threads.entry(t.tid).or_default();
            a.seen += 1;
            if t.holds_gil {
                a.hold += 1;
                if let Some(st) = &t.stack {
                    let e = a.stacks.entry(key_of(st)).or_insert_with(|| (0, st.clone()));
                    e.0 += 1;
                }
            }
            if t.waiting_gil {
                a.wait += 1;
            }
            if t.running_python {
                a.running += 1;
                running += 1;
            }
            if let Some((lock, frame)) = &t.lock_wait {
                a.lock_wait += 1;
                let e = self
                    .lock_waits
                    .entry((t.tid, lock.address.clone()))
                    .or_insert_with(|| (0, lock.clone(), frame.clone()));
                e.0 += 1;
            }
        }
        if self.free_threaded {
            if self.parallel.len() <= running {
                self.parallel.resize(running + 1, 0);
            }
            self.parallel[running] += 1;
            if let Some(w) = &s.stw {
                self.stw += 1;
                *self.stw_by.entry(w.clone()).or_default() += 1;
            }
        }
    }

    pub fn report(
        &self,
        duration_s: f64,
        rate: f64,
        names: &HashMap<i32, Option<String>>,
        cpu: &HashMap<i32, f64>,
        top: usize,
    ) -> GilReport {
        let ft = self.free_threaded;
        let mut threads: Vec<ThreadGil> = self
            .threads
            .iter()
            .map(|(tid, a)| {
                let mut stacks: Vec<&(u64, Vec<Frame>)> = a.stacks.values().collect();
                stacks.sort_by_key(|s| std::cmp::Reverse(s.0));
                ThreadGil {
                    tid: *tid,
                    name: names.get(tid).cloned().flatten(),
                    holds_gil_pct: pct(a.hold, self.samples),
                    waiting_gil_pct: pct(a.wait, self.samples),
                    cpu_pct: cpu.get(tid).map(|c| (c * 10.0).round() / 10.0),
                    top_stacks: stacks
                        .into_iter()
                        .take(top)
                        .map(|(n, f)| StackShare { pct: pct(*n, a.hold.max(1)), frames: f.clone() })
                        .collect(),
                    running_python_pct: ft.then(|| pct(a.running, self.samples)),
                    lock_wait_pct: ft.then(|| pct(a.lock_wait, self.samples)),
                }
            })
            .collect();
        threads.sort_by(|a, b| {
            (b.holds_gil_pct, b.running_python_pct.unwrap_or(0.0))
                .partial_cmp(&(a.holds_gil_pct, a.running_python_pct.unwrap_or(0.0)))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.tid.cmp(&b.tid))
        });
        let switches = match (self.first_switch, self.last_switch) {
            (Some(a), Some(b)) if duration_s > 0.0 => {
                Some(((b.wrapping_sub(a)) as f64 / duration_s * 10.0).round() / 10.0)
            }
            _ => None,
        };
        let free_threading = ft.then(|| self.free_threading_report(names));
        GilReport {
            samples: self.samples,
            duration_s,
            requested_rate_hz: rate,
            achieved_rate_hz: if duration_s > 0.0 { (self.samples as f64 / duration_s).round() } else { 0.0 },
            gil_held_pct: pct(self.held, self.samples),
            switches_per_s: switches,
            threads,
            free_threading,
        }
    }

    fn free_threading_report(&self, names: &HashMap<i32, Option<String>>) -> FreeThreadingReport {
        let total: u64 = self.parallel.iter().sum();
        let weighted: u64 = self.parallel.iter().enumerate().map(|(n, c)| n as u64 * c).sum();
        let mut by: Vec<StwShare> = self
            .stw_by
            .iter()
            .map(|(w, n)| StwShare {
                pct: pct(*n, self.samples),
                requester: w.requester,
                requester_name: w.requester.and_then(|t| names.get(&t).cloned().flatten()),
                gc: w.gc,
                frame: w.frame.clone(),
            })
            .collect();
        by.sort_by(|a, b| b.pct.partial_cmp(&a.pct).unwrap_or(std::cmp::Ordering::Equal));
        by.truncate(8);
        let mut waits: Vec<LockWaitShare> = self
            .lock_waits
            .iter()
            .map(|((tid, _), (n, lock, frame))| LockWaitShare {
                tid: *tid,
                name: names.get(tid).cloned().flatten(),
                pct: pct(*n, self.samples),
                lock: lock.clone(),
                frame: frame.clone(),
            })
            .collect();
        waits.sort_by(|a, b| b.pct.partial_cmp(&a.pct).unwrap_or(std::cmp::Ordering::Equal).then(a.tid.cmp(&b.tid)));
        waits.truncate(32);
        FreeThreadingReport {
            parallelism: if total == 0 { 0.0 } else { (weighted as f64 / total as f64 * 100.0).round() / 100.0 },
            parallelism_max: self.parallel.iter().rposition(|c| *c > 0).unwrap_or(0),
            parallelism_pct: self.parallel.iter().map(|c| pct(*c, total)).collect(),
            stop_the_world_pct: pct(self.stw, self.samples),
            stop_the_world_by: by,
            lock_waits: waits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::sample::ThreadSample;

    #[test]
    fn shares_and_switch_rate() {
        let mut s = GilStats::default();
        let f = |n: &str| Frame { function: n.into(), file: "/x.py".into(), line: 1 };
        for i in 0..100u64 {
            let holder = if i % 4 == 0 { 1 } else { 2 };
            let threads = vec![
                ThreadSample {
                    tid: 1,
                    holds_gil: holder == 1,
                    waiting_gil: holder != 1,
                    stack: Some(vec![f("a")]),
                    ..Default::default()
                },
                ThreadSample {
                    tid: 2,
                    holds_gil: holder == 2,
                    waiting_gil: holder != 2,
                    stack: Some(vec![f(if i % 2 == 0 { "b" } else { "c" })]),
                    ..Default::default()
                },
                ThreadSample { tid: 3, ..Default::default() },
            ];
            s.add(&GilSample { gil_held: true, switch_number: Some(1000 + i * 2), threads, stw: None });
        }
        let r = s.report(2.0, 1000.0, &HashMap::new(), &HashMap::new(), 3);
        assert_eq!(r.samples, 100);
        assert_eq!(r.gil_held_pct, 100.0);
        let t1 = r.threads.iter().find(|t| t.tid == 1).unwrap();
        let t2 = r.threads.iter().find(|t| t.tid == 2).unwrap();
        let t3 = r.threads.iter().find(|t| t.tid == 3).unwrap();
        assert_eq!(t1.holds_gil_pct, 25.0);
        assert_eq!(t1.waiting_gil_pct, 75.0);
        assert_eq!(t2.holds_gil_pct, 75.0);
        assert_eq!(t3.holds_gil_pct, 0.0);
        assert_eq!(t2.top_stacks.len(), 2);
        assert_eq!(r.switches_per_s, Some(99.0));
        assert!(r.free_threading.is_none());
    }

    #[test]
    fn free_threaded_parallelism_pauses_and_lock_waits() {
        let mut s = GilStats::free_threaded();
        let lock = LockRef { kind: "threading.Lock".into(), address: "0x10".into(), name: Some("shared".into()) };
        for i in 0..10 {
            let threads = vec![
                ThreadSample { tid: 1, running_python: true, ..Default::default() },
                ThreadSample { tid: 2, running_python: i % 2 == 0, ..Default::default() },
                ThreadSample { tid: 3, lock_wait: Some((lock.clone(), None)), ..Default::default() },
            ];
            let stw = (i == 0).then(|| StwSample { requester: Some(1), gc: true, frame: None });
            s.add(&GilSample { threads, stw, ..Default::default() });
        }
        let r = s.report(1.0, 10.0, &HashMap::new(), &HashMap::new(), 3);
        let ft = r.free_threading.unwrap();
        assert_eq!(ft.parallelism, 1.5);
        assert_eq!(ft.parallelism_max, 2);
        assert_eq!(ft.parallelism_pct, vec![0.0, 50.0, 50.0]);
        assert_eq!(ft.stop_the_world_pct, 10.0);
        assert!(ft.stop_the_world_by[0].gc);
        assert_eq!(ft.lock_waits.len(), 1);
        assert_eq!(ft.lock_waits[0].pct, 100.0);
        assert_eq!(r.threads.iter().find(|t| t.tid == 1).unwrap().running_python_pct, Some(100.0));
    }
}
