//! The terminal side of `taskspy top`: raw mode and alternate screen behind a restore guard, a
//! background sampler thread (snapshots, findings, GIL shares) and the key/redraw loop.

use super::state::{Action, App, GilWindow, ProcessTab};
use super::view;
use crate::analysis::deadlock;
use crate::analysis::gil::GilStats;
use crate::analysis::progress::Progress;
use crate::analysis::roles;
use crate::error::{Error, Result};
use crate::model::processes::ProcessStatus;
use crate::model::{Finding, Snapshot};
use crate::runtime::PyProcess;
use crate::snapshot::{self, gil_sample};
use crate::source::os::clock_ticks_per_second;
use crate::source::proctree::{self, ProcEntry};
use crate::source::{self, pause};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct TopOptions {
    /// Draw with colours (false with `--color never` or `NO_COLOR`).
    pub color: bool,
    pub pid: i32,
    pub rate: f64,
    pub refresh: f64,
    pub replay: Option<String>,
    /// `--subprocesses`/`--depth`: the process and its Python descendants (levels below it when
    /// `Some(Some(n))`).
    pub subprocesses: Option<Option<u32>>,
}

enum Msg {
    /// A look at one process: snapshot, findings, GIL window, milliseconds the read took.
    Update(i32, Box<Snapshot>, Vec<Finding>, Option<GilWindow>, f64),
    /// The process tree as listed now (`--subprocesses`).
    Processes(Vec<ProcessTab>),
    Exited(i32),
    Error(i32, String),
}

/// Restores the terminal when dropped (normal exit, error, or unwinding panic).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

pub fn key_name(code: KeyCode, mods: KeyModifiers) -> String {
    if mods.contains(KeyModifiers::CONTROL) {
        if let KeyCode::Char(c) = code {
            return format!("ctrl-{c}");
        }
    }
    match code {
        KeyCode::Up => "up".into(),
        KeyCode::Down => "down".into(),
        KeyCode::PageUp => "pageup".into(),
        KeyCode::PageDown => "pagedown".into(),
        KeyCode::Home => "home".into(),
        KeyCode::End => "end".into(),
        KeyCode::Enter => "enter".into(),
        KeyCode::Tab => "tab".into(),
        KeyCode::Esc => "esc".into(),
        KeyCode::Backspace => "backspace".into(),
        KeyCode::Char(c) => format!("char:{c}"),
        _ => String::new(),
    }
}

fn save(app: &mut App) {
    let Some(s) = &app.snapshot else {
        app.status = "nothing to save yet".into();
        return;
    };
    let stamp = s.captured_at.replace([':', '.'], "-");
    let name = format!("taskspy-{}-{}.json", s.pid, stamp);
    let path = std::env::current_dir().map(|d| d.join(&name)).unwrap_or_else(|_| name.clone().into());
    app.status = match std::fs::File::create(&path)
        .map_err(|e| e.to_string())
        .and_then(|f| serde_json::to_writer_pretty(std::io::BufWriter::new(f), s).map_err(|e| e.to_string()))
    {
        Ok(()) => format!("saved snapshot to {}", path.display()),
        Err(e) => format!("could not save {}: {e}", path.display()),
    };
}

