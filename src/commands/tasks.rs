//! `taskspy ps` and `taskspy pstree`: asyncio task table and awaited-by tree, text or JSON.
//! Rendering lives in render::tasks; this module only wires snapshot → view → output.

use super::family::{self, FamilyOptions};
use super::origin::{self, Origin};
use super::Output;
use crate::analysis::tree;
use crate::error::Result;
use crate::model::Snapshot;
use crate::render::tasks;
use crate::snapshot::CaptureOptions;
use serde_json::json;

pub fn ps(origin: &Origin, as_json: bool) -> Result<Output> {
    ps_of(origin::snapshot(origin, CaptureOptions::default())?, as_json, true)
}

/// `ps` of one snapshot; `fit` cuts rows to the terminal's width when stdout is one.
pub fn ps_of(snap: Snapshot, as_json: bool, fit: bool) -> Result<Output> {
    if !as_json {
        let text = tasks::ps_text(&snap);
        // At a terminal the 180-column table is cut to the window; pipes get full rows.
        use std::io::IsTerminal;
        if fit && std::io::stdout().is_terminal() {
            if let Ok((w, _)) = ratatui::crossterm::terminal::size() {
                return Ok(Output::Text(tasks::fit_width(&text, w as usize)));
            }
        }
        return Ok(Output::Text(text));
    }
    Ok(Output::Ps(Box::new(snap)))
}

pub fn pstree(origin: &Origin, as_json: bool) -> Result<Output> {
    pstree_of(origin::snapshot(origin, CaptureOptions::default())?, as_json, true)
}

/// `pstree` of one snapshot; `last` when nothing else is printed after it: then the text is
/// rendered while it is written out, instead of first as one string.
pub fn pstree_of(snap: Snapshot, as_json: bool, last: bool) -> Result<Output> {
    let phase = crate::timing::Phase::start("tree");
    let t = tree::build(&snap.tasks);
    drop(phase);
    if !as_json {
        if last {
            return Ok(Output::Tree(Box::new((snap, t))));
        }
        let _phase = crate::timing::Phase::start("render");
        return Ok(Output::Text(tasks::pstree_text(&snap, &t)));
    }
    Ok(Output::Json(json!({
        "schema": "taskspy-pstree/1", "pid": snap.pid, "captured_at": snap.captured_at,
        "python": snap.python, "roots": t.roots, "cycles": t.cycles,
    })))
}

/// `ps --subprocesses`: the table of every Python process of the tree.
pub fn ps_family(fo: &FamilyOptions, as_json: bool) -> Result<Output> {
    family::run("ps", fo, CaptureOptions::default(), as_json, &|s| ps_of(s, as_json, false))
}

/// `pstree --subprocesses`.
pub fn pstree_family(fo: &FamilyOptions, as_json: bool) -> Result<Output> {
    family::run("pstree", fo, CaptureOptions::default(), as_json, &|s| pstree_of(s, as_json, false))
}
