//! `taskspy deadlocks`: findings over one snapshot or samples over `--duration` (live), a core, or
//! saved snapshots (a series of them counts as samples over time). Exit 3 on findings.

use super::family::{self, FamilyOptions};
use super::origin::{self, Origin};
use super::Output;
use crate::analysis::{OverTime, Series};
use crate::error::{exit, Error, Result};
use crate::model::processes::ProcessEntry;
use crate::model::time::parse_rfc3339;
use crate::model::{Finding, Snapshot};
use crate::render::escape::escape;
use crate::snapshot::CaptureOptions;
use crate::source::pause;
use crate::source::proctree::{self, ProcEntry};
use std::collections::BTreeSet;
use std::collections::{HashMap, HashSet};
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
                // More than one sample when a duration is asked for.
                let each = if opts.duration > 0.0 { CaptureOptions::repeated() } else { CaptureOptions::full() };
                let snap = origin::warn_partial(origin::with_findings(origin::capture(&py, &opts.origin, each)?));
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
    Ok(report(opts, &mut series, last, secs, over_time))
}

/// The findings of a series ending in `last`, as the command prints them, exit 3 when any.
fn report(opts: &DeadlockOptions, series: &mut Series, mut last: Snapshot, secs: f64, over_time: bool) -> Output {
    let thresholds = OverTime { blocked: opts.threshold, stuck_after: opts.stuck_after, lag: opts.lag_threshold };
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
    Output::WithCode(Box::new(out), code)
}

/// One process of the tree being sampled.
struct Member {
    listed: ProcEntry,
    entry: ProcessEntry,
    series: Series,
    last: Option<Snapshot>,
    first_at: f64,
}

/// `deadlocks --subprocesses`: every Python process of the tree sampled over `--duration`, the
/// tree listed again each round so workers started meanwhile are sampled too.
pub fn run_family(opts: &DeadlockOptions, fo: &FamilyOptions) -> Result<Output> {
    pause::install_interrupt_handler();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(opts.duration.max(0.0));
    let mut members: Vec<Member> = Vec::new();
    let mut done: Vec<ProcessEntry> = Vec::new();
    let mut known: HashSet<(i32, u64)> = HashSet::new();
    let mut root_error = None;
    let mut readers: HashMap<i32, crate::runtime::PyProcess> = HashMap::new();
    loop {
        // New processes of the tree (the root gone: nothing more will appear).
        if let Ok(listed) = proctree::family(fo.root, fo.depth) {
            for l in &listed {
                if !known.insert((l.pid, l.start_time)) {
                    continue;
                }
                let mut entry = family::entry_of(l, &listed);
                match origin::open_reader(&fo.origin(l.pid)) {
                    Ok(Some(py)) => {
                        readers.insert(l.pid, py);
                        members.push(Member {
                            listed: l.clone(),
                            entry,
                            series: Series::default(),
                            last: None,
                            first_at: start.elapsed().as_secs_f64(),
                        });
                    }
                    Ok(None) => {}
                    Err(Error::Interrupted) => return Err(Error::Interrupted),
                    Err(e) => {
                        let e = if proctree::same_process(l) || matches!(e, Error::NotPython { .. }) {
                            e
                        } else {
                            Error::TargetExited(l.pid)
                        };
                        family::record_error(&mut entry, &e, l);
                        if l.pid == fo.root {
                            root_error = Some(e);
                        }
                        done.push(entry);
                    }
                }
            }
        } else if members.is_empty() && done.is_empty() {
            return Err(Error::NoSuchProcess(fo.root));
        }
        let mut i = 0;
        while i < members.len() {
            let m = &mut members[i];
            let Some(py) = readers.get(&m.listed.pid) else {
                i += 1;
                continue;
            };
            let snap = origin::capture(py, &fo.origin(m.listed.pid), CaptureOptions::full());
            let gone = !proctree::same_process(&m.listed) || proctree::execed(&m.listed);
            match snap {
                Ok(s) if !gone => {
                    let s = origin::warn_partial(origin::with_findings(s));
                    m.entry.role = crate::analysis::roles::refine(m.entry.role.take(), &s);
                    m.series.add(&s, &s.findings, start.elapsed().as_secs_f64() - m.first_at);
                    m.last = Some(s);
                    i += 1;
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                other => {
                    let e = match other {
                        Err(e) if !gone => e,
                        _ => Error::TargetExited(m.listed.pid),
                    };
                    let mut m = members.remove(i);
                    readers.remove(&m.listed.pid);
                    family::record_error(&mut m.entry, &e, &m.listed);
                    done.push(m.entry);
                }
            }
        }
        if Instant::now() >= end || pause::interrupted() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pause::check_interrupted()?;
    let mut texts = Vec::new();
    let mut entries = done;
    for mut m in members {
        let Some(last) = m.last.take() else { continue };
        let secs = start.elapsed().as_secs_f64() - m.first_at;
        let out = report(opts, &mut m.series, last, secs, opts.duration > 0.0);
        if out.exit_code() != 0 {
            m.entry.exit_code = Some(out.exit_code());
        }
        if opts.json {
            m.entry.document = Some(out.to_json_value());
        } else {
            texts.push((m.entry.pid, out.text()));
        }
        entries.push(m.entry);
    }
    family::sort_tree(&mut entries);
    family::finish("deadlocks", fo, entries, texts, root_error, opts.json)
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
