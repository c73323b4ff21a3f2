//! Shared helpers for tests/asyncio_tasks.rs, tests/deadlocks.rs, tests/gil.rs and
//! tests/top_tmux.rs (included with `#[path = "support/mod.rs"] mod support;`):
//!
//! * the interpreter inventory (`$CACHE/interpreters.tsv`, written by scripts/provision.sh);
//! * fixture processes started with `python -u`, waited for until they print READY, and always
//!   killed (SIGKILL + reap) when dropped;
//! * commands with a timeout (taskspy, CPython, pip, tmux);
//! * park markers (`# PARK:<tag>` line numbers, never hard-coded);
//! * a per-interpreter loop that runs a check on every supported interpreter, prints skips (never
//!   silent), collects failures of all interpreters before failing, and writes the coverage line
//!   `target/taskspy-coverage-<name>.txt`.
//!
//! Skips and notes go straight to the process's stderr (libtest does not capture that), so they
//! are visible even when the tests pass.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a fixture may take to print READY.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default limit for one taskspy / python / tmux command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between READY and the first attach: the thread that printed READY reaches its park line
/// a few bytecodes later.
pub const SETTLE: Duration = Duration::from_millis(150);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The debug binary cargo built for this test run.
pub fn taskspy() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_taskspy"))
}

/// Absolute path of a fixture (absolute, so co_filename is absolute on every version).
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("fixtures").join(name)
}

/// A line on the real stderr (not captured by libtest): skips and notes are never silent.
pub fn note(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{msg}");
}

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("TASKSPY_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/taskspy"),
    }
}

// ------------------------------------------------------------------------------------------
// Interpreter inventory
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Interpreter {
    pub label: String,
    /// Full version, e.g. "3.14.10".
    pub version: String,
    pub python: PathBuf,
    /// pyenv | debian | pyenv-unsupported
    pub kind: String,
    pub env: Vec<(String, String)>,
}

impl Interpreter {
    /// (3, 14) from "3.14.10".
    pub fn minor(&self) -> (u32, u32) {
        let mut it = self.version.split('.').map(|p| p.chars().take_while(|c| c.is_ascii_digit()).collect::<String>());
        let major = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        (major, minor)
    }

    pub fn at_least(&self, minor: u32) -> bool {
        self.minor() >= (3, minor)
    }

    /// A command running this interpreter with a clean Python environment.
    pub fn command(&self) -> Command {
        self.command_with(&self.python)
    }

    /// Same environment, another executable (e.g. a venv's python made from this interpreter).
    pub fn command_with(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        c.env_remove("PYTHONPATH").env_remove("PYTHONHOME").env_remove("PYTHONSTARTUP").env_remove("PYTHONWARNINGS");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

pub struct Inventory {
    pub supported: Vec<Interpreter>,
    /// (version or minor, reason)
    pub skipped: Vec<(String, String)>,
    pub source: String,
}

pub fn inventory() -> &'static Inventory {
    static INV: OnceLock<Inventory> = OnceLock::new();
    INV.get_or_init(|| {
        let inv = load_inventory();
        note(&format!(
            "taskspy tests: interpreters from {}: supported [{}]",
            inv.source,
            inv.supported.iter().map(|i| i.version.as_str()).collect::<Vec<_>>().join(" ")
        ));
        for (v, why) in &inv.skipped {
            note(&format!("SKIP interpreter {v}: {why}"));
        }
        inv
    })
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse().unwrap_or(0)).collect()
}

