//! Shared helpers for the integration tests that attach taskspy to real CPython processes
//! (tests/attach_dump.rs, asyncio_tasks.rs, deadlocks.rs, gil.rs and top_tmux.rs, each with
//! `mod common;`):
//!
//! * the interpreter inventory (`$CACHE/interpreters.tsv`, written by scripts/provision.sh);
//! * processes that are always killed (SIGKILL + reap) when dropped: `ChildGuard` and `Fixture`
//!   (`python -u fixtures/<script>`, waited for until it prints READY);
//! * commands with a timeout (taskspy, CPython, py-spy, pip, tmux);
//! * park markers (`# PARK:<tag>` line numbers, never hard-coded);
//! * the `taskspy/1` JSON contract and py-spy as an oracle (attach_dump.rs);
//! * coverage lines: `target/taskspy-coverage.txt` (attach_dump.rs, `write_coverage`) and, for
//!   the suites that run a check on every supported interpreter with `each_interpreter` (skips
//!   printed, failures of all interpreters collected before failing),
//!   `target/taskspy-coverage-<name>.txt`.
//!
//! Everything that must be seen even when the tests pass (skips, notes, coverage) is written
//! straight to the process's stderr, which libtest does not capture (it only captures
//! `print!`/`eprint!`).
#![allow(dead_code)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a fixture may take to print READY.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one taskspy / py-spy / python / tmux command may take before it is killed and reported.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between READY and the first attach, so the thread that printed READY has reached its
/// park line (a few bytecodes later) even on a loaded machine.
pub const SETTLE: Duration = Duration::from_millis(150);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The debug binary cargo built for this test run.
pub fn taskspy() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_taskspy"))
}

/// Absolute path of a fixture (absolute, so co_filename is absolute on every version).
pub fn fixture_path(name: &str) -> PathBuf {
    repo_root().join("fixtures").join(name)
}

/// Write a line to the real stderr (not captured by libtest), so skips are never silent.
pub fn note(msg: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{msg}");
}

// ------------------------------------------------------------------------------------------
// Interpreter inventory
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Interpreter {
    pub label: String,
    /// Full version, e.g. "3.14.10" or "3.15.0a3".
    pub version: String,
    pub python: PathBuf,
    /// pyenv | debian | pyenv-unsupported
    pub kind: String,
    pub env: Vec<(String, String)>,
}

impl Interpreter {
    pub fn supported(&self) -> bool {
        matches!(self.kind.as_str(), "pyenv" | "debian" | "freethreaded")
    }

    /// A free-threaded build (`python3.14t`), whether or not it runs with the GIL.
    pub fn free_threaded(&self) -> bool {
        self.kind == "freethreaded"
    }

    /// A free-threaded build started with the GIL enabled (`PYTHON_GIL=1`).
    pub fn gil_forced(&self) -> bool {
        self.free_threaded() && self.env.iter().any(|(k, v)| k == "PYTHON_GIL" && v == "1")
    }

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

    pub fn describe(&self) -> String {
        format!("{} ({}, {})", self.version, self.label, self.python.display())
    }

    /// A command running this interpreter with a clean Python environment.
    pub fn command(&self) -> Command {
        self.command_with(&self.python)
    }

    /// Same environment, another executable (e.g. a venv's python made from this interpreter).
    pub fn command_with(&self, exe: &Path) -> Command {
        let mut c = Command::new(exe);
        // A developer's PYTHONPATH/PYTHONHOME must not leak into another interpreter.
        c.env_remove("PYTHONPATH").env_remove("PYTHONHOME").env_remove("PYTHONSTARTUP").env_remove("PYTHONWARNINGS");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
}

pub struct Inventory {
    pub supported: Vec<Interpreter>,
    pub unsupported: Vec<Interpreter>,
    /// (version or minor, reason): interpreters that should be tested but cannot be.
    pub skipped: Vec<(String, String)>,
    /// Where the list came from, for messages.
    pub source: String,
}

/// Minor versions taskspy supports: each should have at least one interpreter.
pub const SUPPORTED_MINORS: std::ops::RangeInclusive<u32> = 8..=15;

pub fn cache_dir() -> PathBuf {
    match std::env::var_os("TASKSPY_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/taskspy"),
    }
}

pub fn inventory() -> &'static Inventory {
    static INV: OnceLock<Inventory> = OnceLock::new();
    INV.get_or_init(|| {
        let inv = load_inventory();
        note(&format!(
            "taskspy tests: interpreters from {}: supported [{}], unsupported targets [{}]",
            inv.source,
            inv.supported.iter().map(|i| i.version.as_str()).collect::<Vec<_>>().join(" "),
            inv.unsupported.iter().map(|i| i.version.as_str()).collect::<Vec<_>>().join(" ")
        ));
        for (v, why) in &inv.skipped {
            note(&format!("SKIP interpreter {v}: {why}"));
        }
        inv
    })
}

