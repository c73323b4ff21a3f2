//! End-to-end: attach `taskspy dump` to real CPython processes (every interpreter in
//! scripts/provision.sh's interpreters.tsv) parked in known states by fixtures/*.py, and check
//! (1) the `taskspy/1` JSON contract, (2) the fixture's known state (thread names, functions, the
//! lines marked `# PARK:<tag>` in the fixture), (3) equality with py-spy's dump where py-spy works,
//! (4) the text output (format, escaping of hostile names), and bad inputs (one-line errors).
//!
//! Each fixture test loops over every supported interpreter and reports all failing interpreters at
//! once; skips are printed (never silent) and the run ends with a `coverage:` line, also written to
//! `target/taskspy-coverage.txt` for scripts/test.sh.

mod common;

use common::*;
use std::collections::{BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

/// What a fixture check sees.
struct Ctx<'a> {
    #[allow(dead_code)] // for version-gated expectations
    interp: &'a Interpreter,
    path: PathBuf,
    /// The fixture path as it appears in frames (`co_filename`: the path we passed to python).
    file: String,
    markers: HashMap<String, i64>,
    pid: i32,
    ready: String,
}

impl Ctx<'_> {
    fn line(&self, tag: &str) -> i64 {
        *self.markers.get(tag).unwrap_or_else(|| panic!("{} has no `# PARK:{tag}` marker", self.path.display()))
    }
}

/// Number of fixture tests below (each calls `run_family` once): the last to finish prints the
/// coverage line.
const FIXTURE_TESTS: usize = 5;

struct Fixture {
    file: &'static str,
    /// Threads that keep running: compared with py-spy by function names only.
    volatile: &'static [&'static str],
    check_json: fn(&Ctx, &Dump) -> Vec<String>,
    check_text: fn(&Ctx, &Dump, &str) -> Vec<String>,
}

// ------------------------------------------------------------------------------------------
// Driver
// ------------------------------------------------------------------------------------------

fn run_family(fx: &Fixture) {
    let inv = inventory();
    if inv.supported.is_empty() {
        write_coverage(FIXTURE_TESTS);
        panic!(
            "no supported Python interpreter found (source: {}); run scripts/provision.sh (it writes {})",
            inv.source,
            cache_dir().join("interpreters.tsv").display()
        );
    }
    let mut failures = Vec::new();
    for interp in &inv.supported {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| run_one(fx, interp)))
            .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p))));
        match r {
            Ok(()) => record_pass(&interp.version, fx.file),
            Err(msg) => {
                record_fail(&interp.version, fx.file);
                note(&format!("FAIL {} on {}", fx.file, interp.describe()));
                failures.push(format!("==== {} on Python {} ====\n{msg}", fx.file, interp.describe()));
            }
        }
    }
    write_coverage(FIXTURE_TESTS);
    if !failures.is_empty() {
        panic!(
            "{} failed on {} of {} interpreters:\n\n{}",
            fx.file,
            failures.len(),
            inv.supported.len(),
            failures.join("\n\n")
        );
    }
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default()
}