pub fn run(opts: &TopOptions) -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Error::other(
            "taskspy top needs an interactive terminal; use `taskspy dump PID` (or --json) for non-interactive output",
        ));
    }
    let mut app;
    let rx: Option<Receiver<Msg>>;
    let stop = Arc::new(AtomicBool::new(false));
    if let Some(path) = &opts.replay {
        // A saved series is browsed at its latest snapshot.
        let Some(snap) = snapshot::input::load(path)?.pop() else { return Err(Error::other("no snapshot")) };
        let snap = if snap.has_lock_facts() {
            let findings = deadlock::findings(&snap);
            Snapshot { findings, ..snap }
        } else {
            snap
        };
        app = App::new(snap.pid, true);
        app.color = opts.color;
        let findings: Vec<Finding> = snap.findings.clone();
        app.update(snap, findings, None);
        rx = None;
    } else if let Some(depth) = opts.subprocesses {
        // The root must be listable; its processes are opened by the sampler as they appear.
        let listed = proctree::family(opts.pid, depth)?;
        app = App::new(opts.pid, false);
        app.color = opts.color;
        app.set_processes(listed.iter().map(|l| tab_of(l, &listed, None, "ok", None)).collect());
        app.status = "reading the process tree…".into();
        let (tx, r) = channel();
        let stop2 = stop.clone();
        let (root, rate, refresh) = (opts.pid, opts.rate.clamp(1.0, 10_000.0), opts.refresh.clamp(0.1, 60.0));
        std::thread::spawn(move || family_sampler(root, depth, tx, rate, refresh, stop2));
        rx = Some(r);
    } else {
        let py = PyProcess::open(source::attach(opts.pid)?)?;
        // First snapshot before touching the terminal, so attach errors print normally.
        let first = snapshot::capture_repeated(&py)?;
        app = App::new(opts.pid, false);
        app.color = opts.color;
        app.update(first, vec![], None);
        let (tx, r) = channel();
        let stop2 = stop.clone();
        let (pid, rate, refresh) = (opts.pid, opts.rate.clamp(1.0, 10_000.0), opts.refresh.clamp(0.1, 60.0));
        std::thread::spawn(move || sampler(pid, py, tx, rate, refresh, stop2));
        rx = Some(r);
    }
    pause::install_interrupt_handler();
    let mut terminal = ratatui::try_init().map_err(|e| Error::other(format!("cannot set up the terminal: {e}")))?;
    let _guard = TerminalGuard;
    loop {
        terminal.draw(|f| view::draw(f, &mut app)).map_err(|e| Error::other(format!("drawing: {e}")))?;
        if event::poll(Duration::from_millis(100)).unwrap_or(false) {
            if let Ok(Event::Key(k)) = event::read() {
                if k.kind != KeyEventKind::Release && app.key(&key_name(k.code, k.modifiers)) == Action::Save {
                    save(&mut app);
                }
            }
        }
        if let Some(rx) = &rx {
            while let Ok(m) = rx.try_recv() {
                match m {
                    Msg::Update(pid, s, f, g, cost) => {
                        if pid == app.pid && !app.paused {
                            app.refresh_cost_ms = cost;
                            if app.status.starts_with(&format!("PID {pid}: waiting"))
                                || app.status.starts_with("reading the process tree")
                            {
                                app.status.clear();
                            }
                        }
                        app.update_process(pid, *s, f, g);
                    }
                    Msg::Processes(tabs) => app.set_processes(tabs),
                    Msg::Exited(pid) => app.process_exited(pid),
                    Msg::Error(pid, e) => {
                        if pid == app.pid {
                            app.status = e;
                        }
                    }
                }
            }
        }
        if app.quit || pause::interrupted() {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    Ok(())
}

/// `top` flags tasks stuck this long, and loops backlogged this long (the `watch` defaults).
const STUCK_AFTER_S: f64 = 30.0;
const LOOP_LAG_S: f64 = 1.0;

/// One process being watched: its reader and what is remembered between looks.
struct Watched {
    py: PyProcess,
    idents: HashMap<u64, i32>,
    progress: Progress,
    stats: GilStats,
    cpu0: HashMap<i32, u64>,
}

impl Watched {
    fn new(py: PyProcess) -> Watched {
        let stats = if py.free_threaded { GilStats::free_threaded() } else { GilStats::default() };
        Watched { py, idents: HashMap::new(), progress: Progress::default(), stats, cpu0: HashMap::new() }
    }

    /// Start a GIL window: the same samples as `taskspy gil`, over one refresh period.
    fn begin_window(&mut self) {
        self.stats = if self.py.free_threaded { GilStats::free_threaded() } else { GilStats::default() };
        self.cpu0 = self.py.os.cpu_ticks();
    }

    fn gil_tick(&mut self) {
        if let Ok(s) = gil_sample::sample(&self.py, &self.idents) {
            self.stats.add(&s);
        }
    }

    fn end_window(&self, secs: f64, rate: f64) -> GilWindow {
        let cpu1 = self.py.os.cpu_ticks();
        let hz = clock_ticks_per_second();
        let cpu: HashMap<i32, f64> = cpu1
            .iter()
            .map(|(tid, t1)| {
                (*tid, (*t1 - self.cpu0.get(tid).copied().unwrap_or(*t1).min(*t1)) as f64 / hz / secs * 100.0)
            })
            .collect();
        let report = self.stats.report(secs, rate, &HashMap::new(), &cpu, 0);
        GilWindow::from_report(&report, &cpu)
    }

    /// One look: snapshot annotated with time at await points, and every finding over the series.
    fn look(&mut self, t: f64) -> Result<(Snapshot, Vec<Finding>, f64)> {
        let t0 = Instant::now();
        let mut s = snapshot::capture_repeated(&self.py)?;
        self.idents = s.threads.iter().filter_map(|t| Some((t.ident, t.tid?))).collect();
        self.progress.observe(&s, t);
        self.progress.annotate(&mut s);
        let mut findings = deadlock::findings(&s);
        findings.extend(self.progress.stuck_tasks(STUCK_AFTER_S, &s));
        findings.extend(self.progress.loop_lag(LOOP_LAG_S, &s));
        Ok((s, findings, t0.elapsed().as_secs_f64() * 1000.0))
    }
}

/// Sample GIL state of every watched process over one refresh window.
fn gil_window<'a>(
    watched: impl Iterator<Item = &'a mut Watched>,
    rate: f64,
    refresh: f64,
    stop: &AtomicBool,
) -> Vec<GilWindow> {
    let mut ws: Vec<&mut Watched> = watched.collect();
    for w in ws.iter_mut() {
        w.begin_window();
    }
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    while start.elapsed().as_secs_f64() < refresh && !stop.load(Ordering::SeqCst) {
        for w in ws.iter_mut() {
            w.gil_tick();
        }
        std::thread::sleep(period);
    }
    let secs = start.elapsed().as_secs_f64().max(1e-3);
    ws.iter().map(|w| w.end_window(secs, rate)).collect()
}

