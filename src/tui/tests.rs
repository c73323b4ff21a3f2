//! Rendering and state tests with ratatui's TestBackend over synthetic snapshots: panes, cycles,
//! findings, hostile names, an empty process, 10,000 tasks, a too-small terminal, key handling.

use super::state::{Action, App, FtWindow, GilWindow, Pane, ProcessTab, ThreadShare};
use super::view;
use crate::model::{
    Evidence, Finding, Frame, LockRef, PythonInfo, Snapshot, TaskSnap, ThreadSnap, ThreadState, WaitingOn,
};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

fn frame(f: &str, file: &str, line: i64) -> Frame {
    Frame { function: f.into(), file: file.into(), line }
}

fn task(id: &str, name: &str, awaiting: &[&str], awaited_by: &[&str], kind: &str) -> TaskSnap {
    TaskSnap {
        id: id.into(),
        name: name.into(),
        state: "pending".into(),
        thread: Some(100),
        interpreter: 0,
        coroutine_stack: vec![frame(&format!("{name}_coro"), "/srv/app.py", 10)].into(),
        awaiting: awaiting.iter().map(|s| (*s).into()).collect(),
        awaited_by: awaited_by.iter().map(|s| (*s).into()).collect(),
        waiting_on: WaitingOn { kind: kind.into(), ..Default::default() },
        ..Default::default()
    }
}

fn snapshot(tasks: Vec<TaskSnap>, threads: Vec<ThreadSnap>) -> Snapshot {
    Snapshot {
        schema: "taskspy/1".into(),
        pid: 100,
        captured_at: "2026-11-25T08:00:00.000Z".into(),
        python: PythonInfo {
            version: "3.14.10".into(),
            executable: "/usr/bin/python3.14".into(),
            free_threaded: false,
            gil_enabled: true,
            library: None,
            gil_reason: None,
        },
        threads,
        tasks,
        findings: vec![],
        interpreters: vec![],
        capture: None,
        cmdline: None,
        locks: vec![],
        ns_pid: None,
        loops: vec![],
    }
}

fn thread(tid: i32, name: &str, gil: bool) -> ThreadSnap {
    ThreadSnap {
        tid: Some(tid),
        ident: tid as u64 * 16,
        name: Some(name.into()),
        interpreter: 0,
        holds_gil: gil,
        state: if gil { ThreadState::Running } else { ThreadState::Idle },
        frames: vec![frame("serve_forever", "/srv/main.py", 42), frame("<module>", "/srv/main.py", 50)],
        os_name: None,
        truncated: false,
        error: None,
        ..Default::default()
    }
}

fn render(app: &mut App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| view::draw(f, app)).unwrap();
    let buf = term.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

fn demo_app() -> App {
    let tasks = vec![
        task("0x1", "accept-loop", &["0x2", "0x3"], &[], "taskgroup"),
        task("0x2", "worker-1", &[], &["0x1"], "event"),
        task("0x3", "worker-2", &[], &["0x1"], "lock"),
    ];
    let mut app = App::new(100, false);
    let mut gil = GilWindow { held_pct: 87.0, switches_per_s: 150.0, ..Default::default() };
    gil.per_thread.insert(100, ThreadShare { gil_pct: 87.0, cpu_pct: 91.0 });
    app.update(
        snapshot(tasks, vec![thread(100, "MainThread", true), thread(101, "db-pool-0", false)]),
        vec![],
        Some(gil),
    );
    app
}