fn run_one(fx: &Fixture, interp: &Interpreter) -> Result<(), String> {
    let path = fixture_path(fx.file);
    let markers = park_markers(&path);
    let mut cmd = interp.command();
    cmd.arg("-u").arg(&path);
    let (guard, ready) = spawn_until_ready(cmd, "READY", &format!("{} under {}", fx.file, interp.describe()))?;
    let pid = guard.pid;
    std::thread::sleep(SETTLE);
    let ctx = Ctx { interp, file: path.display().to_string(), path, markers, pid, ready };
    let tids = os_tids(pid);
    let pid_s = pid.to_string();

    let json_out = run(taskspy_cmd(&["dump", "--json", &pid_s]), COMMAND_TIMEOUT);
    let spy = pyspy_path().map(|p| run_pyspy(&p, pid));
    let text_out = run(taskspy_cmd(&["dump", &pid_s]), COMMAND_TIMEOUT);
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();

    let mut problems = Vec::new();
    if !alive {
        problems.push(format!("the fixture process died during the test; its stderr:\n{}", guard.stderr()));
    }
    let mut dump = None;
    if !json_out.ok() {
        problems.push("`taskspy dump --json` failed".into());
    } else {
        match parse_dump(&json_out.stdout, pid, interp) {
            Err(e) => problems.push(e),
            Ok(d) => {
                problems.extend(generic_json_checks(&ctx, &d, &tids));
                problems.extend((fx.check_json)(&ctx, &d));
                match &spy {
                    None => {
                        record_pyspy_skip(&interp.version, fx.file, "py-spy not installed (run scripts/provision.sh)")
                    }
                    Some(Err(reason)) => record_pyspy_skip(&interp.version, fx.file, reason),
                    Some(Ok(s)) => {
                        let diffs = compare_with_pyspy(&d, s, fx.volatile);
                        if !diffs.is_empty() {
                            problems.push(format!(
                                "taskspy and py-spy disagree:\n  - {}\n\n{}\n{}",
                                diffs.join("\n  - "),
                                d.summary(),
                                s.summary()
                            ));
                        }
                    }
                }
                dump = Some(d);
            }
        }
    }
    if !text_out.ok() {
        problems.push("`taskspy dump` (text) failed".into());
    } else if let Some(d) = &dump {
        problems.extend(generic_text_checks(d, &text_out, fx.volatile));
        problems.extend((fx.check_text)(&ctx, d, &text_out.stdout));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "fixture PID {pid}, READY line {:?}, markers {:?}\nproblems:\n  * {}\n",
        ctx.ready,
        sorted(&ctx.markers),
        problems.join("\n  * ")
    );
    if let Some(d) = &dump {
        msg += &format!("\n{}", d.summary());
    }
    msg += &format!("\n--- taskspy --json ---\n{}\n", json_out.describe());
    match &spy {
        Some(Ok(s)) => msg += &format!("\n--- py-spy ---\n{}\n", truncate(&s.raw, 12_000)),
        Some(Err(e)) => msg += &format!("\n--- py-spy ---\n{e}\n"),
        None => msg += "\n--- py-spy: not installed ---\n",
    }
    msg += &format!("\n--- taskspy (text) ---\n{}\n", text_out.describe());
    Err(msg)
}

fn sorted(m: &HashMap<String, i64>) -> Vec<(String, i64)> {
    let mut v: Vec<_> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
    v.sort_by_key(|(_, l)| *l);
    v
}

// ------------------------------------------------------------------------------------------
// Checks shared by every fixture
// ------------------------------------------------------------------------------------------

fn generic_json_checks(ctx: &Ctx, d: &Dump, os_tids: &BTreeSet<i64>) -> Vec<String> {
    let mut p = Vec::new();
    if d.threads.is_empty() {
        p.push("no threads at all".into());
    }
    let interps: BTreeSet<i64> = d.threads.iter().map(|t| t.interpreter).collect();
    if !interps.contains(&0) {
        p.push(format!("no thread in the main interpreter (interpreter ids: {interps:?})"));
    }
    for id in &interps {
        let ts = d.in_interp(*id);
        let holders: Vec<String> = ts.iter().filter(|t| t.holds_gil).map(|t| t.label()).collect();
        if holders.len() > 1 {
            p.push(format!("interpreter {id}: {} threads hold the GIL at once: {holders:?}", holders.len()));
        }
        let mut idents = BTreeSet::new();
        let mut tids = BTreeSet::new();
        for t in &ts {
            if t.ident == 0 || !idents.insert(t.ident) {
                p.push(format!("interpreter {id}: ident {:#x} of {} is zero or repeated", t.ident, t.label()));
            }
            if let Some(tid) = t.tid {
                if !tids.insert(tid) {
                    p.push(format!("interpreter {id}: tid {tid} appears twice"));
                }
            }
        }
    }
    for (i, t) in d.threads.iter().enumerate() {
        if let Some(tid) = t.tid {
            if !os_tids.contains(&tid) {
                p.push(format!("{}: tid {tid} is not a thread of PID {} (its tasks: {os_tids:?})", t.label(), ctx.pid));
            }
            if t.interpreter == 0 && tid == ctx.pid as i64 && t.name.as_deref().map_or(false, |n| n != "MainThread") {
                p.push(format!("the main OS thread (tid {tid}) is named {:?}, expected MainThread", t.name));
            }
        }
        if t.truncated {
            p.push(format!("{}: stack marked truncated", t.label()));
        }
        if let Some(e) = d.json["threads"][i].get("error") {
            p.push(format!("{}: error {e} (every stack in a parked fixture is readable)", t.label()));
        }
        for f in &t.frames {
            if f.line <= 0 || f.function.is_empty() || f.file.is_empty() {
                p.push(format!("{}: implausible frame {f:?}", t.label()));
                break;
            }
        }
    }
    p
}

