//! `taskspy deadlocks`: findings over one snapshot or samples over `--duration` (live), a core, or
//! saved snapshots (a series of them counts as samples over time). Exit 3 on findings.

use super::origin::{self, Origin};
use super::Output;
use crate::analysis::{OverTime, Series};
use crate::error::{exit, Result};
use crate::model::time::parse_rfc3339;
use crate::model::{Finding, Snapshot};
use crate::render::escape::escape;
use crate::snapshot::CaptureOptions;
use crate::source::pause;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::{Duration, Instant};

pub struct DeadlockOptions {
    pub origin: Origin,
    pub duration: f64,
    pub threshold: f64,
    pub stuck_after: f64,
    pub lag_threshold: f64,
    pub json: bool,
}

pub fn run(opts: &DeadlockOptions) -> Result<Output> {
    pause::install_interrupt_handler();
    let mut series = Series::default();
    let start = Instant::now();
    let (last, secs, over_time) = match origin::open_reader(&opts.origin)? {
        None => {
            // Saved snapshots: their own timestamps make the series.
            let snaps = origin::snapshots(&opts.origin, CaptureOptions::full())?;
            let t0 = snaps.first().and_then(|s| parse_rfc3339(&s.captured_at)).unwrap_or(0.0);
            let mut t_last = 0.0;
            for (i, s) in snaps.iter().enumerate() {
                let t = parse_rfc3339(&s.captured_at).map(|t| t - t0).unwrap_or(i as f64);
                series.add(s, &s.findings, t);
                t_last = t;
            }
            let n = snaps.len();
            (snaps.into_iter().last(), t_last, n > 1)
        }
        Some(py) => {
            let end = start + Duration::from_secs_f64(opts.duration.max(0.0));
            let mut last: Option<Snapshot>;
            loop {
                let snap = origin::warn_partial(origin::with_findings(origin::capture(
                    &py,
                    &opts.origin,
                    CaptureOptions::full(),
                )?));
                series.add(&snap, &snap.findings, start.elapsed().as_secs_f64());
                last = Some(snap);
                if Instant::now() >= end || pause::interrupted() || !matches!(opts.origin, Origin::Live { .. }) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            pause::check_interrupted()?;
            (last, start.elapsed().as_secs_f64(), opts.duration > 0.0)
        }
    };
    let Some(last) = last else { return Err(crate::error::Error::other("no snapshot")) };
    let thresholds = OverTime { blocked: opts.threshold, stuck_after: opts.stuck_after, lag: opts.lag_threshold };
    let mut last = last;
    series.progress.annotate(&mut last);
    let findings = series.findings(over_time.then_some(thresholds), &last);
    let code = if findings.is_empty() { exit::OK } else { exit::FINDINGS };
    let out = if opts.json {
        Output::Json(serde_json::json!({
            "schema": "taskspy-deadlocks/1", "pid": last.pid, "captured_at": last.captured_at,
            "python": last.python, "samples": series.samples, "duration_s": secs,
            "findings": findings,
        }))
    } else {
        Output::Text(text(&findings, last.pid, series.samples as u32, secs))
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
        for e in f.evidence.iter().take(16) {
            let _ = writeln!(o, "  {} — {}", escape(&e.actor), escape(&e.note));
            for fr in e.frames.iter().take(8) {
                let _ = writeln!(o, "      {} ({}:{})", escape(&fr.function), escape(&fr.file), fr.line);
            }
        }
        if f.evidence.len() > 16 {
            let _ = writeln!(o, "  … and {} more", f.evidence.len() - 16);
        }
    }
    o
}