fn load_inventory() -> Inventory {
    let tsv = cache_dir().join("interpreters.tsv");
    let mut all = Vec::new();
    let mut skipped = Vec::new();
    let source;
    match std::fs::read_to_string(&tsv) {
        Ok(text) => {
            source = tsv.display().to_string();
            for (n, line) in text.lines().enumerate() {
                if line.trim().is_empty() || line.starts_with('#') {
                    continue;
                }
                let cols: Vec<&str> = line.split('\t').collect();
                if cols.len() < 4 {
                    skipped.push((format!("{}:{}", tsv.display(), n + 1), format!("malformed line {line:?}")));
                    continue;
                }
                let env = match cols.get(4).map(|s| s.trim()) {
                    None | Some("") | Some("-") => Vec::new(),
                    Some(e) => e
                        .split_whitespace()
                        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                        .collect(),
                };
                all.push(Interpreter {
                    label: cols[0].to_string(),
                    version: cols[1].to_string(),
                    python: PathBuf::from(cols[2]),
                    kind: cols[3].to_string(),
                    env,
                });
            }
        }
        Err(_) => {
            // Not provisioned (scripts/provision.sh writes the TSV): use pyenv builds directly.
            let root = std::env::var_os("PYENV_ROOT").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".pyenv")
            });
            note(&format!(
                "taskspy tests: no {} (run scripts/provision.sh): using pyenv builds directly",
                tsv.display()
            ));
            source = format!("pyenv builds in {}", root.join("versions").display());
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("versions"))
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            dirs.sort();
            for d in dirs {
                let name = d.file_name().unwrap_or_default().to_string_lossy().to_string();
                let nums: Vec<u32> = name.split('.').take(2).filter_map(|p| p.parse().ok()).collect();
                if nums.len() != 2 {
                    continue;
                }
                let (major, minor) = (nums[0], nums[1]);
                let py = [format!("python{major}.{minor}"), format!("python{major}"), "python".to_string()]
                    .iter()
                    .map(|b| d.join("bin").join(b))
                    .find(|p| p.exists());
                let Some(py) = py else { continue };
                let kind = if major == 3 && minor >= 8 { "pyenv" } else { "pyenv-unsupported" };
                all.push(Interpreter {
                    label: format!("pyenv-{name}"),
                    version: name.clone(),
                    python: py,
                    kind: kind.into(),
                    env: vec![],
                });
            }
        }
    }
    let mut supported = Vec::new();
    let mut unsupported = Vec::new();
    for i in all {
        if !i.python.exists() {
            skipped.push((
                i.version.clone(),
                format!("{} is listed ({}) but {} does not exist", i.label, source, i.python.display()),
            ));
            continue;
        }
        match i.kind.as_str() {
            "pyenv" | "debian" | "freethreaded" => supported.push(i),
            "pyenv-unsupported" => unsupported.push(i),
            other => skipped.push((i.version.clone(), format!("{}: unknown kind {other:?}", i.label))),
        }
    }
    supported.sort_by_key(|i: &Interpreter| version_key(&i.version));
    unsupported.sort_by_key(|i: &Interpreter| version_key(&i.version));
    for m in SUPPORTED_MINORS {
        if !supported.iter().any(|i| i.minor() == (3, m)) {
            skipped.push((format!("3.{m}"), format!("no interpreter for it in {source}")));
        }
    }
    Inventory { supported, unsupported, skipped, source }
}

// ------------------------------------------------------------------------------------------
// Processes
// ------------------------------------------------------------------------------------------

/// A child process that is killed (SIGKILL) and reaped when dropped, whatever happens in the test.
pub struct ChildGuard {
    pub child: Child,
    pub pid: i32,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl ChildGuard {
    /// Guard a child spawned elsewhere (its stderr, if piped, is collected).
    pub fn from_child(mut child: Child) -> ChildGuard {
        let pid = child.id() as i32;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(e) = child.stderr.take() {
            drain(e, stderr.clone());
        }
        ChildGuard { child, pid, stderr }
    }

    /// What the child wrote on stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain<R: Read + Send + 'static>(mut r: R, buf: Arc<Mutex<Vec<u8>>>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
}

/// The lines of a child's stdout, read on a thread that keeps reading (even when nobody receives
/// any more), so the child never blocks on a full pipe.
fn read_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(l) => {
                    let _ = tx.send(l);
                }
                Err(_) => break,
            }
        }
    });
    rx
}

