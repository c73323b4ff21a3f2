//! Drawing the TUI from `App` state: header, threads pane, task tree, details, findings bar, GIL
//! strip and key line. Only visible tree rows are built; every target string is escaped.

use super::state::{App, Pane};
use crate::render::escape::escape;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row as TRow, Sparkline, Table, Wrap};
use ratatui::Frame;

pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 20;

fn short_file(f: &str) -> &str {
    f.rsplit('/').next().unwrap_or(f)
}

pub fn draw(f: &mut Frame, app: &mut App) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "Terminal too small ({}x{}); taskspy top needs at least {MIN_WIDTH}x{MIN_HEIGHT}. q quits.",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    // `--subprocesses`: the process list on top, the panes below show the selected process.
    // It takes up to a quarter of the screen; longer lists scroll with the selection.
    let procs_h = if app.processes.is_empty() {
        0
    } else {
        app.processes.len().min((area.height / 4).max(3) as usize) as u16 + 2
    };
    let rows = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(procs_h),
        Constraint::Min(8),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(3),
        Constraint::Length(1),
    ])
    .split(area);
    header(f, app, rows[0]);
    if procs_h > 0 {
        processes(f, app, rows[1]);
    }
    let main = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).split(rows[2]);
    threads(f, app, main[0]);
    tasks(f, app, main[1]);
    details(f, app, rows[3]);
    findings(f, app, rows[4]);
    gil(f, app, rows[5]);
    let keys = if app.editing_filter {
        format!("filter: {}▏ (Enter apply, Esc clear)", escape(&app.filter))
    } else {
        "↑↓/jk move · Enter/Space expand · Tab pane · / filter · p pause · s save · ? help · q quit".to_string()
    };
    let keys = if app.processes.is_empty() || app.editing_filter { keys } else { format!("[ ] process · {keys}") };
    f.render_widget(Paragraph::new(keys).style(Style::default().add_modifier(Modifier::DIM)), rows[6]);
    if app.show_help {
        help(f, area);
    }
    if !app.color {
        // NO_COLOR / --color never: strip colours, keep bold/reverse so the selection stays visible.
        let buf = f.buffer_mut();
        let area = buf.area;
        for y in area.top()..area.bottom() {
            for x in area.left()..area.right() {
                let c = &mut buf[(x, y)];
                c.set_fg(Color::Reset);
                c.set_bg(Color::Reset);
            }
        }
    }
}