fn load_inventory() -> Inventory {
    let tsv = cache_dir().join("interpreters.tsv");
    let mut all = Vec::new();
    let mut skipped = Vec::new();
    let source;
    match std::fs::read_to_string(&tsv) {
        Ok(text) => {
            source = tsv.display().to_string();
            for line in text.lines() {
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let cols: Vec<&str> = line.split('\t').collect();
                if cols.len() < 4 {
                    skipped.push((line.to_string(), "malformed line in interpreters.tsv".into()));
                    continue;
                }
                let env = match cols.get(4).map(|s| s.trim()) {
                    None | Some("") | Some("-") => Vec::new(),
                    Some(e) => e.split_whitespace().filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect(),
                };
                all.push(Interpreter { label: cols[0].into(), version: cols[1].into(), python: PathBuf::from(cols[2]), kind: cols[3].into(), env });
            }
        }
        Err(_) => {
            // Not provisioned: use pyenv builds directly (scripts/provision.sh writes the TSV).
            let root = std::env::var_os("PYENV_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".pyenv"));
            source = format!("pyenv builds in {} (no {}: run scripts/provision.sh)", root.join("versions").display(), tsv.display());
            let mut dirs: Vec<PathBuf> =
                std::fs::read_dir(root.join("versions")).map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect()).unwrap_or_default();
            dirs.sort();
            for d in dirs {
                let name = d.file_name().unwrap_or_default().to_string_lossy().to_string();
                let nums: Vec<u32> = name.split('.').take(2).filter_map(|p| p.parse().ok()).collect();
                if nums.len() != 2 || nums[0] != 3 || nums[1] < 8 {
                    continue;
                }
                let py = d.join("bin").join(format!("python3.{}", nums[1]));
                if py.exists() {
                    all.push(Interpreter { label: format!("pyenv-{name}"), version: name.clone(), python: py, kind: "pyenv".into(), env: vec![] });
                }
            }
        }
    }
    let mut supported = Vec::new();
    for i in all {
        if i.kind != "pyenv" && i.kind != "debian" {
            continue; // pyenv-unsupported: targets for the "unsupported version" error, not here
        }
        if !i.python.exists() {
            skipped.push((i.version.clone(), format!("{} is listed but {} does not exist", i.label, i.python.display())));
            continue;
        }
        supported.push(i);
    }
    supported.sort_by_key(|i| version_key(&i.version));
    for m in 8..=15u32 {
        if !supported.iter().any(|i| i.minor() == (3, m)) {
            skipped.push((format!("3.{m}"), format!("no interpreter for it in {source}")));
        }
    }
    Inventory { supported, skipped, source }
}

// ------------------------------------------------------------------------------------------
// Commands
// ------------------------------------------------------------------------------------------

#[derive(Debug)]
pub struct CmdOutput {
    /// None: killed by a signal or by the timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
    pub cmdline: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited {:?}{} after {:.2?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code,
            if self.timed_out { " (TIMED OUT, killed)" } else { "" },
            self.elapsed,
            truncate(&self.stdout, 6000),
            truncate(&self.stderr, 3000)
        )
    }

    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_str(&self.stdout).map_err(|e| format!("not JSON ({e}):\n{}", self.describe()))
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n... [{} more bytes]", &s[..end], s.len() - end)
}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run to completion (killed after `timeout`), stdin closed, both streams captured.
pub fn run(mut cmd: Command, timeout: Duration) -> CmdOutput {
    let line = cmdline(&cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CmdOutput {
                code: None,
                timed_out: false,
                stdout: String::new(),
                stdout_bytes: vec![],
                stderr: format!("cannot start: {e}"),
                cmdline: line,
                elapsed: start.elapsed(),
            }
        }
    };
    let (mut o, mut e) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let to = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = o.read_to_end(&mut b);
        b
    });
    let te = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = e.read_to_end(&mut b);
        b
    });
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > timeout => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(_) => break None,
        }
    };
    let out = to.join().unwrap_or_default();
    let err = te.join().unwrap_or_default();
    CmdOutput {
        code: if timed_out { None } else { status.and_then(|s| s.code()) },
        timed_out,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stdout_bytes: out,
        stderr: String::from_utf8_lossy(&err).into_owned(),
        cmdline: line,
        elapsed: start.elapsed(),
    }
}

pub fn taskspy_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(taskspy());
    c.args(args);
    c.env_remove("RUST_BACKTRACE").env_remove("RUST_LIB_BACKTRACE").env_remove("NO_COLOR");
    c
}

/// `taskspy <args...>` with the default timeout.
pub fn taskspy_run(args: &[&str]) -> CmdOutput {
    run(taskspy_cmd(args), COMMAND_TIMEOUT)
}

/// `taskspy <sub> PID --json [extra...]`: the parsed document and the raw output.
pub fn taskspy_json(sub: &str, pid: i32, extra: &[&str]) -> Result<(Value, CmdOutput), String> {
    let pid_s = pid.to_string();
    let mut args = vec![sub, pid_s.as_str(), "--json"];
    args.extend_from_slice(extra);
    let out = taskspy_run(&args);
    let v = out.json()?;
    Ok((v, out))
}