/// Start `cmd` with stdout piped and wait until it prints a line starting with `ready_prefix`.
/// Returns the guard and that line. stdin is closed; stderr is collected for messages.
pub fn spawn_until_ready(mut cmd: Command, ready_prefix: &str, what: &str) -> Result<(ChildGuard, String), String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))?;
    let pid = child.id() as i32;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr_buf = Arc::new(Mutex::new(Vec::new()));
    drain(child.stderr.take().expect("piped stderr"), stderr_buf.clone());
    let guard = ChildGuard { child, pid, stderr: stderr_buf };
    let rx = read_lines(stdout);
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(l) if l.starts_with(ready_prefix) => return Ok((guard, l)),
            Ok(l) => seen.push(l),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let mut guard = guard;
                let mut status = None;
                for _ in 0..100 {
                    if let Ok(Some(s)) = guard.child.try_wait() {
                        status = Some(s);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                return Err(format!(
                    "{what} exited before printing {ready_prefix} ({})\n--- its stdout ---\n{}\n--- its stderr ---\n{}",
                    status.map(|s| s.to_string()).unwrap_or_else(|| "closed its stdout, still running".into()),
                    seen.join("\n"),
                    guard.stderr()
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                return Err(format!(
                    "{what} did not print {ready_prefix} within {READY_TIMEOUT:?}\n--- its stdout ---\n{}\n--- its stderr ---\n{}",
                    seen.join("\n"),
                    guard.stderr()
                ));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

#[derive(Debug)]
pub struct CmdOutput {
    /// Exit code; None when killed by a signal or by the timeout.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout_bytes: Vec<u8>,
    pub stdout: String,
    pub stderr: String,
    pub cmdline: String,
    pub elapsed: Duration,
}

impl CmdOutput {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Everything about the run, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "$ {}\n(exit {}{}, {:?})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code.map(|c| c.to_string()).unwrap_or_else(|| "by signal".into()),
            if self.timed_out { ", TIMED OUT and killed" } else { "" },
            self.elapsed,
            truncate(&self.stdout, 12_000),
            truncate(&self.stderr, 4_000)
        )
    }

    /// A shorter account of the run, for failure messages of the per-interpreter suites.
    pub fn describe_brief(&self) -> String {
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
        serde_json::from_str(&self.stdout).map_err(|e| format!("not JSON ({e}):\n{}", self.describe_brief()))
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
    format!("{}\n... [{} more bytes cut]", &s[..end], s.len() - end)
}

fn cmdline(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run a command to completion (killed after `timeout`), stdin closed, both streams captured.
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
        return Err(format!("dump --json did not exit 0:\n{}", out.describe_brief()));
    }
    if v["schema"] != "taskspy/1" {
        return Err(format!("dump --json schema is {}, expected taskspy/1", v["schema"]));
    }
    Ok(v)
}

/// Kernel thread ids of a live process.
pub fn os_tids(pid: i32) -> BTreeSet<i64> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
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
    /// The READY line itself (fixtures may say what they set up after the word).
    pub ready_line: String,
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
    pub fn start_with(
        interp: &Interpreter,
        exe: &Path,
        script: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Fixture, String> {
        let mut c = interp.command_with(exe);
        c.arg("-u").arg(fixture_path(script)).args(args);
        // Bounded life even if this test process is killed without running destructors.
        c.env("TASKSPY_FIXTURE_LIFETIME", "900");
        for (k, v) in env {
            c.env(k, v);
        }
        Self::spawn(c, &format!("{script} {} on Python {}", args.join(" "), interp.version))
    }

    pub fn spawn(mut cmd: Command, what: &str) -> Result<Fixture, String> {
        // Its own process group: dropping the fixture kills what it started too (pool workers,
        // a multiprocessing forkserver, helper processes), not only the script itself.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))?;
        let pid = child.id() as i32;
        let stdout = child.stdout.take().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        drain(child.stderr.take().unwrap(), stderr.clone());
        // Keeps reading after READY, so the fixture never blocks on a full pipe.
        let rx = read_lines(stdout);
        let mut f = Fixture {
            child,
            pid,
            what: what.to_string(),
            before_ready: Vec::new(),
            ready_line: String::new(),
            lines: rx,
            stderr,
            exited: None,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match f.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.starts_with("READY") => {
                    f.ready_line = l;
                    break;
                }
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
            // SAFETY: kill(2) on the process group spawn() created; the leader is not reaped yet,
            // so its PID (the group id) cannot have been reused.
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGKILL);
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------------------------------
// Fixture markers
// ------------------------------------------------------------------------------------------

/// Line numbers of the fixture's park markers: a line ending in `# PARK:<tag>` (tag without
/// spaces) maps tag -> 1-based line number.
pub fn park_markers(path: &Path) -> HashMap<String, i64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
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
// taskspy/1 JSON
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub function: String,
    pub file: String,
    pub line: i64,
}

#[derive(Debug, Clone)]
pub struct Thread {
    pub tid: Option<i64>,
    pub ident: u64,
    pub name: Option<String>,
    pub interpreter: i64,
    pub holds_gil: bool,
    pub state: String,
    pub frames: Vec<Frame>,
    pub truncated: bool,
}

impl Thread {
    pub fn label(&self) -> String {
        format!(
            "{:?} (tid {}, ident {:#x}, interp {})",
            self.name.as_deref().unwrap_or("<no name>"),
            self.tid.map(|t| t.to_string()).unwrap_or_else(|| "null".into()),
            self.ident,
            self.interpreter
        )
    }
}

#[derive(Debug, Clone)]
pub struct Dump {
    pub json: Value,
    pub version: String,
    pub threads: Vec<Thread>,
}

impl Dump {
    pub fn named(&self, name: &str) -> Vec<&Thread> {
        self.threads.iter().filter(|t| t.name.as_deref() == Some(name)).collect()
    }

    pub fn in_interp(&self, id: i64) -> Vec<&Thread> {
        self.threads.iter().filter(|t| t.interpreter == id).collect()
    }

    /// Compact rendering for failure messages.
    pub fn summary(&self) -> String {
        let mut s = format!("taskspy: Python {}, {} threads\n", self.version, self.threads.len());
        for t in &self.threads {
            s += &format!("  thread {} gil={} state={}\n", t.label(), t.holds_gil, t.state);
            s += &frames_summary(t.frames.iter().map(|f| (f.function.as_str(), f.line, f.file.as_str())));
        }
        s
    }
}

fn frames_summary<'a>(frames: impl Iterator<Item = (&'a str, i64, &'a str)>) -> String {
    let v: Vec<_> = frames.collect();
    let mut s = String::new();
    for (i, (f, l, file)) in v.iter().enumerate() {
        if v.len() > 24 && i >= 12 && i < v.len() - 6 {
            if i == 12 {
                s += &format!("      ... {} frames ...\n", v.len() - 18);
            }
            continue;
        }
        s += &format!("      {f} ({file}:{l})\n");
    }
    s
}

fn get<'a>(v: &'a Value, key: &str, ctx: &str, errs: &mut Vec<String>) -> Option<&'a Value> {
    let r = v.get(key);
    if r.is_none() {
        errs.push(format!("{ctx}: missing key {key:?}"));
    }
    r
}

