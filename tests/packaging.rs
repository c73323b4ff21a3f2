//! Packaging and terminal manners: shell completions and the man page cover every subcommand,
//! colour follows `--color` / `NO_COLOR` / "is stdout a terminal", project metadata agrees between
//! Cargo.toml and pyproject.toml, and the Python wheel installs a working `taskspy` into fresh
//! CPython 3.8 and 3.14 virtual environments.
//!
//! The subcommand list is read from `taskspy --help`, so these tests stay right when subcommands
//! are added. Skips (no interpreter, no maturin) are written to the real stderr, never silent.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ESC: u8 = 0x1b;
const PY312: &str = "/root/.pyenv/versions/3.12.1/bin/python3";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The fixture the wheel test attaches to (and the colour tests, with another thread name).
const FIXTURE: &str = "import threading,time; threading.Thread(target=time.sleep, args=(60,), name=\"NAME\").start(); print(\"READY\", flush=True); time.sleep(60)";

fn taskspy() -> &'static str {
    env!("CARGO_BIN_EXE_taskspy")
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("TASKSPY_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache/taskspy"),
    }
}

/// Write to the real stderr (libtest does not capture it), so skips and timings are always seen.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Subcommand names from the "Commands:" block of `taskspy --help`.
fn subcommands() -> Vec<String> {
    let help = run_ok(Command::new(taskspy()).arg("--help"));
    let names: Vec<String> = help
        .lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    for expected in ["dump", "completions", "man"] {
        assert!(names.iter().any(|n| n == expected), "parsed no {expected:?} from --help: {names:?}\n{help}");
    }
    names
}

// ------------------------------------------------------------------------------------------
// Completions, man page, --version, --help
// ------------------------------------------------------------------------------------------

#[test]
fn completions_mention_every_subcommand() {
    let subs = subcommands();
    // Where each generator names a subcommand (clap_complete's own formats).
    /// (shell, how its script names a subcommand, how it names the --color flag)
    type Pattern = (&'static str, fn(&str) -> String, &'static str);
    let patterns: [Pattern; 3] = [
        ("bash", |s| format!("taskspy,{s})"), "--color"),
        ("zsh", |s| format!("'{s}:"), "--color"),
        ("fish", |s| format!("-a \"{s}\""), "-l color"),
    ];
    for (shell, pattern, color_flag) in patterns {
        let script = run_ok(Command::new(taskspy()).args(["completions", shell]));
        assert!(script.len() > 1000, "{shell} completions are suspiciously short:\n{script}");
        for s in &subs {
            assert!(
                script.contains(&pattern(s)),
                "{shell} completions do not offer subcommand {s:?} (looked for {:?})",
                pattern(s)
            );
        }
        assert!(script.contains(color_flag), "{shell} completions lack the global --color flag");
        assert!(!script.as_bytes().contains(&ESC), "{shell} completions contain an escape byte");
    }
}