fn sampler(pid: i32, py: PyProcess, tx: Sender<Msg>, rate: f64, refresh: f64, stop: Arc<AtomicBool>) {
    let mut w = Watched::new(py);
    let began = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let gil = gil_window(std::iter::once(&mut w), rate, refresh, &stop).pop();
        match w.look(began.elapsed().as_secs_f64()) {
            Ok((s, findings, cost)) => {
                if tx.send(Msg::Update(pid, Box::new(s), findings, gil, cost)).is_err() {
                    return;
                }
            }
            Err(Error::TargetExited(_)) | Err(Error::NoSuchProcess(_)) => {
                let _ = tx.send(Msg::Exited(pid));
                return;
            }
            Err(e) => {
                if !w.py.os.alive() {
                    let _ = tx.send(Msg::Exited(pid));
                    return;
                }
                let _ = tx.send(Msg::Error(pid, e.to_string()));
            }
        }
    }
}

fn tab_of(l: &ProcEntry, all: &[ProcEntry], role: Option<String>, status: &str, note: Option<String>) -> ProcessTab {
    ProcessTab {
        pid: l.pid,
        depth: l.depth,
        role: role.or_else(|| roles::role_in_tree(l, all)),
        cmdline: l.cmdline.clone(),
        status: status.to_string(),
        note,
    }
}

/// Processes that left the tree stay listed (as gone) this long, so a worker that died is seen.
const GONE_KEPT: Duration = Duration::from_secs(60);