/// Check a `taskspy dump --json` document against the `taskspy/1` contract and parse it.
pub fn parse_dump(text: &str, pid: i32, interp: &Interpreter) -> Result<Dump, String> {
    let json: Value = serde_json::from_str(text).map_err(|e| format!("stdout is not one JSON document: {e}"))?;
    let mut errs = Vec::new();
    let e = &mut errs;
    if json.get("schema").and_then(Value::as_str) != Some("taskspy/1") {
        e.push(format!("schema is {:?}, expected \"taskspy/1\"", json.get("schema")));
    }
    if json.get("pid").and_then(Value::as_i64) != Some(pid as i64) {
        e.push(format!("pid is {:?}, expected {pid}", json.get("pid")));
    }
    if !json.get("captured_at").map_or(false, Value::is_string) {
        e.push("captured_at missing or not a string".into());
    }
    let mut version = String::new();
    if let Some(py) = get(&json, "python", "document", e) {
        match py.get("version").and_then(Value::as_str) {
            Some(v) => {
                version = v.to_string();
                if !version_matches(v, &interp.version) {
                    e.push(format!("python.version is {v:?}, expected it to start with {:?}", interp.version));
                }
            }
            None => e.push("python.version missing or not a string".into()),
        }
        if !py.get("executable").map_or(false, Value::is_string) {
            e.push("python.executable missing or not a string".into());
        }
        for k in ["free_threaded", "gil_enabled"] {
            if !py.get(k).map_or(false, Value::is_boolean) {
                e.push(format!("python.{k} missing or not a bool"));
            }
        }
    }
    for k in ["tasks", "findings"] {
        if !json.get(k).map_or(false, Value::is_array) {
            e.push(format!("{k} missing or not an array"));
        }
    }
    let mut threads = Vec::new();
    match json.get("threads").and_then(Value::as_array) {
        None => e.push("threads missing or not an array".into()),
        Some(arr) => {
            for (i, t) in arr.iter().enumerate() {
                let ctx = format!("threads[{i}]");
                let tid = match get(t, "tid", &ctx, e) {
                    Some(Value::Null) | None => None,
                    Some(v) => match v.as_i64() {
                        Some(x) => Some(x),
                        None => {
                            e.push(format!("{ctx}.tid is {v}, expected an integer or null"));
                            None
                        }
                    },
                };
                let ident = get(t, "ident", &ctx, e).and_then(|v| {
                    let r = v.as_u64();
                    if r.is_none() {
                        e.push(format!("{ctx}.ident is {v}, expected an unsigned integer"));
                    }
                    r
                });
                let name = match get(t, "name", &ctx, e) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Null) | None => None,
                    Some(v) => {
                        e.push(format!("{ctx}.name is {v}, expected a string or null"));
                        None
                    }
                };
                let interpreter = get(t, "interpreter", &ctx, e).and_then(|v| {
                    let r = v.as_i64();
                    if r.is_none() {
                        e.push(format!("{ctx}.interpreter is {v}, expected an integer"));
                    }
                    r
                });
                let holds_gil = get(t, "holds_gil", &ctx, e).and_then(|v| {
                    let r = v.as_bool();
                    if r.is_none() {
                        e.push(format!("{ctx}.holds_gil is {v}, expected a bool"));
                    }
                    r
                });
                let state = get(t, "state", &ctx, e).and_then(|v| {
                    let r = v.as_str().filter(|s| ["running", "idle", "waiting_gil", "unknown"].contains(s));
                    if r.is_none() {
                        e.push(format!("{ctx}.state is {v}, expected one of running|idle|waiting_gil|unknown"));
                    }
                    r.map(str::to_string)
                });
                let truncated = t.get("truncated").and_then(Value::as_bool).unwrap_or(false);
                let mut frames = Vec::new();
                match get(t, "frames", &ctx, e).map(|v| v.as_array()) {
                    Some(Some(fs)) => {
                        for (j, f) in fs.iter().enumerate() {
                            let fctx = format!("{ctx}.frames[{j}]");
                            let function = f.get("function").and_then(Value::as_str);
                            let file = f.get("file").and_then(Value::as_str);
                            let line = f.get("line").and_then(Value::as_i64);
                            match (function, file, line) {
                                (Some(function), Some(file), Some(line)) => {
                                    frames.push(Frame { function: function.into(), file: file.into(), line })
                                }
                                _ => e.push(format!("{fctx} is {f}, expected {{function: str, file: str, line: int}}")),
                            }
                        }
                    }
                    Some(None) => e.push(format!("{ctx}.frames is not an array")),
                    None => {}
                }
                if let (Some(ident), Some(interpreter), Some(holds_gil), Some(state)) =
                    (ident, interpreter, holds_gil, state)
                {
                    threads.push(Thread { tid, ident, name, interpreter, holds_gil, state, frames, truncated });
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(Dump { json, version, threads })
    } else {
        Err(format!("JSON does not follow the taskspy/1 contract:\n  - {}", errs.join("\n  - ")))
    }
}

/// taskspy's version must start with the provisioned one ("3.14.1" / "3.15.0a3"); a report without
/// the pre-release tag ("3.15.0" for "3.15.0a3") is accepted as long as X.Y.Z agree.
pub fn version_matches(reported: &str, expected: &str) -> bool {
    fn xyz(v: &str) -> Vec<String> {
        v.split('.').take(3).map(|p| p.chars().take_while(|c| c.is_ascii_digit()).collect()).collect()
    }
    reported.starts_with(expected) || (xyz(reported) == xyz(expected) && xyz(expected).len() == 3)
}

// ------------------------------------------------------------------------------------------
// py-spy
// ------------------------------------------------------------------------------------------

/// py-spy as scripts/provision.sh installs it ($CACHE/venv-tools/bin/py-spy), or $TASKSPY_PYSPY.
pub fn pyspy_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TASKSPY_PYSPY").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let p = cache_dir().join("venv-tools/bin/py-spy");
    p.exists().then_some(p)
}