/// `taskspy dump PID --json`, which must exit 0 with a taskspy/1 document.
pub fn dump_json(pid: i32) -> Result<Value, String> {
    let (v, out) = taskspy_json("dump", pid, &[])?;
    if out.code != Some(0) {
        return Err(format!("dump --json did not exit 0:\n{}", out.describe()));
    }
    if v["schema"] != "taskspy/1" {
        return Err(format!("dump --json schema is {}, expected taskspy/1", v["schema"]));
    }
    Ok(v)
}

// ------------------------------------------------------------------------------------------
// Fixture processes
// ------------------------------------------------------------------------------------------

/// A fixture process: started with `python -u`, waited for until it prints READY; killed and
/// reaped when dropped, whatever happens in the test. Lines after READY stay readable.
pub struct Fixture {
    child: Child,
    pub pid: i32,
    pub what: String,
    /// stdout lines printed before READY
    pub before_ready: Vec<String>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    exited: Option<ExitStatus>,
}

impl Fixture {
    /// `python -u fixtures/<script> <args>` with extra environment.
    pub fn start(interp: &Interpreter, script: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Fixture, String> {
        Self::start_with(interp, &interp.python, script, args, env)
    }

    /// Like `start`, with another python executable (a venv's) and this interpreter's environment.
    pub fn start_with(interp: &Interpreter, exe: &Path, script: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Fixture, String> {
        let mut c = interp.command_with(exe);
        c.arg("-u").arg(fixture(script)).args(args);
        // Bounded life even if this test process is killed without running destructors.
        c.env("TASKSPY_FIXTURE_LIFETIME", "900");
        for (k, v) in env {
            c.env(k, v);
        }
        Self::spawn(c, &format!("{script} {} on Python {}", args.join(" "), interp.version))
    }

    pub fn spawn(mut cmd: Command, what: &str) -> Result<Fixture, String> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))?;
        let pid = child.id() as i32;
        let stdout = child.stdout.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let mut e = child.stderr.take().unwrap();
            let buf = stderr.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match e.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps reading after READY, so the fixture never blocks on a full pipe.
            for l in BufReader::new(stdout).lines() {
                match l {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            // receiver gone: keep draining
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let mut f = Fixture { child, pid, what: what.to_string(), before_ready: Vec::new(), lines: rx, stderr, exited: None };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match f.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.starts_with("READY") => break,
                Ok(l) => f.before_ready.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                    let st = f.child.try_wait().ok().flatten();
                    return Err(format!(
                        "{what} exited before READY ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        st.map(|s| s.to_string()).unwrap_or_else(|| "closed stdout".into()),
                        f.before_ready.join("\n"),
                        f.stderr()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if Instant::now() > deadline {
                        return Err(format!(
                            "{what} did not print READY within {READY_TIMEOUT:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                            f.before_ready.join("\n"),
                            f.stderr()
                        ));
                    }
                }
            }
        }
        std::thread::sleep(SETTLE);
        Ok(f)
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Next stdout line printed after READY, if one comes within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Throw away the lines printed so far.
    pub fn drain_lines(&self) -> usize {
        self.lines.try_iter().count()
    }

    /// Running and not a zombie.
    pub fn alive(&mut self) -> bool {
        if self.exited.is_some() || matches!(self.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        // /proc/PID/stat: "pid (comm) S ..."; comm may contain spaces and parentheses.
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(s) => s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')).unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Wait (and reap) until the fixture exits by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.exited = Some(s);
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------
// Fixture markers
// ------------------------------------------------------------------------------------------

/// `# PARK:<tag>` markers of a fixture: tag -> 1-based line number.
pub fn park_markers(script: &str) -> HashMap<String, i64> {
    let path = fixture(script);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut m = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if let Some((_, tag)) = line.trim_end().rsplit_once("# PARK:") {
            if !tag.is_empty() && !tag.contains(char::is_whitespace) {
                let prev = m.insert(tag.to_string(), i as i64 + 1);
                assert!(prev.is_none(), "{}: marker PARK:{tag} appears twice", path.display());
            }
        }
    }
    m
}

pub fn marker(markers: &HashMap<String, i64>, tag: &str) -> i64 {
    *markers.get(tag).unwrap_or_else(|| panic!("no marker PARK:{tag}"))
}

// ------------------------------------------------------------------------------------------
// Snapshot helpers
// ------------------------------------------------------------------------------------------

pub fn arr(v: &Value) -> &[Value] {
    v.as_array().map(|a| a.as_slice()).unwrap_or(&[])
}

pub fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A collector for several problems of one run, reported together.
#[derive(Default)]
pub struct Problems(pub Vec<String>);

impl Problems {
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }
    pub fn push(&mut self, msg: String) {
        self.0.push(msg);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Ok(()) or Err(every problem, one per line, plus `context`).
    pub fn finish(self, context: impl FnOnce() -> String) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} problem(s):\n  - {}\n{}", self.0.len(), self.0.join("\n  - "), context()))
        }
    }
}