/// `top --subprocesses`: re-list the tree every refresh, open processes as they appear (those
/// that cannot be read are listed with why, and not retried), one look at each per refresh.
fn family_sampler(root: i32, depth: Option<u32>, tx: Sender<Msg>, rate: f64, refresh: f64, stop: Arc<AtomicBool>) {
    let began = Instant::now();
    // Keyed by (pid, start time): a recycled PID is another process.
    let mut watched: Vec<(ProcEntry, Watched, Option<String>)> = Vec::new();
    let mut unreadable: HashMap<(i32, u64), (String, String)> = HashMap::new();
    let mut gone: Vec<(Instant, ProcessTab)> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let listed = match proctree::family(root, depth) {
            Ok(l) => l,
            Err(_) => {
                for (l, _, _) in &watched {
                    let _ = tx.send(Msg::Exited(l.pid));
                }
                let _ = tx.send(Msg::Exited(root));
                return;
            }
        };
        let key = |l: &ProcEntry| (l.pid, l.start_time);
        let now: std::collections::HashSet<(i32, u64)> = listed.iter().map(key).collect();
        // Those that left (or exec-ed): gone.
        let mut kept = Vec::with_capacity(watched.len());
        for (l, w, role) in watched.drain(..) {
            if now.contains(&key(&l)) && !proctree::execed(&l) {
                kept.push((l, w, role));
            } else {
                let _ = tx.send(Msg::Exited(l.pid));
                gone.push((Instant::now(), tab_of(&l, &listed, role, "gone", Some("exited".into()))));
            }
        }
        watched = kept;
        unreadable.retain(|k, _| now.contains(k));
        gone.retain(|(t, g)| t.elapsed() < GONE_KEPT && !listed.iter().any(|l| l.pid == g.pid));
        for l in &listed {
            if watched.iter().any(|(w, _, _)| key(w) == key(l)) || unreadable.contains_key(&key(l)) {
                continue;
            }
            match source::attach(l.pid).and_then(PyProcess::open) {
                Ok(py) => watched.push((l.clone(), Watched::new(py), None)),
                Err(e) => {
                    let (status, note) = ProcessStatus::of_error(&e, l.exe.as_deref());
                    unreadable.insert(key(l), (status.as_str().to_string(), note));
                }
            }
        }
        let mut tabs: Vec<ProcessTab> = listed
            .iter()
            .map(|l| {
                if let Some((st, note)) = unreadable.get(&key(l)) {
                    let role = if st == "skipped" && note.starts_with("not a Python") {
                        None
                    } else {
                        roles::role_in_tree(l, &listed)
                    };
                    ProcessTab { role, ..tab_of(l, &listed, None, st, Some(note.clone())) }
                } else {
                    let role = watched.iter().find(|(w, _, _)| key(w) == key(l)).and_then(|(_, _, r)| r.clone());
                    tab_of(l, &listed, role, "ok", None)
                }
            })
            .collect();
        tabs.extend(gone.iter().map(|(_, g)| g.clone()));
        if tx.send(Msg::Processes(tabs)).is_err() {
            return;
        }
        let windows = gil_window(watched.iter_mut().map(|(_, w, _)| w), rate, refresh, &stop);
        let t = began.elapsed().as_secs_f64();
        for ((l, w, role), gil) in watched.iter_mut().zip(windows) {
            match w.look(t) {
                Ok((s, findings, cost)) => {
                    if role.is_none() {
                        *role = roles::refine(roles::role_in_tree(l, &listed), &s);
                    }
                    if tx.send(Msg::Update(l.pid, Box::new(s), findings, Some(gil), cost)).is_err() {
                        return;
                    }
                }
                // An exit is noticed by the next listing.
                Err(e) => {
                    if proctree::same_process(l) {
                        let _ = tx.send(Msg::Error(l.pid, format!("PID {}: {e}", l.pid)));
                    }
                }
            }
        }
    }
}