#[derive(Debug, Clone)]
pub struct SpyThread {
    pub thread_id: u64,
    pub os_thread_id: Option<i64>,
    pub name: Option<String>,
    /// (function, line, file)
    pub frames: Vec<(String, i64, String)>,
}

pub struct Spy {
    pub threads: Vec<SpyThread>,
    pub raw: String,
}

impl Spy {
    pub fn summary(&self) -> String {
        let mut s = format!("py-spy: {} threads\n", self.threads.len());
        for t in &self.threads {
            s += &format!(
                "  thread {:?} (os_thread_id {}, thread_id {:#x})\n",
                t.name.as_deref().unwrap_or("<no name>"),
                t.os_thread_id.map(|t| t.to_string()).unwrap_or_else(|| "null".into()),
                t.thread_id
            );
            s += &frames_summary(t.frames.iter().map(|(f, l, file)| (f.as_str(), *l, file.as_str())));
        }
        s
    }
}

/// `py-spy dump --pid PID --json`: a JSON list of threads, each
/// `{pid, thread_id, thread_name, os_thread_id, active, owns_gil, process_info,
///   frames: [{name, filename, module, short_filename, line, locals, is_entry, is_shim_entry}]}`
/// (py-spy 0.4.x), innermost frame first. Err(reason) when py-spy cannot dump this process.
pub fn run_pyspy(pyspy: &Path, pid: i32) -> Result<Spy, String> {
    let mut c = Command::new(pyspy);
    c.args(["dump", "--pid", &pid.to_string(), "--json"]);
    c.env_remove("RUST_BACKTRACE");
    let out = run(c, COMMAND_TIMEOUT);
    if !out.ok() {
        let first = out.stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_string();
        return Err(format!(
            "py-spy exited {} ({first})",
            out.code.map(|c| c.to_string()).unwrap_or_else(|| "by signal/timeout".into())
        ));
    }
    let v: Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("py-spy printed no JSON ({e}): {}", truncate(&out.stdout, 300)))?;
    let arr = v.as_array().ok_or("py-spy JSON is not a list")?;
    let mut threads = Vec::new();
    for t in arr {
        let frames = t
            .get("frames")
            .and_then(Value::as_array)
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        (
                            f.get("name").and_then(Value::as_str).unwrap_or("").to_string(),
                            f.get("line").and_then(Value::as_i64).unwrap_or(-1),
                            f.get("filename").and_then(Value::as_str).unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        threads.push(SpyThread {
            thread_id: t.get("thread_id").and_then(Value::as_u64).ok_or("py-spy thread without thread_id")?,
            os_thread_id: t.get("os_thread_id").and_then(Value::as_i64),
            name: t.get("thread_name").and_then(Value::as_str).map(str::to_string),
            frames,
        });
    }
    Ok(Spy { threads, raw: out.stdout })
}

