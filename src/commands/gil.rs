//! `taskspy gil`: sample GIL ownership and thread states at a fixed rate without pausing the
//! target, then report shares per thread, CPU use from /proc, top stacks while holding, switches/s.

use super::family::{self, FamilyOptions};
use super::Output;
use crate::analysis::gil::{GilReport, GilStats};
use crate::error::Error;
use crate::error::Result;
use crate::model::processes::ProcessEntry;
use crate::render::escape::escape;
use crate::runtime::PyProcess;
use crate::snapshot::{self, gil_sample};
use crate::source::proctree::{self, ProcEntry};
use crate::source::{self, os::clock_ticks_per_second, pause};
use std::collections::HashMap;
use std::collections::HashSet;
use std::fmt::Write;
use std::time::{Duration, Instant};

pub struct GilOptions {
    pub pid: i32,
    pub duration: f64,
    pub rate: f64,
    pub json: bool,
}

/// Sampling of one process: its reader, what the first look told, and the statistics so far.
struct GilRun {
    py: PyProcess,
    pid: i32,
    first: crate::model::Snapshot,
    names: HashMap<i32, Option<String>>,
    tid_by_ident: HashMap<u64, i32>,
    stats: GilStats,
    errors: u64,
    cpu0: HashMap<i32, u64>,
    start: Instant,
    exited: bool,
}

impl GilRun {
    fn open(pid: i32) -> Result<GilRun> {
        let py = PyProcess::open(source::attach(pid)?)?;
        let first = snapshot::capture(&py)?;
        let names = first.threads.iter().filter_map(|t| Some((t.tid?, t.name.clone()))).collect();
        let tid_by_ident = first.threads.iter().filter_map(|t| Some((t.ident, t.tid?))).collect();
        let stats = if py.free_threaded { GilStats::free_threaded() } else { GilStats::default() };
        let cpu0 = py.os.cpu_ticks();
        Ok(GilRun { py, pid, first, names, tid_by_ident, stats, errors: 0, cpu0, start: Instant::now(), exited: false })
    }

    fn sample(&mut self) {
        match gil_sample::sample(&self.py, &self.tid_by_ident) {
            Ok(s) => self.stats.add(&s),
            Err(crate::source::MemError::Exited) => self.exited = true,
            Err(_) => self.errors += 1,
        }
    }

    /// The report as the command prints it.
    fn finish(mut self, rate: f64, json: bool) -> Output {
        let elapsed = self.start.elapsed().as_secs_f64();
        let cpu1 = self.py.os.cpu_ticks();
        let hz = clock_ticks_per_second();
        let cpu0 = &self.cpu0;
        let cpu: HashMap<i32, f64> = cpu1
            .iter()
            .map(|(tid, t1)| {
                (*tid, (*t1 - cpu0.get(tid).copied().unwrap_or(*t1).min(*t1)) as f64 / hz / elapsed * 100.0)
            })
            .collect();
        for tid in cpu.keys() {
            self.names.entry(*tid).or_insert(None);
        }
        let report = self.stats.report(elapsed, rate, &self.names, &cpu, 3);
        let first = &self.first;
        let note = match (&first.python.gil_reason, first.python.free_threaded, first.python.gil_enabled) {
            (_, true, false) => Some(
                "free-threaded build with the GIL disabled: no GIL to contend for; what limits parallelism is below"
                    .to_string(),
            ),
            (Some(r), true, true) => Some(format!("free-threaded build, GIL {}", r.detail)),
            _ => None,
        };
        if json {
            let mut v = serde_json::to_value(&report).unwrap_or_default();
            v["schema"] = "taskspy-gil/1".into();
            v["pid"] = self.pid.into();
            v["python"] = serde_json::to_value(&first.python).unwrap_or_default();
            v["read_errors"] = self.errors.into();
            v["note"] = note.clone().into();
            return Output::Json(v);
        }
        Output::Text(text(&report, &first.python, self.pid, note.as_deref(), self.errors))
    }
}

/// Sleep until the next tick of a fixed-rate loop (no burst to catch up after falling behind).
fn tick(next: &mut Instant, period: Duration) {
    *next += period;
    let now = Instant::now();
    if *next > now {
        std::thread::sleep(*next - now);
    } else if now - *next > period * 10 {
        *next = now;
    }
}

