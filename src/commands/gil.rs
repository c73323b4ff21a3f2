//! `taskspy gil`: sample GIL ownership and thread states at a fixed rate without pausing the
//! target, then report shares per thread, CPU use from /proc, top stacks while holding, switches/s.

use super::Output;
use crate::analysis::gil::{GilReport, GilStats, ThreadSample};
use crate::error::Result;
use crate::render::escape::escape;
use crate::runtime::PyProcess;
use crate::snapshot;
use crate::source::{self, os::clock_ticks_per_second, pause};
use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

pub struct GilOptions {
    pub pid: i32,
    pub duration: f64,
    pub rate: f64,
    pub json: bool,
}

pub fn run(opts: &GilOptions) -> Result<Output> {
    pause::install_interrupt_handler();
    let py = PyProcess::open(source::attach(opts.pid)?)?;
    let first = snapshot::capture(&py)?;
    let mut names: HashMap<i32, Option<String>> =
        first.threads.iter().filter_map(|t| Some((t.tid?, t.name.clone()))).collect();
    let tid_by_ident: HashMap<u64, i32> = first.threads.iter().filter_map(|t| Some((t.ident, t.tid?))).collect();
    let free_threaded_no_gil = first.python.free_threaded && !first.python.gil_enabled;

    let rate = opts.rate.clamp(1.0, 100_000.0);
    let period = Duration::from_secs_f64(1.0 / rate);
    let cpu0 = py.os.cpu_ticks();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(opts.duration.max(0.01));
    let mut next = start;
    let mut stats = GilStats::default();
    let mut errors = 0u64;
    let current_is_global = py.off.rt_tstate_current.is_some();
    while Instant::now() < end && !pause::interrupted() {
        match sample(&py, &tid_by_ident, current_is_global) {
            Ok((held, sw, threads)) => stats.add(held, sw, &threads),
            Err(crate::source::MemError::Exited) => break,
            Err(_) => errors += 1,
        }
        next += period;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > period * 10 {
            next = now; // fell far behind: do not try to catch up in a burst
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = py.os.cpu_ticks();
    let hz = clock_ticks_per_second();
    let cpu: HashMap<i32, f64> = cpu1
        .iter()
        .map(|(tid, t1)| (*tid, (*t1 - cpu0.get(tid).copied().unwrap_or(*t1).min(*t1)) as f64 / hz / elapsed * 100.0))
        .collect();
    for tid in cpu.keys() {
        names.entry(*tid).or_insert(None);
    }
    let report = stats.report(elapsed, rate, &names, &cpu, 3);
    let note = if free_threaded_no_gil {
        Some("free-threaded build with the GIL disabled: there is no GIL to contend for".to_string())
    } else if first.python.free_threaded {
        Some("free-threaded build, but the GIL is enabled at run time (an extension module without free-threading support re-enables it)".to_string())
    } else {
        None
    };
    if opts.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        v["schema"] = "taskspy-gil/1".into();
        v["pid"] = opts.pid.into();
        v["python"] = serde_json::to_value(&first.python).unwrap_or_default();
        v["read_errors"] = errors.into();
        v["note"] = note.clone().into();
        return Ok(Output::Json(v));
    }
    Ok(Output::Text(text(&report, &first.python.version, opts.pid, note.as_deref(), errors)))
}

type Sample = (bool, Option<u64>, Vec<ThreadSample>);

fn sample(py: &PyProcess, tid_by_ident: &HashMap<u64, i32>, _global: bool) -> Result<Sample, crate::source::MemError> {
    let interps = py.interpreters()?;
    let current = py.tstate_current()?;
    let mut held = false;
    let mut sw = None;
    let mut out = Vec::new();
    for (i, interp) in interps.iter().enumerate() {
        if interp.id == 0 || i == 0 {
            held |= interp.gil_locked && interp.gil_enabled;
            sw = sw.or(interp.gil_switch_number);
        }
        for rec in py.threads_of(interp, current)? {
            let Some(tid) = rec.native_tid.or_else(|| tid_by_ident.get(&rec.ident).copied()) else { continue };
            let waiting = !rec.holds_gil
                && (rec.gil_requested || interp.is_gil_futex(py.os.thread_state(tid).futex_addr, py.off.gil_size));
            let stack = if rec.holds_gil { py.walk_frames(rec.top_frame).ok().map(|s| s.frames) } else { None };
            out.push(ThreadSample { tid, holds_gil: rec.holds_gil, waiting_gil: waiting, stack });
        }
    }
    Ok((held, sw, out))
}

fn text(r: &GilReport, version: &str, pid: i32, note: Option<&str>, errors: u64) -> String {
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
    let _ = writeln!(
        o,
        "GIL held in {:.1}% of samples{}",
        r.gil_held_pct,
        r.switches_per_s.map(|s| format!(", {s:.1} switches/s")).unwrap_or_default()
    );
    if errors > 0 {
        let _ = writeln!(o, "({errors} samples could not be read and were skipped)");
    }
    let _ = writeln!(o, "\n{:<9} {:<24} {:>8} {:>8} {:>8}", "TID", "NAME", "HOLDS", "WAITS", "CPU");
    for t in &r.threads {
        let name = t.name.as_deref().map(escape).unwrap_or_else(|| "-".into());
        let cpu = t.cpu_pct.map(|c| format!("{c:.1}%")).unwrap_or_else(|| "-".into());
        let _ =
            writeln!(o, "{:<9} {:<24} {:>7.1}% {:>7.1}% {:>8}", t.tid, name, t.holds_gil_pct, t.waiting_gil_pct, cpu);
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