fn generic_text_checks(d: &Dump, out: &CmdOutput, volatile: &[&str]) -> Vec<String> {
    let mut p = Vec::new();
    let text = &out.stdout;
    if out.stdout_bytes.contains(&0x1b) {
        p.push("text output contains a raw ESC byte (0x1b): a thread/file name was not escaped".into());
    }
    if !text.contains("MainThread") {
        p.push("text output does not mention MainThread".into());
    }
    if !text.contains(&d.version) {
        p.push(format!("text output does not mention the Python version {}", d.version));
    }
    // Every plainly named thread is listed, and its innermost frame is printed as
    // `function (file:line)` (threads still running may have moved: names only).
    for t in d.threads.iter().filter(|t| !t.frames.is_empty()) {
        let Some(name) = &t.name else { continue };
        if name.chars().any(|c| c.is_control()) {
            continue; // checked by the fixture that has one
        }
        if !text.contains(name.as_str()) {
            p.push(format!("text output does not mention thread {name:?}"));
        }
        let f = &t.frames[0];
        if f.file.chars().any(|c| c.is_control() || c == '\\') {
            continue;
        }
        let want = if volatile.contains(&name.as_str()) {
            format!("{} ({}:", f.function, f.file)
        } else {
            format!("{} ({}:{})", f.function, f.file, f.line)
        };
        if !text.lines().any(|l| l.trim() == want || (volatile.contains(&name.as_str()) && l.trim().starts_with(&want)))
        {
            p.push(format!("text output has no frame line `{want}` (innermost frame of thread {name:?})"));
        }
    }
    p
}

// ------------------------------------------------------------------------------------------
// Helpers for fixture expectations
// ------------------------------------------------------------------------------------------

/// Last dotted component: "Thread.run" -> "run" (stdlib frames are named `co_qualname` on 3.11+,
/// `co_name` before; fixture functions are module-level, so both agree for them).
fn short(f: &str) -> &str {
    f.rsplit('.').next().unwrap_or(f)
}

const THREAD_BOOTSTRAP: &[&str] = &["run", "_bootstrap_inner", "_bootstrap"];

fn one<'a>(p: &mut Vec<String>, d: &'a Dump, name: &str, interp: Option<i64>) -> Option<&'a Thread> {
    let ts: Vec<&Thread> = d
        .threads
        .iter()
        .filter(|t| t.name.as_deref() == Some(name) && interp.map_or(true, |i| t.interpreter == i))
        .collect();
    match ts.len() {
        1 => Some(ts[0]),
        0 => {
            p.push(format!(
                "no thread named {name:?}{}",
                interp.map(|i| format!(" in interpreter {i}")).unwrap_or_default()
            ));
            None
        }
        n => {
            p.push(format!("{n} threads named {name:?}"));
            None
        }
    }
}

/// The thread's innermost frames are exactly `(function, marker line)` in the fixture file.
fn expect_innermost(p: &mut Vec<String>, ctx: &Ctx, t: &Thread, expected: &[(&str, &str)]) {
    for (i, (func, tag)) in expected.iter().enumerate() {
        let want_line = ctx.line(tag);
        match t.frames.get(i) {
            Some(f) if f.function == *func && f.line == want_line && f.file == ctx.file => {}
            got => p.push(format!(
                "{}: frame #{i} should be {func} ({}:{want_line}) [PARK:{tag}], got {}",
                t.label(),
                ctx.file,
                got.map(|f| format!("{} ({}:{})", f.function, f.file, f.line)).unwrap_or_else(|| "nothing".into())
            )),
        }
    }
}

/// The thread's outermost frames have these (short) function names.
fn expect_outermost(p: &mut Vec<String>, t: &Thread, names: &[&str]) {
    let n = t.frames.len();
    let got: Vec<&str> = t.frames[n.saturating_sub(names.len())..].iter().map(|f| short(&f.function)).collect();
    if got != names {
        p.push(format!("{}: outermost frames should be {names:?}, got {got:?}", t.label()));
    }
}