pub fn run(opts: &GilOptions) -> Result<Output> {
    pause::install_interrupt_handler();
    let mut run = GilRun::open(opts.pid)?;
    let rate = opts.rate.clamp(1.0, 100_000.0);
    let period = Duration::from_secs_f64(1.0 / rate);
    let end = run.start + Duration::from_secs_f64(opts.duration.max(0.01));
    let mut next = run.start;
    while Instant::now() < end && !pause::interrupted() && !run.exited {
        run.sample();
        tick(&mut next, period);
    }
    Ok(run.finish(rate, opts.json))
}

/// `gil --subprocesses`: every Python process of the tree sampled at the rate, round-robin; the
/// tree is listed again every second so workers started meanwhile are sampled from then on.
pub fn run_family(opts: &GilOptions, fo: &FamilyOptions) -> Result<Output> {
    pause::install_interrupt_handler();
    let rate = opts.rate.clamp(1.0, 100_000.0);
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(opts.duration.max(0.01));
    let mut runs: Vec<(ProcEntry, ProcessEntry, GilRun)> = Vec::new();
    let mut done: Vec<ProcessEntry> = Vec::new();
    let mut known: HashSet<(i32, u64)> = HashSet::new();
    let mut root_error = None;
    let mut listed_at: Option<Instant> = None;
    let mut next = start;
    loop {
        if listed_at.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            listed_at = Some(Instant::now());
            match proctree::family(fo.root, fo.depth) {
                Ok(listed) => {
                    for l in &listed {
                        if !known.insert((l.pid, l.start_time)) {
                            continue;
                        }
                        let mut entry = family::entry_of(l, &listed);
                        match GilRun::open(l.pid) {
                            Ok(r) => {
                                entry.role = crate::analysis::roles::refine(entry.role.take(), &r.first);
                                runs.push((l.clone(), entry, r));
                            }
                            Err(Error::Interrupted) => return Err(Error::Interrupted),
                            Err(e) => {
                                family::record_error(&mut entry, &e, l);
                                if l.pid == fo.root {
                                    root_error = Some(e);
                                }
                                done.push(entry);
                            }
                        }
                    }
                }
                Err(e) if runs.is_empty() && done.is_empty() => return Err(e),
                Err(_) => {}
            }
        }
        for (_, _, r) in runs.iter_mut().filter(|(_, _, r)| !r.exited) {
            r.sample();
        }
        if Instant::now() >= end || pause::interrupted() {
            break;
        }
        tick(&mut next, period);
    }
    pause::check_interrupted()?;
    let mut entries = done;
    let mut texts = Vec::new();
    for (l, mut entry, r) in runs {
        if r.exited || !proctree::same_process(&l) {
            family::record_error(&mut entry, &Error::TargetExited(l.pid), &l);
        } else {
            let out = r.finish(rate, opts.json);
            if opts.json {
                entry.document = Some(out.to_json_value());
            } else {
                texts.push((entry.pid, out.text()));
            }
        }
        entries.push(entry);
    }
    family::sort_tree(&mut entries);
    family::finish("gil", fo, entries, texts, root_error, opts.json)
}

fn frame_text(f: &Option<crate::model::Frame>) -> String {
    f.as_ref().map(|f| format!(" in {} ({}:{})", escape(&f.function), escape(&f.file), f.line)).unwrap_or_default()
}