/// The bash script is valid bash and really completes: `taskspy pst<TAB>` → pstree.
#[test]
fn bash_completion_completes() {
    let script = run_ok(Command::new(taskspy()).args(["completions", "bash"]));
    let dir = tmp_dir("bash-completion");
    let file = dir.join("taskspy.bash");
    std::fs::write(&file, &script).unwrap();
    let out = run_ok(Command::new("bash").arg("-c").arg(format!(
        "set -e; source {f}; COMP_WORDS=(taskspy pst); COMP_CWORD=1; COMP_LINE='taskspy pst'; COMP_POINT=11; \
         _taskspy taskspy pst taskspy; printf '%s\\n' \"${{COMPREPLY[@]}}\"; \
         COMP_WORDS=(taskspy dump --co); COMP_CWORD=2; _taskspy taskspy --co dump; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        f = file.display()
    )));
    let words: Vec<&str> = out.lines().collect();
    assert!(words.contains(&"pstree"), "bash completion of 'taskspy pst' gave {words:?}");
    assert!(words.contains(&"--color"), "bash completion of 'taskspy dump --co' gave {words:?}");
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let out = run(Command::new(taskspy()).args(["completions", "tcsh"]));
    assert_eq!(out.status.code(), Some(2), "stderr: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn man_page_mentions_every_subcommand() {
    let page = run_ok(Command::new(taskspy()).arg("man"));
    assert!(page.len() > 2000, "man page suspiciously short:\n{page}");
    assert!(page.lines().any(|l| l.starts_with(".TH TASKSPY 1")), "no .TH title line:\n{page}");
    for section in [
        ".SH NAME",
        ".SH SYNOPSIS",
        ".SH DESCRIPTION",
        ".SH OPTIONS",
        ".SH COMMANDS",
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
    ] {
        assert!(page.contains(section), "man page lacks {section}");
    }
    for s in subcommands().iter().filter(|s| *s != "help") {
        let heading = format!(".SS \"taskspy {s} ");
        let heading_bare = format!(".SS \"taskspy {s}\"");
        assert!(page.contains(&heading) || page.contains(&heading_bare), "man page has no section for {s:?}");
    }
    // Every exit code listed in --help is in EXIT STATUS.
    let help = run_ok(Command::new(taskspy()).arg("--help"));
    let status = page.split(".SH \"EXIT STATUS\"").nth(1).unwrap_or("");
    let codes: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Exit codes:"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.parse::<i32>().is_ok())
        .collect();
    assert!(codes.len() >= 10, "parsed too few exit codes from --help: {codes:?}");
    for c in codes {
        assert!(status.contains(&format!("\\fB{c}\\fR")), "exit code {c} missing from the man page's EXIT STATUS");
    }
    assert!(page.contains(env!("CARGO_PKG_VERSION")), "man page does not name version {}", env!("CARGO_PKG_VERSION"));
    assert!(!page.as_bytes().contains(&ESC), "man page contains an escape byte");
}

/// groff (when installed) formats the page without a single warning.
#[test]
fn man_page_formats_cleanly() {
    if run(Command::new("sh").args(["-c", "command -v groff"])).stdout.is_empty() {
        note("SKIP man_page_formats_cleanly: groff is not installed");
        return;
    }
    let dir = tmp_dir("man");
    let file = dir.join("taskspy.1");
    let page = run(Command::new(taskspy()).arg("man")).stdout;
    std::fs::write(&file, page).unwrap();
    let out = run(Command::new("groff").args(["-man", "-ww", "-z"]).arg(&file));
    assert!(out.status.success() && out.stderr.is_empty(), "groff: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn version_and_exit_codes_in_help() {
    let v = run_ok(Command::new(taskspy()).arg("--version"));
    assert_eq!(v.trim(), format!("taskspy {}", env!("CARGO_PKG_VERSION")));
    let help = run_ok(Command::new(taskspy()).arg("--help"));
    assert!(help.contains("Exit codes:") && help.contains("130"), "--help lost the exit codes:\n{help}");
    assert!(help.contains("--color <WHEN>"), "--help lacks --color:\n{help}");
    // --color is global: accepted before and after every subcommand.
    for s in subcommands().iter().filter(|s| *s != "help") {
        let sub_help = run_ok(Command::new(taskspy()).args([s.as_str(), "--help"]));
        assert!(sub_help.contains("--color <WHEN>"), "`taskspy {s} --help` lacks --color");
    }
    let out = run(Command::new(taskspy()).args(["--color", "sometimes", "man"]));
    assert_eq!(out.status.code(), Some(2), "a bad --color value must be a usage error");
}

// ------------------------------------------------------------------------------------------
// Metadata: one version, same description and license in both manifests
// ------------------------------------------------------------------------------------------

/// `key = "value"` in a TOML section (enough for these two flat manifests).
fn toml_string(text: &str, section: &str, key: &str) -> Option<String> {
    let mut in_section = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_section = t == format!("[{section}]");
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = t.split_once('=') {
            if k.trim() == key {
                return Some(v.trim().trim_matches('"').to_string());
            }
        }
    }
    None
}

#[test]
fn pyproject_agrees_with_cargo() {
    let cargo = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let py = std::fs::read_to_string(repo_root().join("pyproject.toml")).unwrap();
    assert_eq!(
        toml_string(&py, "project", "version"),
        None,
        "pyproject.toml must not set a version (it comes from Cargo.toml)"
    );
    assert_eq!(toml_string(&py, "project", "dynamic").as_deref(), Some("[\"version\"]"));
    for key in ["name", "description", "license"] {
        assert_eq!(
            toml_string(&py, "project", key),
            toml_string(&cargo, "package", key),
            "{key} differs between pyproject.toml and Cargo.toml"
        );
    }
    assert_eq!(toml_string(&py, "tool.maturin", "bindings").as_deref(), Some("bin"));
    for key in ["description", "license", "readme", "rust-version", "keywords", "categories"] {
        assert!(toml_string(&cargo, "package", key).is_some(), "Cargo.toml [package] lacks {key}");
    }
}

// ------------------------------------------------------------------------------------------
// Colour: --color, NO_COLOR and "is stdout a terminal"
// ------------------------------------------------------------------------------------------

/// A child process that is killed and reaped when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `python -c FIXTURE` (thread named `thread_name`) and wait for READY.
fn spawn_fixture(python: &Path, thread_name: &str) -> Guard {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(FIXTURE.replace("NAME", thread_name))
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.display()));
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(l) if l.starts_with("READY") => break,
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{} exited before READY", python.display()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                assert!(Instant::now() < deadline, "{} did not print READY within {READY_TIMEOUT:?}", python.display())
            }
        }
    }
    // Let the worker thread reach its sleep.
    std::thread::sleep(Duration::from_millis(150));
    guard
}