/// The stack contains `(function, marker line)` in the fixture file somewhere.
fn expect_contains(p: &mut Vec<String>, ctx: &Ctx, t: &Thread, func: &str, tag: &str) {
    let line = ctx.line(tag);
    if !t.frames.iter().any(|f| f.function == func && f.line == line && f.file == ctx.file) {
        p.push(format!("{}: no frame {func} ({}:{line}) [PARK:{tag}] in its stack", t.label(), ctx.file));
    }
}

fn expect_names(p: &mut Vec<String>, d: &Dump, interp: i64, expected: &[&str]) {
    let got: Vec<String> = d
        .in_interp(interp)
        .iter()
        .filter(|t| !t.frames.is_empty())
        .map(|t| t.name.clone().unwrap_or_else(|| "<no name>".into()))
        .collect();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    if got_sorted != want {
        p.push(format!(
            "interpreter {interp}: threads with Python frames are {got_sorted:?}, expected exactly {want:?}"
        ));
    }
}

/// Every thread of a fully parked process is blocked outside the GIL.
fn expect_all_parked(p: &mut Vec<String>, d: &Dump, except: &[&str]) {
    for t in &d.threads {
        if t.frames.is_empty() || t.name.as_deref().map_or(false, |n| except.contains(&n)) {
            continue;
        }
        if t.holds_gil {
            p.push(format!("{} holds the GIL but is blocked in a C call that released it", t.label()));
        }
        if t.state == "running" || t.state == "waiting_gil" {
            p.push(format!("{} is {:?} but is parked (expected idle or unknown)", t.label(), t.state));
        }
    }
}

fn expect_main_thread(p: &mut Vec<String>, ctx: &Ctx, d: &Dump) {
    if let Some(t) = one(p, d, "MainThread", Some(0)) {
        expect_innermost(p, ctx, t, &[("main_wait", "main"), ("<module>", "module")]);
        if t.frames.len() != 2 {
            p.push(format!("MainThread should have exactly 2 frames, has {}", t.frames.len()));
        }
        if let Some(tid) = t.tid {
            if tid != ctx.pid as i64 {
                p.push(format!("MainThread tid is {tid}, expected the PID {}", ctx.pid));
            }
        }
    }
}

fn has_frame_line(text: &str, ctx: &Ctx, func: &str, tag: &str) -> Option<String> {
    let want = format!("{func} ({}:{})", ctx.file, ctx.line(tag));
    if text.lines().any(|l| l.trim() == want) {
        None
    } else {
        Some(format!("text output has no line `{want}`"))
    }
}

// ------------------------------------------------------------------------------------------
// threads.py
// ------------------------------------------------------------------------------------------

const UNICODE_NAME: &str = "w\u{f6}rker-\u{fc}";
const EVIL_NAME: &str = "evil\x1b[31mred\nline";

fn threads_json(ctx: &Ctx, d: &Dump) -> Vec<String> {
    let mut p = Vec::new();
    if ctx.ready != "READY" {
        p.push(format!("READY line is {:?}", ctx.ready));
    }
    expect_names(&mut p, d, 0, &["MainThread", "worker-1", "worker-2", "worker-3", UNICODE_NAME, EVIL_NAME]);
    if d.threads.iter().any(|t| t.name.as_deref() == Some("finished-1")) {
        p.push("the finished (joined) thread finished-1 is still listed".into());
    }
    if d.threads.len() != 6 {
        p.push(format!("expected 6 threads, got {}", d.threads.len()));
    }
    expect_main_thread(&mut p, ctx, d);
    for w in ["worker-1", "worker-2", "worker-3"] {
        if let Some(t) = one(&mut p, d, w, Some(0)) {
            expect_innermost(
                &mut p,
                ctx,
                t,
                &[
                    ("worker_inner", "worker_inner"),
                    ("worker_middle", "worker_middle"),
                    ("worker_outer", "worker_outer"),
                ],
            );
            expect_outermost(&mut p, t, THREAD_BOOTSTRAP);
            if t.frames.len() != 6 {
                p.push(format!("{}: expected 6 frames, got {}", t.label(), t.frames.len()));
            }
        }
    }
    for (name, func, tag) in [(UNICODE_NAME, "unicode_park", "unicode"), (EVIL_NAME, "evil_park", "evil")] {
        // JSON carries names exactly (serde_json escapes control characters itself).
        if let Some(t) = one(&mut p, d, name, Some(0)) {
            expect_innermost(&mut p, ctx, t, &[(func, tag)]);
            expect_outermost(&mut p, t, THREAD_BOOTSTRAP);
        }
    }
    expect_all_parked(&mut p, d, &[]);
    p
}