/// (function, line) pairs of a frame list.
pub fn frames_of(v: &Value) -> Vec<(String, i64)> {
    arr(v).iter().map(|f| (s(&f["function"]).to_string(), f["line"].as_i64().unwrap_or(-1))).collect()
}

pub fn fmt_frames(f: &[(String, i64)]) -> String {
    format!("[{}]", f.iter().map(|(n, l)| format!("{n}:{l}")).collect::<Vec<_>>().join(", "))
}

/// Short text of a snapshot's tasks for failure messages.
pub fn tasks_summary(snap: &Value) -> String {
    let names: HashMap<&str, &str> = arr(&snap["tasks"]).iter().map(|t| (s(&t["id"]), s(&t["name"]))).collect();
    let mut out = String::new();
    for t in arr(&snap["tasks"]) {
        out += &format!(
            "  {:?} {} thread={} waiting_on={} stack={} awaited_by={:?}\n",
            s(&t["name"]),
            s(&t["state"]),
            t["thread"],
            t["waiting_on"]["kind"],
            fmt_frames(&frames_of(&t["coroutine_stack"])),
            arr(&t["awaited_by"]).iter().map(|p| names.get(s(p)).copied().unwrap_or(s(p))).collect::<Vec<_>>()
        );
    }
    truncate(&out, 8000)
}

/// Threads of a snapshot by name -> tid.
pub fn thread_tids(snap: &Value) -> HashMap<String, i64> {
    arr(&snap["threads"]).iter().filter_map(|t| Some((t["name"].as_str()?.to_string(), t["tid"].as_i64()?))).collect()
}

// ------------------------------------------------------------------------------------------
// Per-interpreter loop and coverage
// ------------------------------------------------------------------------------------------

pub enum Outcome {
    Pass,
    Skip(String),
}

#[derive(Default)]
struct VersionRecord {
    passed: BTreeSet<String>,
    failed: BTreeSet<String>,
    /// test -> reason it could not run here (missing tool, wheel, permission...)
    skipped: BTreeMap<String, String>,
    /// test -> reason it is not meant to run here (it runs on a subset of the versions)
    not_selected: BTreeMap<String, String>,
}

enum Rec {
    Pass,
    Fail,
    Skip(String),
    NotSelected(String),
}

fn registry() -> &'static Mutex<BTreeMap<String, VersionRecord>> {
    static R: OnceLock<Mutex<BTreeMap<String, VersionRecord>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(BTreeMap::new()))
}

fn record(version: &str, test: &str, outcome: Rec) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let e = r.entry(version.to_string()).or_default();
    match outcome {
        Rec::Pass => {
            e.passed.insert(test.into());
        }
        Rec::Fail => {
            e.failed.insert(test.into());
        }
        Rec::Skip(why) => {
            e.skipped.insert(test.into(), why);
        }
        Rec::NotSelected(why) => {
            e.not_selected.insert(test.into(), why);
        }
    }
}