/// Compare taskspy's threads with py-spy's. Returns a list of differences (empty = equal).
///
/// * py-spy reads only ONE interpreter, `_PyRuntime.interpreters.head`, which is the most recently
///   created one (verified with fixtures/subinterp.py on 3.8-3.13: py-spy shows the
///   subinterpreter's threads and not the main interpreter's). So taskspy's threads of its highest
///   interpreter id are compared; for single-interpreter processes that is interpreter 0.
/// * Threads with no Python frames on both sides are not compared (a subinterpreter keeps an
///   empty thread state for the thread that created it on 3.8-3.12; py-spy lists it).
/// * Threads are matched by native thread id (taskspy `tid` = py-spy `os_thread_id`), falling back
///   to `threading.get_ident()` (taskspy `ident` = py-spy `thread_id`) where a tid is missing.
/// * Frames are compared as (function, line) lists, innermost first. Function names are compared
///   exactly: py-spy prints `co_qualname` on 3.11+ (`Thread.run`, `EpollSelector.select`) and
///   `co_name` before (`run`, `select`) -- verified with py-spy 0.4.x on pyenv 3.8.18, 3.9.18,
///   3.10.13, 3.11.7, 3.12.1, 3.13.0 -- which is exactly taskspy's documented rule.
/// * Threads named in `volatile` are still running: only their function names are compared.
pub fn compare_with_pyspy(d: &Dump, spy: &Spy, volatile: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let interp = d.threads.iter().map(|t| t.interpreter).max().unwrap_or(0);
    let ours: Vec<&Thread> = d.threads.iter().filter(|t| t.interpreter == interp).collect();
    let mut matched = BTreeSet::new();
    for p in &spy.threads {
        let by_tid = p.os_thread_id.and_then(|tid| ours.iter().position(|t| t.tid == Some(tid)));
        let idx = by_tid.or_else(|| ours.iter().position(|t| t.ident == p.thread_id));
        let pname = p.name.as_deref().unwrap_or("<no name>");
        let Some(idx) = idx else {
            if !p.frames.is_empty() {
                problems.push(format!(
                    "py-spy shows thread {pname:?} (os_thread_id {:?}, thread_id {:#x}) that taskspy does not show in interpreter {interp}",
                    p.os_thread_id, p.thread_id
                ));
            }
            continue;
        };
        matched.insert(idx);
        let t = ours[idx];
        if let (Some(a), Some(b)) = (t.tid, p.os_thread_id) {
            if a != b {
                problems.push(format!("thread {pname:?}: taskspy tid {a}, py-spy os_thread_id {b}"));
            }
        }
        if t.ident != p.thread_id {
            problems
                .push(format!("thread {pname:?}: taskspy ident {:#x}, py-spy thread_id {:#x}", t.ident, p.thread_id));
        }
        if t.frames.is_empty() && p.frames.is_empty() {
            continue;
        }
        if p.name.is_some() && t.name != p.name {
            problems.push(format!("thread name: taskspy {:?}, py-spy {:?}", t.name, p.name));
        }
        let vol = volatile.contains(&pname);
        let ours_f: Vec<(String, i64)> =
            t.frames.iter().map(|f| (f.function.clone(), if vol { 0 } else { f.line })).collect();
        let theirs_f: Vec<(String, i64)> =
            p.frames.iter().map(|(f, l, _)| (f.clone(), if vol { 0 } else { *l })).collect();
        if ours_f != theirs_f {
            problems.push(format!(
                "thread {pname:?}: frames differ{}\n    taskspy: {}\n    py-spy:  {}",
                if vol { " (function names only: the thread is running)" } else { "" },
                fmt_spy_frames(&ours_f, vol),
                fmt_spy_frames(&theirs_f, vol)
            ));
        }
    }
    for (i, t) in ours.iter().enumerate() {
        if !matched.contains(&i) && !t.frames.is_empty() {
            problems.push(format!("taskspy shows thread {} that py-spy does not", t.label()));
        }
    }
    problems
}

