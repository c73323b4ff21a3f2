//! `taskspy ps` and `taskspy pstree`: asyncio task table and awaited-by tree, text or JSON.
//! Rendering lives in render::tasks; this module only wires snapshot → view → output.

use super::dump::take_snapshot;
use super::Output;
use crate::analysis::tree;
use crate::error::Result;
use crate::render::tasks;
use serde_json::json;

pub fn ps(pid: i32, as_json: bool, blocking: bool) -> Result<Output> {
    let snap = take_snapshot(pid, blocking)?;
    if !as_json {
        let text = tasks::ps_text(&snap);
        // At a terminal the 180-column table is cut to the window; pipes get full rows.
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() {
            if let Ok((w, _)) = ratatui::crossterm::terminal::size() {
                return Ok(Output::Text(tasks::fit_width(&text, w as usize)));
            }
        }
        return Ok(Output::Text(text));
    }
    let rows: Vec<_> = tasks::ps_rows(&snap)
        .into_iter()
        .map(|r| {
            json!({ "tid": r[0].parse::<i64>().ok(), "task_id": r[1], "task_name": r[2], "coroutine_stack": r[3],
                    "awaiter_chain": r[4], "awaiter_name": r[5], "awaiter_id": r[6] })
        })
        .collect();
    Ok(Output::Json(json!({
        "schema": "taskspy-ps/1", "pid": snap.pid, "captured_at": snap.captured_at,
        "python": snap.python, "rows": rows, "tasks": snap.tasks,
    })))
}

pub fn pstree(pid: i32, as_json: bool, blocking: bool) -> Result<Output> {
    let snap = take_snapshot(pid, blocking)?;
    let t = tree::build(&snap.tasks);
    if !as_json {
        let text = tasks::pstree_text(&snap, &t);
        // The process exits right after printing: freeing 100,000-node structures is wasted time.
        std::mem::forget(t);
        std::mem::forget(snap);
        return Ok(Output::Text(text));
    }
    Ok(Output::Json(json!({
        "schema": "taskspy-pstree/1", "pid": snap.pid, "captured_at": snap.captured_at,
        "python": snap.python, "roots": t.roots, "cycles": t.cycles,
    })))
}