fn header(f: &mut Frame, app: &App, area: Rect) {
    let mut spans =
        vec![Span::styled(format!(" taskspy top — PID {}", app.pid), Style::default().add_modifier(Modifier::BOLD))];
    if let Some(i) = app.process_index() {
        spans.push(Span::raw(format!(" ({} of {} processes)", i + 1, app.processes.len())));
    }
    if let Some(s) = &app.snapshot {
        let build = if s.python.free_threaded { "free-threaded" } else { "GIL build" };
        spans.push(Span::raw(format!(
            " · Python {} · {} · {} threads · {} tasks",
            s.python.version,
            build,
            s.threads.len(),
            s.tasks.len()
        )));
    }
    if app.refresh_cost_ms > 0.0 {
        spans.push(Span::raw(format!(" · refresh {:.0} ms", app.refresh_cost_ms)));
    }
    if app.replay {
        spans.push(Span::styled(" · REPLAY", Style::default().fg(Color::Cyan)));
    }
    if app.exited {
        spans.push(Span::styled(
            " · process exited (showing last view)",
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
        ));
    }
    if app.paused {
        spans.push(Span::styled(" · PAUSED", Style::default().fg(Color::Yellow)));
    }
    if !app.status.is_empty() {
        spans.push(Span::raw(format!(" · {}", escape(&app.status))));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The process list of `--subprocesses`: tree order, the one on screen marked, each with its role,
/// whether it could be read, and what its last look held.
fn processes(f: &mut Frame, app: &App, area: Rect) {
    let height = area.height.saturating_sub(2) as usize;
    let at = app.process_index().unwrap_or(0);
    let start = at.saturating_sub(height.saturating_sub(1));
    let mut lines = Vec::with_capacity(height);
    for (i, t) in app.processes.iter().enumerate().skip(start).take(height) {
        let view = if t.pid == app.pid { Some(&app.view) } else { app.others.get(&t.pid) };
        let what = match (t.status.as_str(), view.and_then(|v| v.snapshot.as_ref())) {
            ("ok", Some(s)) => {
                let n = view.map(|v| v.findings.len()).unwrap_or(0);
                let found = if n > 0 { format!(", {n} finding(s)") } else { String::new() };
                format!("{} threads, {} tasks{found}", s.threads.len(), s.tasks.len())
            }
            ("ok", None) => "reading…".to_string(),
            (st, _) => format!("{st}: {}", escape(t.note.as_deref().unwrap_or(""))),
        };
        let role = t.role.as_deref().map(|r| format!(" ({})", escape(r))).unwrap_or_default();
        let text = format!(
            "{}{}{}{role}  {what}  {}",
            if t.pid == app.pid { "▶ " } else { "  " },
            "  ".repeat(t.depth.min(10) as usize),
            t.pid,
            escape(&t.cmdline)
        );
        let mut style = Style::default();
        if t.status != "ok" {
            style = style.add_modifier(Modifier::DIM);
        } else if view.is_some_and(|v| !v.findings.is_empty()) {
            style = style.fg(Color::Red);
        }
        if i == at {
            style = style.add_modifier(Modifier::BOLD);
        }
        lines.push(Line::styled(text, style));
    }
    let title = format!(" Processes ({}) — [ and ] switch ", app.processes.len());
    f.render_widget(Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)), area);
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    let style = if focused { Style::default().fg(Color::Cyan) } else { Style::default() };
    Block::default().borders(Borders::ALL).title(title).border_style(style)
}

