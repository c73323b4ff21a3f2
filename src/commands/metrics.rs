//! `taskspy metrics PID…`: sample targets at an interval and expose what monitoring wants — task
//! and thread counts, stuck tasks, GIL use, findings — as OpenMetrics over HTTP (`--listen`) or as
//! a node_exporter textfile written atomically (`--textfile`). Exited targets drop out.

use super::origin::{self, Origin};
use super::Output;
use crate::analysis::progress::Progress;
use crate::analysis::{deadlock, loops::LoopWatch};
use crate::error::{Error, Result};
use crate::runtime::PyProcess;
use crate::snapshot::{gil_sample, CaptureOptions};
use crate::source::pause;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct MetricsOptions {
    pub pids: Vec<i32>,
    pub listen: Option<String>,
    pub textfile: Option<PathBuf>,
    pub interval: f64,
    pub stuck_after: f64,
    /// Collect once, write the textfile (and print the exposition) and exit.
    pub once: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Pid {
    pid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    pid: String,
    state: String,
    waiting_on: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ThreadLabels {
    pid: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FindingLabels {
    pid: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    pid: String,
    version: String,
    free_threaded: String,
}

/// What one collection found about one target.
#[derive(Default)]
struct Reading {
    version: String,
    free_threaded: bool,
    tasks: BTreeMap<(String, String), i64>,
    threads: BTreeMap<String, i64>,
    stuck: i64,
    findings: BTreeMap<String, i64>,
    gil_held_ratio: Option<f64>,
    gil_switches: Option<u64>,
    loop_backlog_s: f64,
}

struct TargetState {
    pid: i32,
    py: PyProcess,
    progress: Progress,
    loops: LoopWatch,
    started: Instant,
    read_errors: u64,
    last: Option<Reading>,
}

/// Kinds every `taskspy_findings` series is exported for (0 when absent), so alerts see zeros.
const FINDING_KINDS: &[&str] =
    &["await-cycle", "lock-cycle", "thread-lock-cycle", "lock-wait", "blocked-loop", "stuck-task", "loop-lag"];
/// GIL samples per collection (at 100 Hz: 0.5 s of every interval).
const GIL_SAMPLES: usize = 50;

impl TargetState {
    fn collect(&mut self, stuck_after: f64) -> std::result::Result<Reading, Error> {
        let origin = Origin::Live { pid: self.pid, blocking: false, pause_ms: 200 };
        let snap = origin::with_findings(origin::capture(&self.py, &origin, CaptureOptions::repeated())?);
        let t = self.started.elapsed().as_secs_f64();
        self.progress.observe(&snap, t);
        self.loops.observe(&snap, t);
        let mut r = Reading {
            version: snap.python.version.clone(),
            free_threaded: snap.python.free_threaded,
            ..Default::default()
        };
        for task in &snap.tasks {
            *r.tasks.entry((task.state.to_string(), task.waiting_on.kind.to_string())).or_default() += 1;
        }
        for th in &snap.threads {
            *r.threads.entry(th.state.as_str().to_string()).or_default() += 1;
        }
        let mut findings = deadlock::findings(&snap);
        let stuck = self.progress.stuck_tasks(stuck_after, &snap);
        r.stuck = stuck.len() as i64;
        findings.extend(stuck);
        findings.extend(self.progress.loop_lag(1.0, &snap));
        findings.extend(self.loops.findings(1.0, &snap));
        for f in findings {
            *r.findings.entry(f.kind).or_default() += 1;
        }
        r.loop_backlog_s = self.progress.loop_lags().map(|(_, l)| l).fold(0.0, f64::max);
        // A short window of GIL samples (no pause): the share of samples it was held.
        if snap.python.gil_enabled {
            let idents: HashMap<u64, i32> = snap.threads.iter().filter_map(|t| Some((t.ident, t.tid?))).collect();
            let (mut held, mut n) = (0usize, 0usize);
            for _ in 0..GIL_SAMPLES {
                if let Ok(s) = gil_sample::sample(&self.py, &idents) {
                    n += 1;
                    held += s.gil_held as usize;
                    r.gil_switches = s.switch_number.or(r.gil_switches);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            r.gil_held_ratio = (n > 0).then(|| held as f64 / n as f64);
        }
        Ok(r)
    }
}

fn encode(targets: &[TargetState], scrape_s: f64) -> String {
    let mut reg = Registry::default();
    let info = Family::<InfoLabels, Gauge>::default();
    let tasks = Family::<TaskLabels, Gauge>::default();
    let stuck = Family::<Pid, Gauge>::default();
    let threads = Family::<ThreadLabels, Gauge>::default();
    let held = Family::<Pid, Gauge<f64, AtomicU64>>::default();
    let switches = Family::<Pid, Counter>::default();
    let findings = Family::<FindingLabels, Gauge>::default();
    let backlog = Family::<Pid, Gauge<f64, AtomicU64>>::default();
    let errors = Family::<Pid, Counter>::default();
    let scrape = Gauge::<f64, AtomicU64>::default();
    reg.register("python_info", "The target's Python: version and build (value 1)", info.clone());
    reg.register("python_asyncio_tasks", "Pending asyncio tasks by state and what they wait on", tasks.clone());
    reg.register(
        "python_asyncio_stuck_tasks",
        "Tasks at the same await point for --stuck-after seconds while their loop ran others",
        stuck.clone(),
    );
    reg.register("python_threads", "Python threads by state (running, idle, waiting_gil, unknown)", threads.clone());
    reg.register("python_gil_held_ratio", "Share of GIL samples in which the GIL was held (last window)", held.clone());
    reg.register("python_gil_switches", "GIL hand-offs since the target started", switches.clone());
    reg.register(
        "taskspy_findings",
        "Findings by kind (deadlock candidates, stuck tasks, lagging loops)",
        findings.clone(),
    );
    reg.register(
        "python_asyncio_loop_backlog_seconds",
        "Longest time an event loop's ready queue has not drained (0 when none is backlogged)",
        backlog.clone(),
    );
    reg.register("taskspy_read_errors", "Collections that could not read the target", errors.clone());
    reg.register("taskspy_scrape_duration_seconds", "Time the last collection of all targets took", scrape.clone());
    for t in targets {
        let pid = t.pid.to_string();
        let p = Pid { pid: pid.clone() };
        errors.get_or_create(&p).inc_by(t.read_errors);
        let Some(r) = &t.last else { continue };
        info.get_or_create(&InfoLabels {
            pid: pid.clone(),
            version: r.version.clone(),
            free_threaded: r.free_threaded.to_string(),
        })
        .set(1);
        for ((state, waiting_on), n) in &r.tasks {
            tasks
                .get_or_create(&TaskLabels { pid: pid.clone(), state: state.clone(), waiting_on: waiting_on.clone() })
                .set(*n);
        }
        stuck.get_or_create(&p).set(r.stuck);
        for (state, n) in &r.threads {
            threads.get_or_create(&ThreadLabels { pid: pid.clone(), state: state.clone() }).set(*n);
        }
        if let Some(h) = r.gil_held_ratio {
            held.get_or_create(&p).set(h);
        }
        if let Some(sw) = r.gil_switches {
            switches.get_or_create(&p).inc_by(sw);
        }
        for kind in FINDING_KINDS {
            let n = r.findings.get(*kind).copied().unwrap_or(0);
            findings.get_or_create(&FindingLabels { pid: pid.clone(), kind: kind.to_string() }).set(n);
        }
        backlog.get_or_create(&p).set(r.loop_backlog_s);
    }
    scrape.set(scrape_s);
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &reg).is_err() {
        out.clear();
    }
    out
}

/// The Prometheus text format (0.0.4) that node_exporter's textfile collector reads: OpenMetrics
/// without `# EOF`/`# UNIT`, counter families named with their `_total` samples.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: Vec<String> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|r| r.strip_suffix(" counter")).map(str::to_string))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let mut l = line.to_string();
        for c in &counters {
            for prefix in ["# TYPE ", "# HELP "] {
                let head = format!("{prefix}{c} ");
                if l.starts_with(&head) {
                    l = format!("{prefix}{c}_total {}", &l[head.len()..]);
                }
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Write `taskspy.prom` in `dir` so that a reader never sees a partial file (temp file + rename).
pub fn write_textfile(dir: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!(".taskspy.prom.{}.tmp", std::process::id()));
    let dest = dir.join("taskspy.prom");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &dest)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::other(format!("writing {}: {e}", dest.display()))
    })
}

pub fn run(opts: &MetricsOptions) -> Result<Output> {
    pause::install_interrupt_handler();
    let mut targets = Vec::new();
    for &pid in &opts.pids {
        match origin::open_reader(&Origin::Live { pid, blocking: false, pause_ms: 200 }) {
            Ok(Some(py)) => targets.push(TargetState {
                pid,
                py,
                progress: Progress::default(),
                loops: LoopWatch::default(),
                started: Instant::now(),
                read_errors: 0,
                last: None,
            }),
            Ok(None) => {}
            Err(e) if opts.pids.len() > 1 => eprintln!("taskspy: warning: PID {pid} left out: {e}"),
            Err(e) => return Err(e),
        }
    }
    if targets.is_empty() {
        return Err(Error::other("no target could be opened"));
    }
    let latest = Arc::new(Mutex::new(String::new()));
    if let Some(addr) = &opts.listen {
        let server = tiny_http::Server::http(addr.as_str())
            .map_err(|e| Error::other(format!("cannot listen on {addr}: {e}")))?;
        let latest = latest.clone();
        std::thread::spawn(move || serve(server, latest));
        eprintln!("taskspy: serving metrics on http://{addr}/metrics");
    }
    let interval = Duration::from_secs_f64(opts.interval.clamp(0.5, 3600.0));
    loop {
        let t0 = Instant::now();
        for t in &mut targets {
            match t.collect(opts.stuck_after) {
                Ok(r) => t.last = Some(r),
                Err(Error::TargetExited(_) | Error::NoSuchProcess(_)) => t.last = None,
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(_) => t.read_errors += 1,
            }
        }
        // A target that exited is dropped from the output, not an error.
        targets.retain(|t| t.py.os.alive());
        let text = encode(&targets, t0.elapsed().as_secs_f64());
        *crate::sync::lock(&latest) = text.clone();
        if let Some(dir) = &opts.textfile {
            write_textfile(dir, &to_text_format(&text))?;
        }
        if opts.once {
            return Ok(Output::Text(if opts.textfile.is_some() { String::new() } else { text }));
        }
        if targets.is_empty() {
            eprintln!("taskspy: every target exited");
            return Ok(Output::Text(String::new()));
        }
        let deadline = Instant::now() + interval.saturating_sub(t0.elapsed());
        while Instant::now() < deadline {
            if pause::interrupted() {
                return Err(Error::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(server: tiny_http::Server, latest: Arc<Mutex<String>>) {
    for req in server.incoming_requests() {
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let resp = if path == "/metrics" {
            // Prometheus asks for OpenMetrics; anything else (curl, promtool) gets the classic
            // text format of the same data.
            let openmetrics = req
                .headers()
                .iter()
                .any(|h| h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text"));
            let body = crate::sync::lock(&latest).clone();
            let (body, ct): (String, &[u8]) = if openmetrics {
                (body, b"application/openmetrics-text; version=1.0.0; charset=utf-8")
            } else {
                (to_text_format(&body), b"text/plain; version=0.0.4; charset=utf-8")
            };
            let ct = tiny_http::Header::from_bytes(&b"Content-Type"[..], ct);
            let mut r = tiny_http::Response::from_string(body);
            if let Ok(h) = ct {
                r = r.with_header(h);
            }
            r
        } else if path == "/" {
            tiny_http::Response::from_string("taskspy metrics: see /metrics\n")
        } else {
            tiny_http::Response::from_string("not found\n").with_status_code(404)
        };
        let _ = req.respond(resp);
    }
}