fn threads_text(ctx: &Ctx, _d: &Dump, text: &str) -> Vec<String> {
    let mut p = Vec::new();
    for needle in ["MainThread", "worker-1", "worker-2", "worker-3", UNICODE_NAME] {
        if !text.contains(needle) {
            p.push(format!("text output does not contain {needle:?}"));
        }
    }
    p.extend(has_frame_line(text, ctx, "worker_inner", "worker_inner"));
    p.extend(has_frame_line(text, ctx, "worker_middle", "worker_middle"));
    p.extend(has_frame_line(text, ctx, "main_wait", "main"));
    // The hostile name: ESC and newline escaped, on one line.
    let escaped_forms: Vec<String> =
        ["\\x1b", "\\u{1b}", "\\e"].iter().map(|esc| format!("evil{esc}[31mred\\nline")).collect();
    if !escaped_forms.iter().any(|f| text.contains(f.as_str())) {
        p.push(format!(
            "text output does not show the control-character thread name escaped as one of {escaped_forms:?}"
        ));
    }
    if text.contains("red\nline") || text.contains('\x1b') {
        p.push("text output contains the raw control characters of a thread name".into());
    }
    p
}

#[test]
fn dump_threads_fixture() {
    run_family(&Fixture { file: "threads.py", volatile: &[], check_json: threads_json, check_text: threads_text });
}

// ------------------------------------------------------------------------------------------
// recursion.py
// ------------------------------------------------------------------------------------------

const DEPTH: usize = 200;

fn recursion_json(ctx: &Ctx, d: &Dump) -> Vec<String> {
    let mut p = Vec::new();
    expect_names(&mut p, d, 0, &["MainThread", "recursion"]);
    expect_main_thread(&mut p, ctx, d);
    if let Some(t) = one(&mut p, d, "recursion", Some(0)) {
        expect_innermost(&mut p, ctx, t, &[("recurse", "recurse_bottom")]);
        let call = ctx.line("recurse_call");
        let calls = t
            .frames
            .iter()
            .skip(1)
            .take_while(|f| f.function == "recurse" && f.line == call && f.file == ctx.file)
            .count();
        if calls != DEPTH {
            p.push(format!(
                "{}: expected {DEPTH} frames recurse ({}:{call}) under the bottom one, got {calls}",
                t.label(),
                ctx.file
            ));
        }
        let total = t.frames.iter().filter(|f| f.function == "recurse").count();
        if total < DEPTH {
            p.push(format!("{}: only {total} recurse frames, expected at least {DEPTH}", t.label()));
        }
        expect_outermost(&mut p, t, THREAD_BOOTSTRAP);
        if t.frames.len() != DEPTH + 1 + THREAD_BOOTSTRAP.len() {
            p.push(format!(
                "{}: expected {} frames, got {}",
                t.label(),
                DEPTH + 1 + THREAD_BOOTSTRAP.len(),
                t.frames.len()
            ));
        }
    }
    expect_all_parked(&mut p, d, &[]);
    p
}

fn recursion_text(ctx: &Ctx, _d: &Dump, text: &str) -> Vec<String> {
    let mut p = Vec::new();
    p.extend(has_frame_line(text, ctx, "recurse", "recurse_bottom"));
    let want = format!("recurse ({}:{})", ctx.file, ctx.line("recurse_call"));
    let n = text.lines().filter(|l| l.trim() == want).count();
    if n != DEPTH {
        p.push(format!("text output has {n} lines `{want}`, expected {DEPTH}"));
    }
    p
}

#[test]
fn dump_recursion_fixture() {
    run_family(&Fixture {
        file: "recursion.py",
        volatile: &[],
        check_json: recursion_json,
        check_text: recursion_text,
    });
}

// ------------------------------------------------------------------------------------------
// busy.py
// ------------------------------------------------------------------------------------------