fn threads(f: &mut Frame, app: &App, area: Rect) {
    let Some(s) = &app.snapshot else {
        f.render_widget(
            Paragraph::new("waiting for the first snapshot…").block(pane_block(" Threads ".into(), false)),
            area,
        );
        return;
    };
    let height = area.height.saturating_sub(3) as usize;
    let start = app.thread_cursor.saturating_sub(height.saturating_sub(1));
    let rows: Vec<TRow> = s
        .threads
        .iter()
        .enumerate()
        .skip(start)
        .take(height)
        .map(|(i, t)| {
            let share = t.tid.and_then(|tid| app.gil.per_thread.get(&tid)).copied().unwrap_or_default();
            let top = t
                .frames
                .first()
                .map(|fr| format!("{} ({}:{})", escape(&fr.function), escape(short_file(&fr.file)), fr.line))
                .unwrap_or_default();
            let mut style = Style::default();
            if t.holds_gil {
                style = style.fg(Color::Green);
            }
            if i == app.thread_cursor && app.focus == Pane::Threads {
                style = style.add_modifier(Modifier::REVERSED);
            }
            TRow::new(vec![
                escape(t.name.as_deref().unwrap_or("-")),
                t.tid.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                t.state.as_str().to_string(),
                format!("{:.0}%", share.gil_pct),
                format!("{:.0}%", share.cpu_pct),
                top,
            ])
            .style(style)
        })
        .collect();
    let widths = [
        Constraint::Length(14),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Fill(1),
    ];
    let table = Table::new(rows, widths)
        .header(
            TRow::new(vec!["NAME", "TID", "STATE", "GIL", "CPU", "FRAME"])
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(pane_block(format!(" Threads ({}) ", s.threads.len()), app.focus == Pane::Threads));
    f.render_widget(table, area);
}

fn tasks(f: &mut Frame, app: &mut App, area: Rect) {
    let title = if app.filter.is_empty() {
        format!(" Tasks ({}) ", app.rows.len())
    } else {
        format!(" Tasks matching '{}' ({}) ", escape(&app.filter), app.rows.len())
    };
    let block = pane_block(title, app.focus == Pane::Tasks);
    let inner_h = area.height.saturating_sub(2) as usize;
    let start = app.scroll_to_cursor(inner_h);
    let mut lines: Vec<Line> = Vec::with_capacity(inner_h);
    // Only the visible window of rows is turned into lines (thousands of tasks stay cheap).
    for (i, r) in app.rows.iter().enumerate().skip(start).take(inner_h) {
        let marker = if r.has_children {
            if r.expanded {
                "▾ "
            } else {
                "▸ "
            }
        } else {
            "  "
        };
        let waited =
            r.waiting_s.map(|w| format!(", waiting {}", crate::render::tasks::fmt_wait(w))).unwrap_or_default();
        let mut text = format!(
            "{}{}{}  [{}: {}{waited}]",
            "  ".repeat(r.depth.min(30)),
            marker,
            escape(&r.name),
            r.state,
            r.waiting_on
        );
        if r.cycle {
            text.push_str("  ↺ CYCLE");
        }
        if r.shown_elsewhere {
            text.push_str("  (also above)");
        }
        if r.in_finding {
            text.push_str("  ⚠");
        }
        let mut style = Style::default();
        if r.cycle || r.in_finding {
            style = style.fg(Color::Red);
        }
        if i == app.task_cursor && app.focus == Pane::Tasks {
            style = style.add_modifier(Modifier::REVERSED);
        }
        lines.push(Line::styled(text, style));
    }
    if app.rows.is_empty() {
        lines.push(Line::raw(if app.filter.is_empty() {
            "(no pending asyncio tasks)"
        } else {
            "(no task matches the filter)"
        }));
    }
    f.render_widget(Paragraph::new(lines).block(block), area);
}

fn details(f: &mut Frame, app: &App, area: Rect) {
    let mut lines: Vec<Line> = Vec::new();
    match app.focus {
        Pane::Tasks => {
            if let (Some(t), Some(snap)) = (app.selected_task_snap(), app.snapshot.as_ref()) {
                let name_of = |id: &crate::model::Text| {
                    snap.tasks.iter().find(|x| &x.id == id).map(|x| escape(&x.name)).unwrap_or_else(|| id.to_string())
                };
                lines.push(Line::raw(format!(
                    "task {} {} · {} · thread {} · waits on {}{}{}",
                    escape(&t.name),
                    t.id,
                    t.state,
                    t.thread.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                    t.waiting_on.kind,
                    t.waiting_on
                        .object
                        .as_ref()
                        .map(|o| format!(" {} {}", t.waiting_on.object_type.clone().unwrap_or_default(), o))
                        .unwrap_or_default(),
                    t.waiting_s
                        .map(|w| format!(" · waiting {}", crate::render::tasks::fmt_wait(w)))
                        .unwrap_or_default()
                )));
                lines.push(Line::raw(format!(
                    "awaited by: {}   awaits: {}",
                    if t.awaited_by.is_empty() {
                        "-".into()
                    } else {
                        t.awaited_by.iter().map(name_of).collect::<Vec<_>>().join(", ")
                    },
                    if t.awaiting.is_empty() {
                        "-".into()
                    } else {
                        t.awaiting.iter().map(name_of).collect::<Vec<_>>().join(", ")
                    }
                )));
                let held: Vec<String> = app
                    .findings
                    .iter()
                    .filter(|(_, fd)| fd.tasks.iter().any(|x| x == t.id.as_str()))
                    .flat_map(|(_, fd)| {
                        fd.locks
                            .iter()
                            .map(|l| format!("{} {}", l.kind, l.name.clone().unwrap_or_else(|| l.address.clone())))
                    })
                    .collect();
                if !held.is_empty() {
                    lines.push(Line::raw(format!("locks involved: {}", escape(&held.join(", ")))));
                }
                for fr in t.coroutine_stack.iter() {
                    lines.push(Line::raw(format!("  {} ({}:{})", escape(&fr.function), escape(&fr.file), fr.line)));
                }
            } else {
                lines.push(Line::raw("select a task (↑↓) to see its coroutine stack"));
            }
        }
        Pane::Threads => {
            if let Some(t) = app.selected_thread() {
                lines.push(Line::raw(format!(
                    "thread {} {} · {} · {}",
                    t.tid.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
                    escape(t.name.as_deref().unwrap_or("-")),
                    t.state.as_str(),
                    if t.holds_gil { "holds the GIL" } else { "does not hold the GIL" }
                )));
                for fr in &t.frames {
                    lines.push(Line::raw(format!("  {} ({}:{})", escape(&fr.function), escape(&fr.file), fr.line)));
                }
            }
        }
    }
    f.render_widget(Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" Details ")), area);
}

