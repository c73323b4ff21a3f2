//! `taskspy ps` and `taskspy pstree`: asyncio task table and awaited-by tree, text or JSON.
//! Rendering lives in render::tasks; this module only wires snapshot → view → output.

use super::origin::{self, Origin};
use super::Output;
use crate::analysis::tree;
use crate::error::Result;
use crate::render::tasks;
use crate::snapshot::CaptureOptions;
use serde_json::json;

pub fn ps(origin: &Origin, as_json: bool) -> Result<Output> {
    let snap = origin::snapshot(origin, CaptureOptions::default())?;
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
    Ok(Output::Ps(Box::new(snap)))
}

pub fn pstree(origin: &Origin, as_json: bool) -> Result<Output> {
    let snap = origin::snapshot(origin, CaptureOptions::default())?;
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