fn fmt_spy_frames(f: &[(String, i64)], names_only: bool) -> String {
    let parts: Vec<String> = f.iter().map(|(n, l)| if names_only { n.clone() } else { format!("{n}:{l}") }).collect();
    if parts.len() > 30 {
        format!("[{} ... ({} frames) ... {}]", parts[..10].join(", "), parts.len(), parts[parts.len() - 5..].join(", "))
    } else {
        format!("[{}]", parts.join(", "))
    }
}

// ------------------------------------------------------------------------------------------
// Coverage
// ------------------------------------------------------------------------------------------

#[derive(Default)]
struct VersionRecord {
    passed: BTreeSet<String>,
    failed: BTreeSet<String>,
    pyspy_skipped: BTreeMap<String, String>,
}

fn coverage() -> &'static Mutex<BTreeMap<String, VersionRecord>> {
    static C: OnceLock<Mutex<BTreeMap<String, VersionRecord>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(BTreeMap::new()))
}

pub fn record_pass(version: &str, fixture: &str) {
    coverage()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(version.into())
        .or_default()
        .passed
        .insert(fixture.into());
}

pub fn record_fail(version: &str, fixture: &str) {
    coverage()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(version.into())
        .or_default()
        .failed
        .insert(fixture.into());
}

/// Print (now, to stderr) and remember a skipped py-spy comparison.
/// Printed once per version and reason; taskspy's own checks still run.
pub fn record_pyspy_skip(version: &str, fixture: &str, reason: &str) {
    let mut c = coverage().lock().unwrap_or_else(|p| p.into_inner());
    let skipped = &mut c.entry(version.into()).or_default().pyspy_skipped;
    if !skipped.contains_key(reason) {
        skipped.insert(reason.into(), fixture.into());
        note(&format!("SKIP py-spy comparison on {version}: {reason} (first seen with {fixture})"));
    }
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse().unwrap_or(0)).collect()
}

/// Group "version (reason)" entries by reason: "3.14 3.15 (reason)".
fn by_reason(items: impl IntoIterator<Item = (String, String)>) -> Vec<String> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (v, why) in items {
        m.entry(why).or_default().push(v);
    }
    m.into_iter().map(|(why, vs)| format!("{} ({why})", vs.join(" "))).collect()
}

