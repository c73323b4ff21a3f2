//! The terminal side of `taskspy top`: raw mode and alternate screen behind a restore guard, a
//! background sampler thread (snapshots, findings, GIL shares) and the key/redraw loop.

use super::state::{Action, App, GilWindow};
use super::view;
use crate::analysis::deadlock;
use crate::analysis::gil::GilStats;
use crate::error::{Error, Result};
use crate::model::{Finding, Snapshot};
use crate::runtime::PyProcess;
use crate::snapshot::{self, gil_sample};
use crate::source::os::clock_ticks_per_second;
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
}

enum Msg {
    Update(Box<Snapshot>, Vec<Finding>, Option<GilWindow>, f64),
    Exited,
    Error(String),
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
    } else {
        let py = PyProcess::open(source::attach(opts.pid)?)?;
        // First snapshot before touching the terminal, so attach errors print normally.
        let first = snapshot::capture(&py)?;
        app = App::new(opts.pid, false);
        app.color = opts.color;
        app.update(first, vec![], None);
        let (tx, r) = channel();
        let stop2 = stop.clone();
        let (rate, refresh) = (opts.rate.clamp(1.0, 10_000.0), opts.refresh.clamp(0.1, 60.0));
        std::thread::spawn(move || sampler(py, tx, rate, refresh, stop2));
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
                    Msg::Update(s, f, g, cost) => {
                        app.refresh_cost_ms = cost;
                        app.update(*s, f, g);
                    }
                    Msg::Exited => app.exited = true,
                    Msg::Error(e) => app.status = e,
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

fn sampler(py: PyProcess, tx: Sender<Msg>, rate: f64, refresh: f64, stop: Arc<AtomicBool>) {
    let tid_by_ident =
        |s: &Snapshot| -> HashMap<u64, i32> { s.threads.iter().filter_map(|t| Some((t.ident, t.tid?))).collect() };
    let mut idents: HashMap<u64, i32> = HashMap::new();
    // Across refreshes: how long each task has been at its await point.
    let mut progress = crate::analysis::progress::Progress::default();
    let began = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        // GIL window: the same samples as `taskspy gil`, over one refresh period.
        let start = Instant::now();
        let period = Duration::from_secs_f64(1.0 / rate);
        let mut stats = if py.free_threaded { GilStats::free_threaded() } else { GilStats::default() };
        let cpu0 = py.os.cpu_ticks();
        while start.elapsed().as_secs_f64() < refresh && !stop.load(Ordering::SeqCst) {
            if let Ok(s) = gil_sample::sample(&py, &idents) {
                stats.add(&s);
            }
            std::thread::sleep(period);
        }
        let secs = start.elapsed().as_secs_f64().max(1e-3);
        let cpu1 = py.os.cpu_ticks();
        let hz = clock_ticks_per_second();
        let cpu: HashMap<i32, f64> = cpu1
            .iter()
            .map(|(tid, t1)| (*tid, (*t1 - cpu0.get(tid).copied().unwrap_or(*t1).min(*t1)) as f64 / hz / secs * 100.0))
            .collect();
        let report = stats.report(secs, rate, &HashMap::new(), &cpu, 0);
        let gil = GilWindow::from_report(&report, &cpu);
        let t0 = Instant::now();
        match snapshot::capture(&py) {
            Ok(mut s) => {
                idents = tid_by_ident(&s);
                progress.observe(&s, began.elapsed().as_secs_f64());
                progress.annotate(&mut s);
                let mut findings = deadlock::findings(&s);
                findings.extend(progress.stuck_tasks(STUCK_AFTER_S, &s));
                findings.extend(progress.loop_lag(LOOP_LAG_S, &s));
                let cost = t0.elapsed().as_secs_f64() * 1000.0;
                if tx.send(Msg::Update(Box::new(s), findings, Some(gil), cost)).is_err() {
                    return;
                }
            }
            Err(Error::TargetExited(_)) | Err(Error::NoSuchProcess(_)) => {
                let _ = tx.send(Msg::Exited);
                return;
            }
            Err(e) => {
                if !py.os.alive() {
                    let _ = tx.send(Msg::Exited);
                    return;
                }
                let _ = tx.send(Msg::Error(e.to_string()));
            }
        }
    }
}