#[test]
fn main_screen_shows_every_pane() {
    let mut app = demo_app();
    let s = render(&mut app, 120, 40);
    for needle in [
        "taskspy top — PID 100",
        "Python 3.14.10",
        "Threads (2)",
        "MainThread",
        "db-pool-0",
        "Tasks (3)",
        "accept-loop",
        "worker-1",
        "[pending: lock]",
        "Details",
        "Findings (0)",
        "held 87%",
        "150 switches/s",
        "q quit",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
    // The selection starts on the first task and the details pane describes it.
    assert!(s.contains("task accept-loop 0x1"), "{s}");
    assert!(s.contains("awaits: worker-1, worker-2"), "{s}");
}

#[test]
fn selection_stays_on_the_same_task_across_refreshes() {
    let mut app = demo_app();
    app.key("down");
    app.key("down");
    assert_eq!(app.selected_task.as_deref(), Some("0x3"));
    // A refresh where a new task appears before it: the cursor follows the task, not the row.
    let tasks = vec![
        task("0x1", "accept-loop", &["0x9", "0x2", "0x3"], &[], "taskgroup"),
        task("0x9", "new-one", &[], &["0x1"], "sleep"),
        task("0x2", "worker-1", &[], &["0x1"], "event"),
        task("0x3", "worker-2", &[], &["0x1"], "lock"),
    ];
    app.update(snapshot(tasks, vec![thread(100, "MainThread", true)]), vec![], None);
    assert_eq!(app.selected_task.as_deref(), Some("0x3"));
    assert_eq!(app.rows[app.task_cursor].name, "worker-2");
}

#[test]
fn collapse_expand_filter_pause_help_and_quit() {
    let mut app = demo_app();
    assert_eq!(app.rows.len(), 3);
    app.key("enter"); // collapse accept-loop
    assert_eq!(app.rows.len(), 1);
    assert!(render(&mut app, 120, 40).contains("▸ accept-loop"));
    app.key("char: ");
    assert_eq!(app.rows.len(), 3);
    app.key("char:/");
    for c in "worker-2".chars() {
        app.key(&format!("char:{c}"));
    }
    app.key("enter");
    assert_eq!(app.rows.len(), 1);
    assert!(render(&mut app, 120, 40).contains("Tasks matching 'worker-2' (1)"));
    app.key("char:/");
    app.key("esc");
    assert_eq!(app.rows.len(), 3);
    app.key("char:p");
    assert!(app.paused);
    let before = app.rows.len();
    app.update(snapshot(vec![], vec![]), vec![], None);
    assert_eq!(app.rows.len(), before, "paused view must stay frozen");
    app.key("char:p");
    app.key("tab");
    assert_eq!(app.focus, Pane::Threads);
    app.key("down");
    assert!(render(&mut app, 120, 40).contains("thread 101 db-pool-0"));
    app.key("char:?");
    assert!(render(&mut app, 120, 40).contains("Help"));
    app.key("char:x"); // any key closes help
    assert!(!app.show_help);
    assert_eq!(app.key("char:s"), Action::Save);
    app.key("char:q");
    assert!(app.quit);
}

#[test]
fn cycles_and_findings_are_marked_and_findings_stay_listed() {
    let tasks = vec![task("0xa", "ping", &["0xb"], &["0xb"], "task"), task("0xb", "pong", &["0xa"], &["0xa"], "task")];
    let f = Finding {
        kind: "await-cycle".into(),
        severity: "critical".into(),
        summary: "tasks await each other in a cycle and can never finish: ping → pong → ping".into(),
        threads: vec![100],
        tasks: vec!["0xa".into(), "0xb".into()],
        locks: vec![LockRef { kind: "asyncio.Lock".into(), address: "0x77".into(), name: Some("lock_a".into()) }],
        evidence: vec![Evidence { actor: "task 0xa".into(), note: "awaits 0xb".into(), frames: vec![] }],
    };
    let mut app = App::new(100, false);
    app.update(snapshot(tasks.clone(), vec![thread(100, "MainThread", false)]), vec![f], None);
    let s = render(&mut app, 140, 40);
    assert!(s.contains("↺ CYCLE"), "{s}");
    assert!(s.contains("⚠"), "{s}");
    assert!(s.contains("Findings (1)") && s.contains("await-cycle"), "{s}");
    // A later refresh without the finding keeps it listed.
    app.update(snapshot(tasks, vec![thread(100, "MainThread", false)]), vec![], None);
    assert!(render(&mut app, 140, 40).contains("Findings (1)"));
}

#[test]
fn hostile_names_never_reach_the_terminal_raw() {
    let mut t = task("0x1", "evil\x1b[31mred\nline\u{202e}", &[], &[], "sleep");
    t.coroutine_stack = vec![frame("f\x07n", "/tmp/\x1b]0;pwned\x07.py", 1)].into();
    let mut th = thread(100, "thr\x1b[2J", false);
    th.frames = vec![frame("g\x1b", "/x\n.py", 2)];
    let mut app = App::new(100, false);
    app.update(snapshot(vec![t], vec![th]), vec![], None);
    let s = render(&mut app, 140, 40);
    assert!(!s.chars().any(|c| c == '\x1b' || c == '\x07' || c == '\u{202e}'), "{s}");
    assert!(s.contains("evil\\x1b[31mred\\nline"), "{s}");
}

#[test]
fn empty_process_and_free_threaded_without_gil() {
    let mut app = App::new(100, false);
    let s = render(&mut app, 100, 30);
    assert!(s.contains("waiting for the first snapshot"), "{s}");
    let mut snap = snapshot(vec![], vec![thread(100, "MainThread", false)]);
    snap.python.free_threaded = true;
    snap.python.gil_enabled = false;
    app.update(snap.clone(), vec![], None);
    let s = render(&mut app, 100, 30);
    assert!(s.contains("(no pending asyncio tasks)") && s.contains("Free-threaded (no GIL)"), "{s}");
    // A window of samples: parallelism, pauses and the most waited-on lock.
    let gil = GilWindow {
        free_threading: Some(FtWindow {
            parallelism: 1.9,
            stw_pct: 3.0,
            top_lock_wait: Some("contender-0 on 'shared_lock' 61%".into()),
        }),
        ..Default::default()
    };
    app.update(snap, vec![], Some(gil));
    let s = render(&mut app, 140, 30);
    assert!(s.contains("parallel 1.9 threads") && s.contains("stop-the-world 3%") && s.contains("shared_lock"), "{s}");
}

#[test]
fn time_at_await_point_is_shown_after_several_samples() {
    let mut tasks = vec![task("0x1", "slow-request", &[], &[], "future")];
    tasks[0].waiting_s = Some(37.0);
    let mut app = App::new(100, false);
    app.update(snapshot(tasks, vec![thread(100, "MainThread", false)]), vec![], None);
    let s = render(&mut app, 140, 30);
    assert!(s.contains("[pending: future, waiting 37 s]"), "{s}");
    assert!(s.contains("· waiting 37 s"), "{s}");
}

#[test]
fn free_threaded_with_gil_says_why() {
    let mut app = App::new(100, false);
    let mut snap = snapshot(vec![], vec![thread(100, "MainThread", true)]);
    snap.python.free_threaded = true;
    snap.python.gil_reason = Some(crate::model::GilReason {
        cause: "extension_modules".into(),
        detail:
            "re-enabled at run time: 1 extension module(s) without free-threading support were imported (ts_noslot)"
                .into(),
        modules: vec![],
    });
    app.update(snap, vec![], Some(GilWindow { held_pct: 50.0, ..Default::default() }));
    let s = render(&mut app, 160, 30);
    assert!(s.contains("held 50%") && s.contains("ts_noslot"), "{s}");
}

#[test]
fn too_small_terminal_says_so() {
    let mut app = demo_app();
    let s = render(&mut app, 40, 10);
    assert!(s.contains("Terminal too small"), "{s}");
}

#[test]
fn ten_thousand_tasks_render_only_the_visible_window() {
    let mut tasks = vec![task("0x0", "root", &[], &[], "gather")];
    let kids: Vec<String> = (1..=10_000).map(|i| format!("0x{i:x}")).collect();
    tasks[0].awaiting = kids.iter().map(|k| k.as_str().into()).collect();
    for (i, k) in kids.iter().enumerate() {
        tasks.push(task(k, &format!("leaf-{}", i + 1), &[], &["0x0"], "event"));
    }
    let mut app = App::new(100, false);
    app.update(snapshot(tasks, vec![thread(100, "MainThread", false)]), vec![], None);
    assert_eq!(app.rows.len(), 10_001);
    let t = std::time::Instant::now();
    app.key("end");
    let s = render(&mut app, 120, 40);
    assert!(s.contains("leaf-10000"), "{s}");
    assert!(!s.contains("leaf-1 "), "only the window near the cursor is drawn");
    for _ in 0..50 {
        app.key("pageup");
        render(&mut app, 120, 40);
    }
    assert!(t.elapsed().as_secs_f64() < 5.0, "scrolling 10k rows must stay cheap: {:?}", t.elapsed());
}

#[test]
fn no_color_mode_draws_without_colours() {
    let mut app = demo_app();
    app.color = false;
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    term.draw(|f| view::draw(f, &mut app)).unwrap();
    let buf = term.backend().buffer();
    assert!(buf.content().iter().all(|c| c.fg == ratatui::style::Color::Reset && c.bg == ratatui::style::Color::Reset));
    app.color = true;
    term.draw(|f| view::draw(f, &mut app)).unwrap();
    assert!(
        term.backend().buffer().content().iter().any(|c| c.fg != ratatui::style::Color::Reset),
        "colour mode must colour something"
    );
}

fn tab(pid: i32, depth: u32, role: &str, status: &str, cmd: &str) -> ProcessTab {
    ProcessTab {
        pid,
        depth,
        role: (!role.is_empty()).then(|| role.to_string()),
        cmdline: cmd.into(),
        status: status.into(),
        note: (status != "ok").then(|| "not a Python process (/usr/bin/sleep)".to_string()),
    }
}

#[test]
fn subprocesses_list_every_process_and_switch_between_their_panes() {
    let mut app = App::new(100, false);
    app.set_processes(vec![
        tab(100, 0, "gunicorn master", "ok", "python -m gunicorn app:app"),
        tab(101, 1, "", "skipped", "sleep 100000"),
        tab(102, 1, "gunicorn worker", "ok", "python -m gunicorn app:app"),
        tab(103, 1, "gunicorn worker", "ok", "python -m gunicorn app:app\x1b[2J"),
    ]);
    app.update_process(100, snapshot(vec![], vec![thread(100, "MainThread", false)]), vec![], None);
    let worker = |name: &str| {
        let mut s = snapshot(
            vec![task("0x1", name, &[], &[], "event"), task("0x2", "idle", &[], &[], "future")],
            vec![thread(102, "MainThread", true)],
        );
        s.pid = 102;
        s
    };
    let finding = Finding {
        kind: "stuck-task".into(),
        severity: "warning".into(),
        summary: "task parked-request stuck".into(),
        tasks: vec!["0x1".into()],
        threads: vec![],
        locks: vec![],
        evidence: vec![],
    };
    app.update_process(102, worker("parked-request"), vec![finding], None);
    let s = render(&mut app, 120, 44);
    for needle in [
        "taskspy top — PID 100 (1 of 4 processes)",
        "Processes (4)",
        "▶ 100 (gunicorn master)  1 threads, 0 tasks",
        "101  skipped: not a Python process (/usr/bin/sleep)  sleep 100000",
        "102 (gunicorn worker)  1 threads, 2 tasks, 1 finding(s)",
        "103 (gunicorn worker)  reading…",
        "[ ] process",
        "(no pending asyncio tasks)",
    ] {
        assert!(s.contains(needle), "missing {needle:?} in\n{s}");
    }
    assert!(!s.contains('\x1b'), "escape sequences reached the screen");
    // `]` twice: past the skipped process to the worker; its tasks and findings on screen.
    app.key("char:]");
    assert_eq!(app.pid, 101);
    assert!(app.status.contains("skipped"), "{}", app.status);
    app.key("char:]");
    assert_eq!(app.pid, 102);
    let s = render(&mut app, 120, 44);
    assert!(
        s.contains("PID 102 (3 of 4 processes)") && s.contains("parked-request") && s.contains("Findings (1)"),
        "{s}"
    );
    // Selection in the worker survives going back to the master and returning.
    let second = app.rows[1].id.to_string();
    app.key("down");
    assert_eq!(app.selected_task.as_ref(), Some(&second));
    app.key("char:[");
    app.key("char:[");
    assert_eq!(app.pid, 100);
    assert!(app.rows.is_empty());
    app.key("char:[");
    assert_eq!(app.pid, 100, "clamped at the first process");
    app.key("char:]");
    app.key("char:]");
    assert_eq!(app.selected_task.as_ref(), Some(&second));
    // Updates for a process not on screen land in its own view.
    app.update_process(100, snapshot(vec![task("0x7", "boot", &[], &[], "sleep")], vec![]), vec![], None);
    assert_eq!(app.rows.len(), 2);
    assert_eq!(app.others[&100].snapshot.as_ref().map(|s| s.tasks.len()), Some(1));
    // The worker exits: listed without it, its last look stays on screen marked exited.
    app.set_processes(vec![tab(100, 0, "gunicorn master", "ok", "python -m gunicorn app:app")]);
    assert!(app.exited);
    let s = render(&mut app, 120, 44);
    assert!(s.contains("process exited (showing last view)"), "{s}");
    app.key("char:[");
    assert_eq!(app.pid, 100);
    assert!(!app.others.contains_key(&102), "a view of a process no longer listed is dropped");
}
