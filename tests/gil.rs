//! `taskspy gil` on every supported CPython, with fixtures/gil_cpu.py: four CPU-bound threads
//! (cpu-0..3, pure-Python loops in `spin`) and one sleeping thread (`sleeper`).
//!
//! Expected from `gil PID --duration 2 --json`: each cpu thread holds the GIL ~25 % of the time
//! (accepted 10–45 %), the sleeper < 2 %, the GIL is held > 80 % of the time, switches/s > 0,
//! each cpu thread's top stacks are in `spin`. When the sampler keeps the requested rate, the
//! sample count matches duration x rate; when it cannot (a loaded machine), only the shares are
//! checked and a note says so.
//!
//! Coverage line: target/taskspy-coverage-gil.txt.

mod common;

use common::*;
use std::collections::BTreeSet;

const COVERAGE: &str = "gil";

#[test]
fn gil_shares_of_cpu_threads() {
    let markers = park_markers(&fixture_path("gil_cpu.py"));
    let spin_line = marker(&markers, "spin");
    each_interpreter(
        COVERAGE,
        "gil-shares",
        true,
        // Without a GIL there are no shares to check: tests/free_threaded.rs covers those builds.
        |i| (i.free_threaded() && !i.gil_forced()).then(|| "free-threaded without a GIL".to_string()),
        |interp| {
            let fx = Fixture::start(interp, "gil_cpu.py", &[], &[])?;
            let (v, out) = taskspy_json("gil", fx.pid, &["--duration", "2"])?;
            let mut p = Problems::default();
            p.check(out.code == Some(0), || format!("gil exit {:?}: {}", out.code, out.stderr.trim()));
            p.check(v["schema"] == "taskspy-gil/1", || format!("schema {}", v["schema"]));
            let duration = v["duration_s"].as_f64().unwrap_or(0.0);
            let requested = v["requested_rate_hz"].as_f64().unwrap_or(0.0);
            let achieved = v["achieved_rate_hz"].as_f64().unwrap_or(0.0);
            let samples = v["samples"].as_f64().unwrap_or(0.0);
            p.check((1.8..=3.0).contains(&duration), || format!("duration_s {duration} for --duration 2"));
            p.check(requested == 1000.0, || format!("requested_rate_hz {requested} (default 1000)"));
            if achieved >= 0.8 * requested {
                p.check((samples - duration * achieved).abs() <= 0.1 * samples.max(1.0) + 5.0, || {
                    format!("samples {samples} vs duration {duration} x achieved {achieved}")
                });
            } else {
                note(&format!("  note: Python {}: the debug build sampled at {achieved:.0} Hz of {requested:.0} Hz; checking shares only", interp.version));
            }
            p.check(samples >= 100.0, || format!("only {samples} samples"));
            let held = v["gil_held_pct"].as_f64().unwrap_or(-1.0);
            p.check(held > 80.0, || format!("gil_held_pct {held} (four CPU-bound threads: expected > 80)"));
            let sw = v["switches_per_s"].as_f64().unwrap_or(-1.0);
            p.check(sw > 0.0, || format!("switches_per_s {sw} (expected > 0 with four contending threads)"));
            if interp.gil_forced() {
                // A free-threaded build run with PYTHON_GIL=1 behaves as a GIL build and says why.
                p.check(s(&v["note"]).contains("PYTHON_GIL=1"), || {
                    format!("note {} (expected PYTHON_GIL=1)", v["note"])
                });
            } else {
                p.check(v["note"].is_null(), || format!("note {} on a GIL build", v["note"]));
            }

            let threads = arr(&v["threads"]);
            let names: BTreeSet<String> =
                threads.iter().filter_map(|t| t["name"].as_str().map(str::to_string)).collect();
            for want in ["cpu-0", "cpu-1", "cpu-2", "cpu-3", "sleeper", "MainThread"] {
                p.check(names.contains(want), || format!("no thread {want} in {names:?}"));
            }
            let mut cpu_sum = 0.0;
            for t in threads {
                let name = s(&t["name"]);
                let holds = t["holds_gil_pct"].as_f64().unwrap_or(-1.0);
                let tid = t["tid"].as_i64().unwrap_or(-1);
                p.check(tid > 0 && std::path::Path::new(&format!("/proc/{}/task/{tid}", fx.pid)).exists(), || {
                    format!("{name}: tid {tid} is not a thread of {}", fx.pid)
                });
                if name.starts_with("cpu-") {
                    cpu_sum += holds;
                    p.check((10.0..=45.0).contains(&holds), || {
                        format!("{name}: holds_gil_pct {holds:.1} (expected about 25, accepted 10-45)")
                    });
                    let waiting = t["waiting_gil_pct"].as_f64().unwrap_or(-1.0);
                    p.check(waiting > 20.0, || {
                        format!("{name}: waiting_gil_pct {waiting:.1} (four threads contend: expected > 20)")
                    });
                    let cpu = t["cpu_pct"].as_f64().unwrap_or(-1.0);
                    p.check(cpu > 5.0, || format!("{name}: cpu_pct {cpu:.1} (a spinning thread)"));
                    let stacks = arr(&t["top_stacks"]);
                    p.check(!stacks.is_empty(), || format!("{name}: no top_stacks"));
                    // Stacks while holding the GIL: innermost frame is spin (on the loop's lines).
                    let spin_pct: f64 = stacks
                        .iter()
                        .filter(|st| arr(&st["frames"]).first().map(|f| f["function"] == "spin").unwrap_or(false))
                        .map(|st| st["pct"].as_f64().unwrap_or(0.0))
                        .sum();
                    p.check(spin_pct >= 90.0, || {
                        format!(
                            "{name}: only {spin_pct:.1}% of top_stacks start in spin: {}",
                            truncate(&t["top_stacks"].to_string(), 600)
                        )
                    });
                    let top = stacks.first().map(|st| frames_of(&st["frames"])).unwrap_or_default();
                    p.check(top.first().map(|(_, l)| (*l - spin_line).abs() <= 2).unwrap_or(false), || {
                        format!("{name}: top stack {} not at the spin loop (line {spin_line})", fmt_frames(&top))
                    });
                } else if name == "sleeper" || name == "MainThread" {
                    p.check(holds < 2.0, || {
                        format!("{name}: holds_gil_pct {holds:.1} (a sleeping thread: expected < 2)")
                    });
                    let cpu = t["cpu_pct"].as_f64().unwrap_or(-1.0);
                    p.check(cpu < 5.0, || format!("{name}: cpu_pct {cpu:.1} (sleeping)"));
                }
            }
            p.check(cpu_sum > 75.0, || {
                format!("the cpu threads together hold the GIL {cpu_sum:.1}% of the time (expected > 75)")
            });

            // The text report names the threads too.
            let text = taskspy_run(&["gil", &fx.pid.to_string(), "--duration", "0.5"]);
            p.check(text.code == Some(0), || format!("gil (text) exit {:?}: {}", text.code, text.stderr.trim()));
            for n in ["cpu-0", "cpu-3", "sleeper"] {
                p.check(text.stdout.contains(n), || {
                    format!("gil text does not mention {n}:\n{}", truncate(&text.stdout, 1500))
                });
            }
            p.finish(|| format!("gil --json:\n{}", truncate(&v.to_string(), 4000)))?;
            Ok(Outcome::Pass)
        },
    );
}