/// Run taskspy with stdout on a pseudo-terminal; returns (exit code, everything it wrote).
fn run_on_pty(args: &[String], no_color: Option<&str>) -> (Option<i32>, Vec<u8>) {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty fills two descriptors we then own; null name/termios/winsize are allowed.
    let rc =
        unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(rc, 0, "openpty failed: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just returned by openpty and are owned by nobody else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut cmd = Command::new(taskspy());
    cmd.args(args).stdin(Stdio::null()).stdout(Stdio::from(slave)).stderr(Stdio::piped());
    match no_color {
        Some(v) => cmd.env("NO_COLOR", v),
        None => cmd.env_remove("NO_COLOR"),
    };
    let child = cmd.spawn().expect("spawn taskspy");
    drop(cmd); // closes our copy of the slave, so the master reads EOF/EIO when taskspy exits
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match f.read(&mut chunk) {
                Ok(0) | Err(_) => break, // EIO once the slave side is closed
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    });
    let out = child.wait_with_output().expect("wait taskspy");
    let text = reader.join().unwrap();
    if !out.status.success() {
        note(&format!("taskspy {args:?} on a pty: {}: {}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    (out.status.code(), text)
}

fn run_piped(args: &[String], no_color: Option<&str>) -> Output {
    let mut cmd = Command::new(taskspy());
    cmd.args(args);
    match no_color {
        Some(v) => cmd.env("NO_COLOR", v),
        None => cmd.env_remove("NO_COLOR"),
    };
    run(&mut cmd)
}

#[test]
fn color_follows_flag_no_color_and_tty() {
    let python = Path::new(PY312);
    if !python.exists() {
        note(&format!("SKIP color_follows_flag_no_color_and_tty: {PY312} does not exist"));
        return;
    }
    let fixture = spawn_fixture(python, "color-worker");
    let pid = fixture.0.id().to_string();
    let args = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["dump".to_string()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.push(pid.clone());
        v
    };

    // Piped: never colour unless --color always.
    let piped = run_piped(&args(&[]), None);
    if piped.status.code() == Some(5) {
        note(&format!("SKIP color_follows_flag_no_color_and_tty: not allowed to read PID {pid} (run as root)"));
        return;
    }
    assert!(piped.status.success(), "dump failed: {}", String::from_utf8_lossy(&piped.stderr));
    let text = String::from_utf8_lossy(&piped.stdout);
    assert!(text.contains("\"color-worker\""), "dump does not show the fixture's thread:\n{text}");
    assert!(!piped.stdout.contains(&ESC), "piped output (no NO_COLOR, --color auto) contains ESC:\n{text}");
    let piped_no_color = run_piped(&args(&["--color", "auto"]), Some("1"));
    assert!(piped_no_color.status.success());
    assert!(!piped_no_color.stdout.contains(&ESC), "NO_COLOR=1 --color auto output contains ESC");
    let piped_always = run_piped(&args(&["--color", "always"]), None);
    assert!(piped_always.status.success());
    assert!(piped_always.stdout.contains(&ESC), "--color always (piped) has no ESC: the colour tests could not fail");
    let plain: String = String::from_utf8_lossy(&piped_always.stdout)
        .replace("\x1b[1m", "")
        .replace("\x1b[32m", "")
        .replace("\x1b[0m", "");
    assert!(plain.contains("Thread ") && plain.contains("\"color-worker\""), "colouring changed the text:\n{plain}");
    // --color may also come before the subcommand (global flag).
    let before = run_piped(&["--color".into(), "always".into(), "dump".into(), pid.clone()], None);
    assert!(
        before.status.success() && before.stdout.contains(&ESC),
        "--color always before the subcommand had no effect"
    );

    // On a terminal: colour by default; NO_COLOR (non-empty) turns it off unless --color always.
    let (code, tty) = run_on_pty(&args(&[]), None);
    assert_eq!(code, Some(0));
    assert!(
        tty.contains(&ESC),
        "no colour on a terminal with --color auto and no NO_COLOR:\n{}",
        String::from_utf8_lossy(&tty)
    );
    let (code, tty) = run_on_pty(&args(&["--color", "auto"]), Some("1"));
    assert_eq!(code, Some(0));
    assert!(
        !tty.contains(&ESC),
        "NO_COLOR=1 --color auto on a terminal contains ESC:\n{}",
        String::from_utf8_lossy(&tty)
    );
    let (code, tty) = run_on_pty(&args(&[]), Some(""));
    assert_eq!(code, Some(0));
    assert!(tty.contains(&ESC), "an empty NO_COLOR must not disable colour");
    let (code, tty) = run_on_pty(&args(&["--color", "always"]), Some("1"));
    assert_eq!(code, Some(0));
    assert!(tty.contains(&ESC), "--color always must win over NO_COLOR");
    let (code, tty) = run_on_pty(&args(&["--color", "never"]), None);
    assert_eq!(code, Some(0));
    assert!(!tty.contains(&ESC), "--color never on a terminal contains ESC");

    // JSON is never coloured.
    let json = run_piped(&args(&["--json", "--color", "always"]), None);
    assert!(json.status.success() && !json.stdout.contains(&ESC), "--json --color always contains ESC");
    drop(fixture);
}

// ------------------------------------------------------------------------------------------
// The Python wheel
// ------------------------------------------------------------------------------------------

fn tmp_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("packaging-{name}"));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn wheel_installs_and_runs_in_fresh_venvs() {
    let start = Instant::now();
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".pyenv"));
    let interpreters: Vec<(&str, PathBuf)> = vec![
        ("3.8", pyenv.join("versions/3.8.18/bin/python3")),
        ("3.14", cache_dir().join("debian/3.14/root/usr/bin/python3.14")),
    ];
    let available: Vec<&(&str, PathBuf)> = interpreters
        .iter()
        .filter(|(v, p)| {
            let ok = p.exists();
            if !ok {
                note(&format!(
                    "SKIP wheel test on Python {v}: {} does not exist (run scripts/provision.sh)",
                    p.display()
                ));
            }
            ok
        })
        .collect();
    if available.is_empty() {
        note("SKIP wheel_installs_and_runs_in_fresh_venvs: no interpreter to install the wheel into");
        return;
    }

    let build = run(Command::new("bash").arg(repo_root().join("scripts/build_wheel.sh")));
    let build_log = String::from_utf8_lossy(&build.stderr);
    if build.status.code() == Some(3) {
        note(&format!("SKIP wheel_installs_and_runs_in_fresh_venvs: {}", build_log.trim()));
        return;
    }
    assert!(build.status.success(), "scripts/build_wheel.sh failed ({}):\n{build_log}", build.status);
    let wheel = PathBuf::from(String::from_utf8_lossy(&build.stdout).lines().last().expect("wheel path").trim());
    let wheel_name = wheel.file_name().unwrap().to_string_lossy().to_string();
    let built_in = start.elapsed();
    assert!(wheel.exists(), "{} does not exist", wheel.display());
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        wheel_name.starts_with(&format!("taskspy-{version}-py3-none-")) && wheel_name.ends_with(".whl"),
        "wheel {wheel_name} is not taskspy-{version}-py3-none-<platform>.whl"
    );
    assert!(wheel_name.contains("linux") && wheel_name.contains("x86_64"), "unexpected platform tag: {wheel_name}");

    for (v, python) in available {
        let t0 = Instant::now();
        let venv = tmp_dir(&format!("venv-{v}"));
        run_ok(Command::new(python).args(["-m", "venv"]).arg(&venv).env_remove("PYTHONPATH").env_remove("PYTHONHOME"));
        run_ok(
            Command::new(venv.join("bin/python"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--no-index",
                    "--no-cache-dir",
                    "--disable-pip-version-check",
                    "--quiet",
                ])
                .arg(&wheel)
                .env_remove("PIP_INDEX_URL")
                .env_remove("PIP_FIND_LINKS"),
        );
        let exe = venv.join("bin/taskspy");
        assert!(exe.exists(), "pip install did not create {}", exe.display());
        // On the venv's PATH (what activation does): the installed binary is found first.
        let found = run_ok(
            Command::new("sh")
                .args(["-c", "command -v taskspy"])
                .env("PATH", format!("{}:/usr/bin:/bin", venv.join("bin").display())),
        );
        assert_eq!(Path::new(found.trim()), exe.as_path(), "taskspy on the venv's PATH is not the installed one");
        assert_eq!(run_ok(Command::new(&exe).arg("--version")).trim(), format!("taskspy {version}"));

        // Attach the installed binary to the same interpreter (the venv's python).
        let fixture = spawn_fixture(&venv.join("bin/python"), "wheel-worker");
        let pid = fixture.0.id();
        let out = run(Command::new(&exe).args(["dump", "--json"]).arg(pid.to_string()));
        if out.status.code() == Some(5) {
            note(&format!("SKIP wheel dump on Python {v}: not allowed to read PID {pid} (run as root)"));
            continue;
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "installed taskspy dump --json {pid} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
        assert_eq!(doc["schema"], "taskspy/1");
        assert_eq!(doc["pid"], pid);
        let py_version = doc["python"]["version"].as_str().unwrap_or("");
        assert!(py_version.starts_with(&format!("{v}.")), "Python {v} venv reported version {py_version:?}");
        let names: Vec<&str> =
            doc["threads"].as_array().expect("threads").iter().filter_map(|t| t["name"].as_str()).collect();
        assert!(names.contains(&"wheel-worker"), "no thread named wheel-worker on Python {v}: {names:?}");
        drop(fixture);
        note(&format!(
            "wheel test: Python {py_version} venv: installed and dumped in {:.1} s",
            t0.elapsed().as_secs_f64()
        ));
    }
    note(&format!(
        "wheel test: {wheel_name} (build/check {:.1} s), total {:.1} s",
        built_in.as_secs_f64(),
        start.elapsed().as_secs_f64()
    ));
}