/// Write the coverage line to `target/taskspy-coverage.txt` (overwritten by every fixture test as
/// it finishes, so the last one writes the union) and, once all `total` fixture tests of this run
/// have finished, to stderr. A version counts as exercised when at least one fixture passed on it
/// and none failed.
pub fn write_coverage(total: usize) {
    static FINISHED: Mutex<usize> = Mutex::new(0);
    let finished = {
        let mut f = FINISHED.lock().unwrap_or_else(|p| p.into_inner());
        *f += 1;
        *f
    };
    let inv = inventory();
    let c = coverage().lock().unwrap_or_else(|p| p.into_inner());
    let mut versions: Vec<&String> = c.keys().collect();
    versions.sort_by_key(|v| version_key(v));
    let exercised: Vec<String> = versions
        .iter()
        .filter(|v| c[**v].failed.is_empty() && !c[**v].passed.is_empty())
        .map(|v| v.to_string())
        .collect();
    let failed: Vec<String> = versions
        .iter()
        .filter(|v| !c[**v].failed.is_empty())
        .map(|v| format!("{v} ({})", c[*v].failed.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    let mut skipped = by_reason(inv.skipped.iter().cloned());
    if inv.supported.is_empty() {
        skipped.push("ALL (no supported interpreter found)".into());
    }
    let pyspy = by_reason(
        versions.iter().flat_map(|v| c[*v].pyspy_skipped.keys().map(move |why| (v.to_string(), why.clone()))),
    );
    let mut line = format!(
        "coverage: exercised {} | skipped: {}",
        if exercised.is_empty() { "NONE".to_string() } else { exercised.join(" ") },
        if skipped.is_empty() { "none".to_string() } else { skipped.join(", ") }
    );
    if !failed.is_empty() {
        line += &format!(" | FAILED: {}", failed.join(", "));
    }
    if !pyspy.is_empty() {
        line += &format!(" | py-spy comparison skipped: {}", pyspy.join(", "));
    }
    let dir = repo_root().join("target");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("taskspy-coverage.txt"), format!("{line}\n"));
    if finished >= total {
        note(&line);
    }
}

// ------------------------------------------------------------------------------------------
// Per-interpreter loop and coverage
// ------------------------------------------------------------------------------------------

pub enum Outcome {
    Pass,
    Skip(String),
}

#[derive(Default)]
struct SuiteRecord {
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

fn registry() -> &'static Mutex<BTreeMap<String, SuiteRecord>> {
    static R: OnceLock<Mutex<BTreeMap<String, SuiteRecord>>> = OnceLock::new();
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
pub fn write_suite_coverage(name: &str) {
    let inv = inventory();
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut versions: Vec<&String> = r.keys().collect();
    versions.sort_by_key(|v| version_key(v));
    let exercised: Vec<String> = versions
        .iter()
        .filter(|v| r[**v].failed.is_empty() && !r[**v].passed.is_empty())
        .map(|v| v.to_string())
        .collect();
    let failed: Vec<String> = versions
        .iter()
        .filter(|v| !r[**v].failed.is_empty())
        .map(|v| format!("{v} ({})", r[*v].failed.iter().cloned().collect::<Vec<_>>().join(",")))
        .collect();
    // Skips grouped by reason: "3.14 3.15 (test: reason)".
    let mut skipped = by_reason(
        inv.skipped.iter().cloned().chain(
            versions
                .iter()
                .flat_map(|v| r[*v].skipped.iter().map(move |(test, why)| (v.to_string(), format!("{test}: {why}")))),
        ),
    );
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
            subsets
                .iter()
                .map(|(t, vs)| format!("{t} on {}", if vs.is_empty() { "none".to_string() } else { vs.join(" ") }))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let dir = repo_root().join("target");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("taskspy-coverage-{name}.txt")), format!("{line}\n"));
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
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
                failures.push(format!(
                    "=== Python {} ({}) ===\npanicked: {}",
                    interp.version,
                    interp.label,
                    panic_text(&*p)
                ));
            }
        }
    }
    write_suite_coverage(coverage);
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

/// Validate `doc` against `docs/<schema>` with jsonschema from the tools venv (a printed skip when
/// the venv is not provisioned).
pub fn validate_json(doc: &Value, schema: &str, what: &str) -> Result<(), String> {
    let py = cache_dir().join("venv-tools/bin/python");
    if !py.exists() {
        note(&format!("SKIP schema validation of {what}: no {} (run scripts/provision.sh)", py.display()));
        return Ok(());
    }
    let dir = TempDir::new("schema");
    let file = dir.0.join("doc.json");
    std::fs::write(&file, doc.to_string()).map_err(|e| e.to_string())?;
    let schema_path = repo_root().join("docs").join(schema);
    let mut c = Command::new(&py);
    c.arg("-c")
        .arg(
            "import json,sys,jsonschema\n\
             s=json.load(open(sys.argv[1])); d=json.load(open(sys.argv[2]))\n\
             errs=sorted(jsonschema.Draft202012Validator(s).iter_errors(d), key=lambda e: list(e.path))\n\
             [print('/'.join(map(str,e.path)), e.message[:300]) for e in errs[:10]]\n\
             sys.exit(1 if errs else 0)",
        )
        .arg(&schema_path)
        .arg(&file);
    let out = run(c, Duration::from_secs(120));
    if out.code == Some(0) {
        return Ok(());
    }
    if out.stderr.contains("No module named 'jsonschema'") {
        note(&format!("SKIP schema validation of {what}: jsonschema is not installed in the tools venv"));
        return Ok(());
    }
    Err(format!("{what} does not match docs/{schema}:\n{}{}", out.stdout, truncate(&out.stderr, 2000)))
}