/// Rewrite `target/taskspy-coverage-<name>.txt` from everything recorded so far in this process
/// (each test rewrites it when it finishes, so the last one writes the union).
pub fn write_coverage(name: &str) {
    let inv = inventory();
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut versions: Vec<&String> = r.keys().collect();
    versions.sort_by_key(|v| version_key(v));
    let exercised: Vec<String> = versions.iter().filter(|v| r[**v].failed.is_empty() && !r[**v].passed.is_empty()).map(|v| v.to_string()).collect();
    let failed: Vec<String> = versions
        .iter()
        .filter(|v| !r[**v].failed.is_empty())
        .map(|v| format!("{v} ({})", r[*v].failed.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    // Skips grouped by reason: "3.14 3.15 (test: reason)".
    let mut by_reason: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (v, why) in &inv.skipped {
        by_reason.entry(why.clone()).or_default().push(v.clone());
    }
    for v in &versions {
        for (test, why) in &r[*v].skipped {
            by_reason.entry(format!("{test}: {why}")).or_default().push(v.to_string());
        }
    }
    let mut skipped: Vec<String> = by_reason.into_iter().map(|(why, vs)| format!("{} ({why})", vs.join(" "))).collect();
    if inv.supported.is_empty() {
        skipped.push("ALL (no supported interpreter found)".into());
    }
    let mut line = format!(
        "coverage {name}: exercised {} | skipped: {}",
        if exercised.is_empty() { "NONE".to_string() } else { exercised.join(" ") },
        if skipped.is_empty() { "none".to_string() } else { skipped.join(", ") }
    );
    if !failed.is_empty() {
        line += &format!(" | FAILED: {}", failed.join(", "));
    }
    // Tests meant for a subset of the versions: where they ran.
    let mut subsets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in &versions {
        for test in r[*v].not_selected.keys() {
            subsets.entry(test.clone()).or_default();
        }
    }
    for (test, ran) in subsets.iter_mut() {
        ran.extend(versions.iter().filter(|v| !r[**v].not_selected.contains_key(test)).map(|v| v.to_string()));
    }
    if !subsets.is_empty() {
        line += &format!(
            " | by design only: {}",
            subsets.iter().map(|(t, vs)| format!("{t} on {}", if vs.is_empty() { "none".to_string() } else { vs.join(" ") })).collect::<Vec<_>>().join(", ")
        );
    }
    let dir = repo_root().join("target");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("taskspy-coverage-{name}.txt")), format!("{line}\n"));
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "panic".into())
}

/// Run `check` on every supported interpreter that `select` accepts (`select` returns a skip
/// reason for the others). Skips are printed and recorded; failures (Err or panic) of every
/// interpreter are collected and reported together at the end. With `require_one`, a run in
/// which no interpreter passed fails.
pub fn each_interpreter(
    coverage: &str,
    test: &str,
    require_one: bool,
    select: impl Fn(&Interpreter) -> Option<String>,
    check: impl Fn(&Interpreter) -> Result<Outcome, String>,
) {
    let inv = inventory();
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut passed = Vec::new();
    // Interpreters left out on purpose (by `select`): one line per reason.
    let mut not_selected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for interp in &inv.supported {
        if let Some(why) = select(interp) {
            record(&interp.version, test, Rec::NotSelected(why.clone()));
            not_selected.entry(why).or_default().push(interp.version.clone());
        }
    }
    for (why, vs) in &not_selected {
        note(&format!("{test}: not run on {} ({why})", vs.join(" ")));
    }
    for interp in &inv.supported {
        if select(interp).is_some() {
            continue;
        }
        let t0 = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| check(interp)));
        let took = t0.elapsed();
        match result {
            Ok(Ok(Outcome::Pass)) => {
                note(&format!("{test}: Python {} passed in {took:.1?}", interp.version));
                record(&interp.version, test, Rec::Pass);
                passed.push(interp.version.clone());
            }
            Ok(Ok(Outcome::Skip(why))) => {
                note(&format!("SKIP {test} on {}: {why}", interp.version));
                record(&interp.version, test, Rec::Skip(why));
            }
            Ok(Err(msg)) => {
                note(&format!("{test}: Python {} FAILED in {took:.1?}", interp.version));
                record(&interp.version, test, Rec::Fail);
                failures.push(format!("=== Python {} ({}) ===\n{msg}", interp.version, interp.label));
            }
            Err(p) => {
                note(&format!("{test}: Python {} FAILED (panic) in {took:.1?}", interp.version));
                record(&interp.version, test, Rec::Fail);
                failures.push(format!("=== Python {} ({}) ===\npanicked: {}", interp.version, interp.label, panic_text(&*p)));
            }
        }
    }
    write_coverage(coverage);
    note(&format!("{test}: {} passed, {} failed, {:.1?} in all", passed.len(), failures.len(), started.elapsed()));
    if inv.supported.is_empty() {
        panic!("no supported interpreter found ({}); run scripts/provision.sh", inv.source);
    }
    if !failures.is_empty() {
        panic!("{test} failed on {} interpreter(s):\n{}", failures.len(), failures.join("\n\n"));
    }
    if require_one && passed.is_empty() {
        panic!("{test}: no interpreter was exercised (all skipped)");
    }
}

/// Unique names for temporary things (tmux sessions, directories) of this test process.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