fn busy_json(ctx: &Ctx, d: &Dump) -> Vec<String> {
    let mut p = Vec::new();
    expect_names(&mut p, d, 0, &["MainThread", "spinner", "parked-1", "parked-2"]);
    expect_main_thread(&mut p, ctx, d);
    for name in ["parked-1", "parked-2"] {
        if let Some(t) = one(&mut p, d, name, Some(0)) {
            expect_innermost(&mut p, ctx, t, &[("parked_worker", "parked")]);
            expect_outermost(&mut p, t, THREAD_BOOTSTRAP);
        }
    }
    if let Some(t) = one(&mut p, d, "spinner", Some(0)) {
        let lines = [ctx.line("spin_loop"), ctx.line("spin_body")];
        match t.frames.first() {
            Some(f) if f.function == "spin" && lines.contains(&f.line) && f.file == ctx.file => {}
            got => {
                p.push(format!("{}: innermost frame should be spin at one of lines {lines:?}, got {got:?}", t.label()))
            }
        }
        expect_outermost(&mut p, t, THREAD_BOOTSTRAP);
        if t.frames.len() != 1 + THREAD_BOOTSTRAP.len() {
            p.push(format!("{}: expected {} frames, got {}", t.label(), 1 + THREAD_BOOTSTRAP.len(), t.frames.len()));
        }
    }
    // Who holds the GIL varies from one read to the next; at most one thread per interpreter does
    // (generic check), and only the spinner can: every other thread is blocked in a C call that
    // released it.
    expect_all_parked(&mut p, d, &["spinner"]);
    p
}

fn busy_text(ctx: &Ctx, _d: &Dump, text: &str) -> Vec<String> {
    let mut p = Vec::new();
    p.extend(has_frame_line(text, ctx, "parked_worker", "parked"));
    if !text.contains(&format!("spin ({}:", ctx.file)) {
        p.push("text output has no frame of spin".into());
    }
    p
}

#[test]
fn dump_busy_fixture() {
    run_family(&Fixture { file: "busy.py", volatile: &["spinner"], check_json: busy_json, check_text: busy_text });
}

// ------------------------------------------------------------------------------------------
// asyncio_service.py (also what `taskspy demo` runs)
// ------------------------------------------------------------------------------------------

fn asyncio_json(ctx: &Ctx, d: &Dump) -> Vec<String> {
    let mut p = Vec::new();
    expect_names(&mut p, d, 0, &["MainThread", "metrics-flusher", "db-pool-0"]);
    if let Some(t) = one(&mut p, d, "MainThread", Some(0)) {
        // The event loop blocked in its selector: ... run_service, <module> outermost.
        let n = t.frames.len();
        if n < 3 {
            p.push(format!("{}: expected the event loop's stack, got {} frames", t.label(), n));
        } else {
            let outer = [(&t.frames[n - 2], "run_service", "loop"), (&t.frames[n - 1], "<module>", "module")];
            for (f, func, tag) in outer {
                if !(f.function == func && f.line == ctx.line(tag) && f.file == ctx.file) {
                    p.push(format!(
                        "{}: expected {func} ({}:{}) near the bottom, got {f:?}",
                        t.label(),
                        ctx.file,
                        ctx.line(tag)
                    ));
                }
            }
            if short(&t.frames[0].function) != "select" {
                p.push(format!(
                    "{}: innermost frame should be the selector's select, got {:?}",
                    t.label(),
                    t.frames[0]
                ));
            }
        }
    }
    for (name, func, tag) in
        [("metrics-flusher", "flush_metrics_forever", "metrics"), ("db-pool-0", "db_pool_connection", "dbpool")]
    {
        if let Some(t) = one(&mut p, d, name, Some(0)) {
            expect_contains(&mut p, ctx, t, func, tag);
            if t.frames.first().map(|f| short(&f.function)) != Some("wait") {
                p.push(format!("{}: innermost frame should be Condition.wait, got {:?}", t.label(), t.frames.first()));
            }
            expect_outermost(&mut p, t, THREAD_BOOTSTRAP);
        }
    }
    expect_all_parked(&mut p, d, &[]);
    p
}

fn asyncio_text(ctx: &Ctx, _d: &Dump, text: &str) -> Vec<String> {
    let mut p = Vec::new();
    p.extend(has_frame_line(text, ctx, "run_service", "loop"));
    p.extend(has_frame_line(text, ctx, "flush_metrics_forever", "metrics"));
    p.extend(has_frame_line(text, ctx, "db_pool_connection", "dbpool"));
    p
}

#[test]
fn dump_asyncio_service_fixture() {
    run_family(&Fixture {
        file: "asyncio_service.py",
        volatile: &[],
        check_json: asyncio_json,
        check_text: asyncio_text,
    });
}

