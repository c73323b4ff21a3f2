//! `taskspy metrics` for the monitoring SREs already run:
//!
//! * `exposition_and_textfile` (every interpreter): the exposition names the fixture's tasks by
//!   state and kind, its threads, python_info; `promtool check metrics` passes on it; the textfile
//!   written every 0.3 s is read 300 times meanwhile and is never partial.
//! * `prometheus_scrapes` (one interpreter): a real Prometheus (Debian's package, started here on a
//!   loopback port) scrapes `taskspy metrics --listen`; its HTTP API returns the fixture's task
//!   count and the stuck-task gauge at 1 once the task is stuck; a second target that exits is
//!   dropped from the exposition.
//!
//! Coverage line: target/taskspy-coverage-metrics.txt.

mod common;

use common::*;
use serde_json::Value;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const COVERAGE: &str = "metrics";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(19464)
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("taskspy-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Value of the sample `name{labels...}` whose labels contain every `want` pair.
fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, labels) = series.split_once('{').unwrap_or((series, ""));
        (n == name && want.iter().all(|(k, v)| labels.contains(&format!("{k}=\"{v}\"")))).then(|| value.parse().ok())?
    })
}

#[test]
fn exposition_and_textfile() {
    let promtool = std::path::Path::new("/usr/bin/promtool").exists();
    if !promtool {
        note("SKIP promtool checks: /usr/bin/promtool missing (scripts/provision.sh installs prometheus)");
    }
    each_interpreter(
        COVERAGE,
        "exposition",
        true,
        |_| None,
        |interp| {
            let fx = Fixture::start(interp, "progress.py", &["stuck"], &[])?;
            let pid = fx.pid.to_string();
            let mut p = Problems::default();
            let out = taskspy_run(&["metrics", &pid, "--once"]);
            p.check(out.code == Some(0), || out.describe_brief());
            let text = &out.stdout;
            let version = interp.version.trim_end_matches("+gil").trim_end_matches('t');
            p.check(sample(text, "python_info", &[("pid", &pid), ("version", version)]) == Some(1.0), || {
                format!("python_info:\n{text}")
            });
            p.check(
                sample(text, "python_asyncio_tasks", &[("pid", &pid), ("waiting_on", "sleep")]) == Some(3.0),
                || format!("3 busy tasks waiting on sleep:\n{text}"),
            );
            p.check(
                sample(text, "python_asyncio_tasks", &[("pid", &pid), ("waiting_on", "future")]) == Some(1.0),
                || format!("the stuck waiter on a future:\n{text}"),
            );
            p.check(sample(text, "python_threads", &[("pid", &pid)]).is_some(), || format!("python_threads:\n{text}"));
            p.check(sample(text, "taskspy_findings", &[("pid", &pid), ("kind", "stuck-task")]) == Some(0.0), || {
                format!("one collection cannot know of stuck tasks:\n{text}")
            });
            // The textfile, rewritten every 0.3 s, read concurrently: always whole.
            let dir = temp_dir(&format!("textfile-{}", interp.label));
            let mut c = taskspy_cmd(&["metrics", &pid, "--textfile", &dir.display().to_string(), "--interval", "0.5"]);
            c.stdout(Stdio::null()).stderr(Stdio::null());
            let child = ChildGuard::from_child(c.spawn().map_err(|e| e.to_string())?);
            let file = dir.join("taskspy.prom");
            let deadline = Instant::now() + Duration::from_secs(20);
            while !file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let (mut reads, mut partial) = (0, Vec::new());
            while reads < 300 && Instant::now() < deadline {
                if let Ok(t) = std::fs::read_to_string(&file) {
                    reads += 1;
                    let whole = t.ends_with('\n')
                        && t.contains("python_info{")
                        && t.contains("taskspy_scrape_duration_seconds");
                    if !whole && partial.len() < 3 {
                        partial.push(truncate(&t, 300));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            drop(child);
            p.check(reads >= 100 && partial.is_empty(), || format!("{reads} reads, partial files seen: {partial:?}"));
            let stray: Vec<String> = std::fs::read_dir(&dir)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
                .unwrap_or_default();
            if promtool {
                let mut c = Command::new("/usr/bin/promtool");
                c.args(["check", "metrics"]).stdin(std::fs::File::open(&file).map_err(|e| e.to_string())?);
                let out = c.output().map_err(|e| e.to_string())?;
                p.check(out.status.success(), || {
                    format!(
                        "promtool check metrics: {}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            }
            p.check(stray.iter().all(|n| n == "taskspy.prom" || n.ends_with(".tmp")), || format!("files: {stray:?}"));
            let _ = std::fs::remove_dir_all(&dir);
            p.finish(|| interp.describe())?;
            Ok(Outcome::Pass)
        },
    );
}

fn curl(url: &str) -> Result<String, String> {
    let mut c = Command::new("curl");
    c.args(["-s", "--max-time", "5", url]);
    let out = run(c, Duration::from_secs(10));
    if out.code != Some(0) {
        return Err(format!("curl {url}: {}", out.describe_brief()));
    }
    Ok(out.stdout)
}

/// One instant query against Prometheus's HTTP API: the first result's value.
fn query(prom: u16, q: &str) -> Option<f64> {
    let url = format!(
        "http://127.0.0.1:{prom}/api/v1/query?query={}",
        q.replace('{', "%7B").replace('}', "%7D").replace('"', "%22").replace('=', "%3D").replace(',', "%2C")
    );
    let v: Value = serde_json::from_str(&curl(&url).ok()?).ok()?;
    arr(&v["data"]["result"]).first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes() {
    let prom_bin = "/usr/bin/prometheus";
    if !std::path::Path::new(prom_bin).exists() {
        note("SKIP prometheus_scrapes: /usr/bin/prometheus missing (scripts/provision.sh installs it)");
        return;
    }
    each_interpreter(
        COVERAGE,
        "prometheus",
        true,
        |i| (!i.at_least(14) || i.free_threaded()).then(|| "a real Prometheus on one interpreter (3.14+)".to_string()),
        |interp| {
            let fx = Fixture::start(interp, "progress.py", &["stuck"], &[])?;
            let other = Fixture::start(interp, "progress.py", &["healthy"], &[])?;
            let (pid, other_pid) = (fx.pid.to_string(), other.pid.to_string());
            let mport = free_port();
            let mut c = taskspy_cmd(&[
                "metrics",
                &pid,
                &other_pid,
                "--listen",
                &format!("127.0.0.1:{mport}"),
                "--interval",
                "1",
                "--stuck-after",
                "2",
            ]);
            c.stdout(Stdio::null()).stderr(Stdio::piped());
            let _metrics = ChildGuard::from_child(c.spawn().map_err(|e| e.to_string())?);
            let dir = temp_dir(&format!("prom-{}", interp.label));
            let cfg = dir.join("prometheus.yml");
            std::fs::write(
                &cfg,
                format!(
                    "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: taskspy\n    \
                     static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
                ),
            )
            .map_err(|e| e.to_string())?;
            let pport = free_port();
            let mut c = Command::new(prom_bin);
            c.arg(format!("--config.file={}", cfg.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let _prom = ChildGuard::from_child(c.spawn().map_err(|e| e.to_string())?);
            let mut p = Problems::default();
            let deadline = Instant::now() + Duration::from_secs(40);
            let (mut tasks, mut stuck) = (None, None);
            while Instant::now() < deadline {
                tasks = query(pport, &format!("sum(python_asyncio_tasks{{pid=\"{pid}\"}})"));
                stuck = query(pport, &format!("python_asyncio_stuck_tasks{{pid=\"{pid}\"}}"));
                if tasks.is_some() && stuck == Some(1.0) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            // stuck-waiter, three busy tasks and the main task gathering them.
            p.check(tasks == Some(5.0), || format!("Prometheus has python_asyncio_tasks sum {tasks:?} (expected 5)"));
            p.check(stuck == Some(1.0), || format!("Prometheus has python_asyncio_stuck_tasks {stuck:?} (expected 1)"));
            let healthy_stuck = query(pport, &format!("python_asyncio_stuck_tasks{{pid=\"{other_pid}\"}}"));
            p.check(healthy_stuck == Some(0.0), || format!("the healthy target's stuck gauge {healthy_stuck:?}"));
            // A target that exits is dropped from the exposition, not an error.
            drop(other);
            std::thread::sleep(Duration::from_secs(3));
            let text = curl(&format!("http://127.0.0.1:{mport}/metrics"))?;
            p.check(
                sample(&text, "python_info", &[("pid", &pid)]).is_some()
                    && sample(&text, "python_info", &[("pid", &other_pid)]).is_none(),
                || format!("after one target exited:\n{text}"),
            );
            let _ = std::fs::remove_dir_all(&dir);
            p.finish(|| interp.describe())?;
            Ok(Outcome::Pass)
        },
    );
}
