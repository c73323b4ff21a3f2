//! GIL statistics over samples: share of samples the GIL was held, per thread the share holding it
//! and waiting for it, the stacks it ran while holding it, and hand-offs per second.

use crate::model::Frame;
use serde::Serialize;
use std::collections::HashMap;

/// One observation of one thread.
#[derive(Debug, Clone)]
pub struct ThreadSample {
    pub tid: i32,
    pub holds_gil: bool,
    pub waiting_gil: bool,
    /// The thread's stack, only captured for the holder.
    pub stack: Option<Vec<Frame>>,
}

#[derive(Debug, Default)]
struct Agg {
    hold: u64,
    wait: u64,
    seen: u64,
    stacks: HashMap<Vec<(String, String, i64)>, (u64, Vec<Frame>)>,
}

#[derive(Debug, Default)]
pub struct GilStats {
    samples: u64,
    held: u64,
    threads: HashMap<i32, Agg>,
    first_switch: Option<u64>,
    last_switch: Option<u64>,
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
}

fn pct(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        (n as f64 * 1000.0 / d as f64).round() / 10.0
    }
}

impl GilStats {
    pub fn add(&mut self, gil_held: bool, switch_number: Option<u64>, threads: &[ThreadSample]) {
        self.samples += 1;
        if gil_held {
            self.held += 1;
        }
        if let Some(s) = switch_number {
            self.first_switch.get_or_insert(s);
            self.last_switch = Some(s);
        }
        for t in threads {
            let a = self.threads.entry(t.tid).or_default();
            a.seen += 1;
            if t.holds_gil {
                a.hold += 1;
                if let Some(st) = &t.stack {
                    let key: Vec<(String, String, i64)> =
                        st.iter().map(|f| (f.function.to_string(), f.file.to_string(), f.line)).collect();
                    let e = a.stacks.entry(key).or_insert_with(|| (0, st.clone()));
                    e.0 += 1;
                }
            }
            if t.waiting_gil {
                a.wait += 1;
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
        let mut threads: Vec<ThreadGil> = self
            .threads
            .iter()
            .map(|(tid, a)| {
                let mut stacks: Vec<&(u64, Vec<Frame>)> = a.stacks.values().collect();
                stacks.sort_by(|x, y| y.0.cmp(&x.0));
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
                }
            })
            .collect();
        threads.sort_by(|a, b| {
            b.holds_gil_pct.partial_cmp(&a.holds_gil_pct).unwrap_or(std::cmp::Ordering::Equal).then(a.tid.cmp(&b.tid))
        });
        let switches = match (self.first_switch, self.last_switch) {
            (Some(a), Some(b)) if duration_s > 0.0 => {
                Some(((b.wrapping_sub(a)) as f64 / duration_s * 10.0).round() / 10.0)
            }
            _ => None,
        };
        GilReport {
            samples: self.samples,
            duration_s,
            requested_rate_hz: rate,
            achieved_rate_hz: if duration_s > 0.0 { (self.samples as f64 / duration_s).round() } else { 0.0 },
            gil_held_pct: pct(self.held, self.samples),
            switches_per_s: switches,
            threads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_switch_rate() {
        let mut s = GilStats::default();
        let f = |n: &str| Frame { function: n.into(), file: "/x.py".into(), line: 1 };
        for i in 0..100u64 {
            let holder = if i % 4 == 0 { 1 } else { 2 };
            let ts = vec![
                ThreadSample { tid: 1, holds_gil: holder == 1, waiting_gil: holder != 1, stack: Some(vec![f("a")]) },
                ThreadSample {
                    tid: 2,
                    holds_gil: holder == 2,
                    waiting_gil: holder != 2,
                    stack: Some(vec![f(if i % 2 == 0 { "b" } else { "c" })]),
                },
                ThreadSample { tid: 3, holds_gil: false, waiting_gil: false, stack: None },
            ];
            s.add(true, Some(1000 + i * 2), &ts);
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
    }
}