// ------------------------------------------------------------------------------------------
// subinterp.py
// ------------------------------------------------------------------------------------------

fn subinterp_created(ctx: &Ctx) -> Option<bool> {
    match ctx.ready.as_str() {
        "READY subinterp=1" => Some(true),
        "READY subinterp=0" => Some(false),
        _ => None,
    }
}

fn subinterp_json(ctx: &Ctx, d: &Dump) -> Vec<String> {
    let mut p = Vec::new();
    let Some(created) = subinterp_created(ctx) else {
        return vec![format!("READY line {:?} is neither `READY subinterp=1` nor `READY subinterp=0`", ctx.ready)];
    };
    expect_names(&mut p, d, 0, &["MainThread"]);
    expect_main_thread(&mut p, ctx, d);
    let others: Vec<&Thread> = d.threads.iter().filter(|t| t.interpreter != 0 && !t.frames.is_empty()).collect();
    if !created {
        if !others.is_empty() {
            p.push(format!(
                "no subinterpreter was created, yet threads outside interpreter 0 have frames: {:?}",
                others
            ));
        }
        return p;
    }
    let subs: Vec<&Thread> = others.iter().copied().filter(|t| t.name.as_deref() == Some("sub-worker")).collect();
    if others.len() != 1 || subs.len() != 1 {
        p.push(format!(
            "expected exactly one thread with frames outside interpreter 0, named \"sub-worker\"; got {:?}",
            others.iter().map(|t| t.label()).collect::<Vec<_>>()
        ));
    }
    if let Some(t) = subs.first() {
        expect_innermost(&mut p, ctx, t, &[("sub_worker_park", "sub_worker")]);
        expect_outermost(&mut p, t, THREAD_BOOTSTRAP);
        if let Some(list) = d.json.get("interpreters").and_then(|v| v.as_array()) {
            let ids: BTreeSet<i64> = list.iter().filter_map(|i| i.get("id").and_then(|v| v.as_i64())).collect();
            if !ids.contains(&0) || !ids.contains(&t.interpreter) {
                p.push(format!("interpreters[] ids are {ids:?}; expected 0 and {}", t.interpreter));
            }
        }
    }
    expect_all_parked(&mut p, d, &[]);
    p
}

fn subinterp_text(ctx: &Ctx, _d: &Dump, text: &str) -> Vec<String> {
    let mut p = Vec::new();
    p.extend(has_frame_line(text, ctx, "main_wait", "main"));
    if subinterp_created(ctx) == Some(true) {
        if !text.contains("sub-worker") {
            p.push("text output does not mention the subinterpreter's thread sub-worker".into());
        }
        p.extend(has_frame_line(text, ctx, "sub_worker_park", "sub_worker"));
    }
    p
}

#[test]
fn dump_subinterp_fixture() {
    run_family(&Fixture {
        file: "subinterp.py",
        volatile: &[],
        check_json: subinterp_json,
        check_text: subinterp_text,
    });
}

// ------------------------------------------------------------------------------------------
// Bad inputs
// ------------------------------------------------------------------------------------------