fn findings(f: &mut Frame, app: &App, area: Rect) {
    let mut lines: Vec<Line> = Vec::new();
    for (_, fd) in app.findings.iter().rev().take(area.height.saturating_sub(2) as usize) {
        lines.push(Line::styled(
            format!("[{}] {}: {}", fd.severity, fd.kind, escape(&fd.summary)),
            Style::default().fg(Color::Red),
        ));
    }
    if lines.is_empty() {
        lines.push(Line::raw("no deadlock candidates so far"));
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(format!(" Findings ({}) ", app.findings.len()))),
        area,
    );
}

fn gil(f: &mut Frame, app: &App, area: Rect) {
    let python = app.snapshot.as_ref().map(|s| &s.python);
    let ft_no_gil = python.map(|p| p.free_threaded && !p.gil_enabled).unwrap_or(false);
    let title = if ft_no_gil { " Free-threaded (no GIL) " } else { " GIL " };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let reason = python.and_then(|p| p.gil_reason.as_ref()).map(|r| format!(" · GIL {}", escape(&r.detail)));
    let (label, width, max) = match (&app.gil.free_threading, app.gil_history.is_empty()) {
        (_, true) => ("sampling…".to_string(), 34, 100),
        (Some(ft), false) if ft_no_gil => {
            let lock = ft.top_lock_wait.as_deref().map(|l| format!(" · waits: {}", escape(l))).unwrap_or_default();
            (
                format!("parallel {:.1} threads · stop-the-world {:.0}%{lock}", ft.parallelism, ft.stw_pct),
                35,
                app.snapshot.as_ref().map(|s| s.threads.len() as u64 * 10).unwrap_or(40).max(10),
            )
        }
        _ => (
            format!(
                "held {:.0}% · {:.0} switches/s{}",
                app.gil.held_pct,
                app.gil.switches_per_s,
                reason.unwrap_or_default()
            ),
            if python.map(|p| p.free_threaded).unwrap_or(false) { 35 } else { 34 },
            100,
        ),
    };
    // Free-threaded builds have more to say: the words get the room, the chart a corner.
    let split = if width > 34 {
        [Constraint::Min(40), Constraint::Length(16)]
    } else {
        [Constraint::Length(width), Constraint::Min(10)]
    };
    let parts = Layout::horizontal(split).split(inner);
    f.render_widget(Paragraph::new(label), parts[0]);
    let data: Vec<u64> = app.gil_history.iter().copied().collect();
    f.render_widget(Sparkline::default().data(&data).max(max).style(Style::default().fg(Color::Green)), parts[1]);
}

fn help(f: &mut Frame, area: Rect) {
    let w = 64.min(area.width);
    let h = 17.min(area.height);
    let r = Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h };
    let text = vec![
        Line::raw("taskspy top — live view of a Python process"),
        Line::raw(""),
        Line::raw("↑/↓, j/k, PgUp/PgDn  move in the focused pane"),
        Line::raw("Enter / Space        expand or collapse the selected task"),
        Line::raw("Tab                  switch between tasks and threads"),
        Line::raw("[ / ]                previous / next process (--subprocesses)"),
        Line::raw("/                    filter tasks by name or function"),
        Line::raw("p                    pause: freeze the view (sampling goes on)"),
        Line::raw("s                    save the current snapshot as JSON"),
        Line::raw("?                    this help (any key closes it)"),
        Line::raw("q, Esc, Ctrl-C       quit"),
        Line::raw(""),
        Line::raw("↺ CYCLE marks tasks awaiting each other; ⚠ marks tasks in findings."),
    ];
    f.render_widget(Clear, r);
    f.render_widget(Paragraph::new(text).block(Block::default().borders(Borders::ALL).title(" Help ")), r);
}
