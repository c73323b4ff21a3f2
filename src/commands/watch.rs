//! `taskspy watch PID`: sample at an interval and print each finding as it appears (deadlock
//! candidates, stuck tasks, loop lag, blocked loops), as text or one JSON object per line.

use super::origin::{self, Origin};
use super::Output;
use crate::analysis::Series;
use crate::error::Result;
use crate::model::Finding;
use crate::render::escape::escape;
use crate::snapshot::CaptureOptions;
use crate::source::pause;
use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

pub struct WatchOptions {
    pub pid: i32,
    pub interval: f64,
    /// Stop after this many seconds (run until Ctrl-C when absent).
    pub for_s: Option<f64>,
    pub json: bool,
    pub thresholds: Thresholds,
}

/// How long something must last to be reported.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// A task at the same await point this long while its loop runs others: `stuck-task`.
    pub stuck_after: f64,
    /// A callback this long in a loop's ready queue: `loop-lag`.
    pub lag: f64,
    /// A loop running one task synchronously this long: `blocked-loop`.
    pub blocked: f64,
}

fn key(f: &Finding) -> String {
    let mut m: Vec<String> = f.tasks.clone();
    m.extend(f.threads.iter().map(|t| t.to_string()));
    m.sort();
    format!("{}:{}", f.kind, m.join(","))
}

pub fn run(opts: &WatchOptions) -> Result<Output> {
    pause::install_interrupt_handler();
    let origin = Origin::Live { pid: opts.pid, blocking: false, pause_ms: 200 };
    let Some(py) = origin::open_reader(&origin)? else { return Err(crate::error::Error::other("no reader")) };
    let start = Instant::now();
    let interval = Duration::from_secs_f64(opts.interval.clamp(0.05, 3600.0));
    let mut series = Series::default();
    let mut reported: HashSet<String> = HashSet::new();
    let mut stdout = std::io::stdout().lock();
    let mut count = 0usize;
    loop {
        let t = start.elapsed().as_secs_f64();
        let snap = match origin::capture(&py, &origin, CaptureOptions::repeated()) {
            Ok(s) => origin::with_findings(s),
            Err(crate::error::Error::TargetExited(_)) => {
                let _ = writeln!(stdout, "{}", gone_line(opts, t));
                break;
            }
            Err(e) => return Err(e),
        };
        series.add(&snap, &snap.findings, t);
        let th = opts.thresholds;
        let now = series.findings_now(&snap, th.stuck_after, th.lag, th.blocked);
        for f in now {
            if reported.insert(key(&f)) {
                count += 1;
                let line = if opts.json {
                    serde_json::json!({
                        "schema": "taskspy-watch/1", "pid": opts.pid, "at": snap.captured_at,
                        "elapsed_s": (t * 10.0).round() / 10.0, "finding": f,
                    })
                    .to_string()
                } else {
                    format!("{} [{}] {}: {}", snap.captured_at, f.severity.to_uppercase(), f.kind, escape(&f.summary))
                };
                if writeln!(stdout, "{line}").and_then(|_| stdout.flush()).is_err() {
                    return Ok(Output::Text(String::new())); // reader went away (`| head`)
                }
            }
        }
        if opts.for_s.map(|f| start.elapsed().as_secs_f64() >= f).unwrap_or(false) || pause::interrupted() {
            break;
        }
        std::thread::sleep(interval);
    }
    pause::check_interrupted()?;
    let code = if count > 0 { crate::error::exit::FINDINGS } else { crate::error::exit::OK };
    Ok(Output::WithCode(Box::new(Output::Text(String::new())), code))
}

fn gone_line(opts: &WatchOptions, t: f64) -> String {
    if opts.json {
        serde_json::json!({"schema": "taskspy-watch/1", "pid": opts.pid, "elapsed_s": t, "exited": true}).to_string()
    } else {
        format!("PID {} exited after {t:.1} s", opts.pid)
    }
}