/// A failed run: non-zero exit (the README's documented code), exactly one line on stderr, no
/// panic or backtrace.
fn expect_one_line_error(out: &CmdOutput, exit_code: i32, must_contain: &[&str]) -> Vec<String> {
    let mut p = Vec::new();
    match out.code {
        Some(0) => p.push("exited 0, expected a failure".into()),
        None => p.push("did not exit normally (signal or timeout)".into()),
        Some(c) if c != exit_code => p.push(format!("exit code {c}, the README documents {exit_code} for this case")),
        _ => {}
    }
    let err = out.stderr.trim_end_matches('\n');
    if err.is_empty() || err.contains('\n') {
        p.push(format!("stderr should be exactly one line, got {} lines", err.lines().count()));
    }
    let lower = err.to_lowercase();
    for bad in ["panicked", "backtrace", "internal error"] {
        if lower.contains(bad) {
            p.push(format!("stderr mentions {bad:?}"));
        }
    }
    for want in must_contain {
        if !lower.contains(&want.to_lowercase()) {
            p.push(format!("stderr does not mention {want:?}"));
        }
    }
    p
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let mut failures = Vec::new();

    // No such process (beyond any pid_max).
    for args in [&["dump", "999999999"][..], &["dump", "--json", "999999999"][..]] {
        let out = run(taskspy_cmd(args), COMMAND_TIMEOUT);
        let p = expect_one_line_error(&out, 4, &["999999999"]);
        if !p.is_empty() {
            failures.push(format!("no such process: {}\n{}", p.join("; "), out.describe()));
        }
    }

    // A live process that is not Python.
    match spawn_sleep() {
        Err(e) => failures.push(e),
        Ok(guard) => {
            let out = run(taskspy_cmd(&["dump", &guard.pid.to_string()]), COMMAND_TIMEOUT);
            let p = expect_one_line_error(&out, 6, &["not a Python process"]);
            if !p.is_empty() {
                failures.push(format!(
                    "not a Python process (sleep, PID {}): {}\n{}",
                    guard.pid,
                    p.join("; "),
                    out.describe()
                ));
            }
        }
    }

    // Pythons taskspy does not support (2.7, 3.6, 3.7): a clear "unsupported" error with the version.
    let inv = inventory();
    if inv.unsupported.is_empty() {
        note(&format!("SKIP unsupported-version checks: no pyenv-unsupported interpreter in {}", inv.source));
    }
    for interp in &inv.unsupported {
        let mut cmd = interp.command();
        cmd.args(["-u", "-c", "import sys, time\nsys.stdout.write('READY\\n')\nsys.stdout.flush()\ntime.sleep(60)\n"]);
        match spawn_until_ready(cmd, "READY", &format!("sleeping Python {}", interp.describe())) {
            Err(e) => failures.push(e),
            Ok((guard, _)) => {
                let (major, minor) = interp.minor();
                let mm = format!("{major}.{minor}");
                let out = run(taskspy_cmd(&["dump", &guard.pid.to_string()]), COMMAND_TIMEOUT);
                let p = expect_one_line_error(&out, 7, &["unsupported", &mm]);
                if !p.is_empty() {
                    failures.push(format!(
                        "unsupported Python {}: {}\n{}",
                        interp.describe(),
                        p.join("; "),
                        out.describe()
                    ));
                } else {
                    note(&format!("ok: unsupported Python {} rejected: {}", interp.version, out.stderr.trim()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "bad-input checks failed:\n\n{}", failures.join("\n\n"));
}

/// `sleep 100`, once it has exec'd (before that the child is still a copy of this test binary).
fn spawn_sleep() -> Result<ChildGuard, String> {
    let mut cmd = std::process::Command::new("sleep");
    cmd.arg("100")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().map_err(|e| format!("cannot start sleep: {e}"))?;
    let pid = child.id() as i32;
    let guard = ChildGuard::from_child(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default();
        if exe.contains("sleep") {
            return Ok(guard);
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("sleep (PID {pid}) did not exec in time (exe {exe:?})"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An unprivileged user reading root's Python process gets the permission error (exit 5) with the
/// advice to run as root / grant CAP_SYS_PTRACE / check ptrace_scope.
#[test]
fn permission_denied_is_one_line_with_advice() {
    let python = ["/root/.pyenv/versions/3.12.1/bin/python3", "/usr/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let (Some(python), true) = (python, std::path::Path::new("/usr/bin/setpriv").exists()) else {
        note("SKIP permission test: needs /usr/bin/setpriv and a python3");
        return;
    };
    // The binary must be readable and executable by "nobody": copy it out of the build tree.
    let copy = std::env::temp_dir().join(format!("taskspy-perm-{}", std::process::id()));
    std::fs::copy(taskspy(), &copy).expect("copy taskspy");
    let _ = std::process::Command::new("chmod").arg("755").arg(&copy).status();
    let child = std::process::Command::new(python)
        .args(["-c", "import time; time.sleep(60)"])
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("spawn python");
    let guard = ChildGuard::from_child(child);
    std::thread::sleep(Duration::from_millis(300));
    let mut cmd = std::process::Command::new("/usr/bin/setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&copy).args(["dump", &guard.pid.to_string()]);
    let out = run(cmd, Duration::from_secs(20));
    let _ = std::fs::remove_file(&copy);
    let problems = expect_one_line_error(&out, 5, &["permission denied", "root", "CAP_SYS_PTRACE", "ptrace_scope"]);
    assert!(problems.is_empty(), "{problems:?}\nstderr: {}", out.stderr);
}