fn free_threading_text(o: &mut String, ft: &crate::analysis::gil::FreeThreadingReport) {
    let dist: Vec<String> = ft
        .parallelism_pct
        .iter()
        .enumerate()
        .filter(|(_, p)| **p > 0.0)
        .map(|(n, p)| format!("{n}: {p:.1}%"))
        .collect();
    let _ = writeln!(
        o,
        "Threads running Python at once: {:.2} on average, at most {} (share of samples by count: {})",
        ft.parallelism,
        ft.parallelism_max,
        dist.join(", ")
    );
    let _ = writeln!(o, "Stop-the-world pauses: {:.1}% of samples", ft.stop_the_world_pct);
    for w in &ft.stop_the_world_by {
        let who = match (w.requester, &w.requester_name) {
            (Some(t), Some(n)) => format!("thread {t} ({})", escape(n)),
            (Some(t), None) => format!("thread {t}"),
            _ => "an unknown thread".to_string(),
        };
        let what = if w.gc { "garbage collection" } else { "a pause" };
        let _ = writeln!(o, "  {:>5.1}%  {what} requested by {who}{}", w.pct, frame_text(&w.frame));
    }
    if !ft.lock_waits.is_empty() {
        let _ = writeln!(o, "Threads blocked acquiring a lock (detached, not running Python):");
        for w in &ft.lock_waits {
            let name = w.name.as_deref().map(escape).unwrap_or_else(|| "-".into());
            let lock = match &w.lock.name {
                Some(n) => format!("{} '{}' {}", w.lock.kind, escape(n), w.lock.address),
                None => format!("{} {}", w.lock.kind, w.lock.address),
            };
            let _ = writeln!(o, "  {:>5.1}%  {name} ({}) on {lock}{}", w.pct, w.tid, frame_text(&w.frame));
        }
    }
}

fn text(r: &GilReport, python: &crate::model::PythonInfo, pid: i32, note: Option<&str>, errors: u64) -> String {
    let version = &python.version;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "GIL sampling of PID {pid} (Python {version}): {:.1} s, {} samples, {} Hz requested, {} Hz achieved{}",
        r.duration_s,
        r.samples,
        r.requested_rate_hz,
        r.achieved_rate_hz,
        if r.achieved_rate_hz < r.requested_rate_hz * 0.9 { " (could not keep the requested rate)" } else { "" }
    );
    if let Some(n) = note {
        let _ = writeln!(o, "{n}");
    }
    if python.gil_enabled {
        let _ = writeln!(
            o,
            "GIL held in {:.1}% of samples{}",
            r.gil_held_pct,
            r.switches_per_s.map(|s| format!(", {s:.1} switches/s")).unwrap_or_default()
        );
    }
    if errors > 0 {
        let _ = writeln!(o, "({errors} samples could not be read and were skipped)");
    }
    if let Some(ft) = &r.free_threading {
        free_threading_text(&mut o, ft);
    }
    let ft = r.free_threading.is_some();
    if ft {
        let _ = writeln!(
            o,
            "\n{:<9} {:<24} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "TID", "NAME", "HOLDS", "WAITS", "PYTHON", "LOCKWAIT", "CPU"
        );
    } else {
        let _ = writeln!(o, "\n{:<9} {:<24} {:>8} {:>8} {:>8}", "TID", "NAME", "HOLDS", "WAITS", "CPU");
    }
    for t in &r.threads {
        let name = t.name.as_deref().map(escape).unwrap_or_else(|| "-".into());
        let cpu = t.cpu_pct.map(|c| format!("{c:.1}%")).unwrap_or_else(|| "-".into());
        if ft {
            let _ = writeln!(
                o,
                "{:<9} {:<24} {:>7.1}% {:>7.1}% {:>7.1}% {:>7.1}% {:>8}",
                t.tid,
                name,
                t.holds_gil_pct,
                t.waiting_gil_pct,
                t.running_python_pct.unwrap_or(0.0),
                t.lock_wait_pct.unwrap_or(0.0),
                cpu
            );
        } else {
            let _ = writeln!(
                o,
                "{:<9} {:<24} {:>7.1}% {:>7.1}% {:>8}",
                t.tid, name, t.holds_gil_pct, t.waiting_gil_pct, cpu
            );
        }
    }
    for t in r.threads.iter().filter(|t| !t.top_stacks.is_empty()) {
        let name = t.name.as_deref().map(escape).unwrap_or_else(|| "-".into());
        let _ = writeln!(o, "\nWhile {name} ({}) held the GIL:", t.tid);
        for s in &t.top_stacks {
            let frames: Vec<String> = s
                .frames
                .iter()
                .take(4)
                .map(|f| format!("{} ({}:{})", escape(&f.function), escape(&f.file), f.line))
                .collect();
            let _ = writeln!(o, "  {:>5.1}%  {}", s.pct, frames.join(" <- "));
        }
    }
    o
}
