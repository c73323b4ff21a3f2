//! `--subprocesses`: a command run over a process and its descendants (gunicorn/uvicorn workers,
//! multiprocessing pools) — grouped text, or one `taskspy-processes/1` JSON document.

use super::origin::{self, Origin};
use super::Output;
use crate::analysis::roles;
use crate::error::{exit, Error, Result};
use crate::model::processes::{ProcessEntry, ProcessStatus, ProcessesDoc, PROCESSES_SCHEMA};
use crate::model::Snapshot;
use crate::render::escape::escape;
use crate::snapshot::CaptureOptions;
use crate::source::pause;
use crate::source::proctree::{self, ProcEntry};
use std::fmt::Write;

/// Which processes `--subprocesses` covers and how each is read.
#[derive(Debug, Clone)]
pub struct FamilyOptions {
    pub root: i32,
    /// Levels below the root (`--depth`); all when `None`.
    pub depth: Option<u32>,
    pub blocking: bool,
    pub pause_ms: u64,
}

impl FamilyOptions {
    pub fn origin(&self, pid: i32) -> Origin {
        Origin::Live { pid, blocking: self.blocking, pause_ms: self.pause_ms }
    }
}

/// A process of the tree before it is read: its entry with role, status still open.
pub fn entry_of(e: &ProcEntry, all: &[ProcEntry]) -> ProcessEntry {
    ProcessEntry {
        pid: e.pid,
        ppid: e.ppid,
        depth: e.depth,
        cmdline: e.cmdline.clone(),
        role: roles::role_in_tree(e, all),
        status: ProcessStatus::Ok,
        note: None,
        exit_code: None,
        document: None,
    }
}

/// Record why a process could not be read. `Interrupted` is not a per-process outcome: the caller
/// stops on it.
pub fn record_error(entry: &mut ProcessEntry, e: &Error, listed: &ProcEntry) {
    let (status, note) = ProcessStatus::of_error(e, listed.exe.as_deref());
    if matches!(e, Error::NotPython { .. }) {
        entry.role = None; // a role names a part of a Python service
    }
    entry.status = status;
    entry.note = Some(note);
    entry.exit_code = Some(e.exit_code());
    entry.document = None;
}

/// Read one listed process: a snapshot, or why not. A process that exec-ed while it was read is
/// reported gone (its memory belonged to two programs).
pub fn read_one(listed: &ProcEntry, fo: &FamilyOptions, opts: CaptureOptions) -> Result<Snapshot> {
    if !proctree::same_process(listed) {
        return Err(Error::NoSuchProcess(listed.pid));
    }
    let origin = fo.origin(listed.pid);
    let snap = match origin::open_reader(&origin) {
        Ok(Some(py)) => origin::capture(&py, &origin, opts),
        Ok(None) => Err(Error::other("no reader")),
        Err(e) => Err(e),
    };
    let snap = match snap {
        // A reader error on a process that has since gone is its exit, not a fault.
        Err(Error::Interrupted) => return Err(Error::Interrupted),
        Err(e) if !proctree::same_process(listed) && !matches!(e, Error::NotPython { .. }) => {
            return Err(Error::TargetExited(listed.pid))
        }
        other => other?,
    };
    if proctree::execed(listed) || !proctree::same_process(listed) {
        return Err(Error::TargetExited(listed.pid));
    }
    Ok(origin::warn_partial(origin::with_findings(snap)))
}

/// Run `per` on a snapshot of every Python process of the tree (one look each).
pub fn run(
    command: &str,
    fo: &FamilyOptions,
    opts: CaptureOptions,
    json: bool,
    per: &dyn Fn(Snapshot) -> Result<Output>,
) -> Result<Output> {
    pause::install_interrupt_handler();
    let listed = proctree::family(fo.root, fo.depth)?;
    let mut entries = Vec::with_capacity(listed.len());
    let mut texts = Vec::new();
    let mut root_error = None;
    for l in &listed {
        pause::check_interrupted()?;
        let mut entry = entry_of(l, &listed);
        match read_one(l, fo, opts.clone()) {
            Ok(snap) => {
                entry.role = roles::refine(entry.role.take(), &snap);
                let out = per(snap)?;
                let code = out.exit_code();
                if code != 0 {
                    entry.exit_code = Some(code);
                }
                if json {
                    entry.document = Some(out.to_json_value());
                } else {
                    texts.push((entry.pid, out.text()));
                }
            }
            Err(Error::Interrupted) => return Err(Error::Interrupted),
            Err(e) => {
                record_error(&mut entry, &e, l);
                if l.pid == fo.root {
                    root_error = Some(e);
                }
            }
        }
        entries.push(entry);
    }
    finish(command, fo, entries, texts, root_error, json)
}

/// The combined output: the one document or grouped text, and the exit code — an error when no
/// process could be read, else the highest code a process gave (3: findings).
pub fn finish(
    command: &str,
    fo: &FamilyOptions,
    entries: Vec<ProcessEntry>,
    texts: Vec<(i32, String)>,
    root_error: Option<Error>,
    json: bool,
) -> Result<Output> {
    let read = entries.iter().filter(|e| e.status == ProcessStatus::Ok).count();
    if read == 0 {
        let others = entries.len().saturating_sub(1);
        return Err(match root_error {
            Some(Error::NotPython { pid, detail }) => Error::NotPython {
                pid,
                detail: if others == 0 {
                    format!("{detail}; it has no child processes")
                } else {
                    format!("{detail}; none of its {others} descendant(s) is a Python process taskspy could read")
                },
            },
            Some(e) => e,
            None => Error::other(format!(
                "none of the {} process(es) under PID {} could be read: {}",
                entries.len(),
                fo.root,
                entries.iter().filter_map(|e| e.note.clone()).take(3).collect::<Vec<_>>().join("; ")
            )),
        });
    }
    let code = entries
        .iter()
        .filter(|e| e.status == ProcessStatus::Ok)
        .filter_map(|e| e.exit_code)
        .filter(|c| *c == exit::FINDINGS)
        .max()
        .unwrap_or(exit::OK);
    let out = if json {
        let doc = ProcessesDoc {
            schema: PROCESSES_SCHEMA.into(),
            command: command.into(),
            root: fo.root,
            depth: fo.depth,
            captured_at: crate::model::time::rfc3339_now(),
            processes: entries,
        };
        Output::Json(serde_json::to_value(&doc).map_err(|e| Error::other(format!("encoding JSON: {e}")))?)
    } else {
        Output::Text(grouped_text(fo.root, &entries, &texts))
    };
    Ok(if code != exit::OK { Output::WithCode(Box::new(out), code) } else { out })
}

/// One header per process, the command's own text under it; skipped and gone processes one line each.
pub fn grouped_text(root: i32, entries: &[ProcessEntry], texts: &[(i32, String)]) -> String {
    let mut o = String::new();
    let count = |s: ProcessStatus| entries.iter().filter(|e| e.status == s).count();
    let _ = writeln!(
        o,
        "Process tree of PID {root}: {} process(es) — {} read, {} skipped, {} gone, {} unreadable",
        entries.len(),
        count(ProcessStatus::Ok),
        count(ProcessStatus::Skipped),
        count(ProcessStatus::Gone),
        count(ProcessStatus::Error)
    );
    for e in entries {
        let mut cmd = escape(&e.cmdline);
        if cmd.chars().count() > 160 {
            cmd = cmd.chars().take(159).collect::<String>() + "…";
        }
        let role = e.role.as_deref().map(|r| format!("{}, ", escape(r))).unwrap_or_default();
        let rel = if e.depth == 0 { "root".to_string() } else { format!("child of {}", e.ppid) };
        let indent = "";
        if e.status == ProcessStatus::Ok {
            let _ = writeln!(o, "\n{indent}=== PID {} ({role}{rel}): {cmd}", e.pid);
            if let Some((_, t)) = texts.iter().find(|(p, _)| *p == e.pid) {
                o.push_str(t);
                if !t.ends_with('\n') {
                    o.push('\n');
                }
            }
        } else {
            let note = e.note.as_deref().map(escape).unwrap_or_default();
            let _ = writeln!(o, "\n{indent}--- PID {} ({role}{rel}): {cmd} — {}: {note}", e.pid, e.status.as_str());
        }
    }
    o
}

/// Parents before children, siblings by PID: the order `proctree::family` lists.
fn tree_order(entries: &[ProcessEntry]) -> std::collections::HashMap<i32, usize> {
    let mut out = std::collections::HashMap::new();
    fn visit(pid: i32, entries: &[ProcessEntry], out: &mut std::collections::HashMap<i32, usize>) {
        if out.contains_key(&pid) || out.len() >= entries.len() {
            return;
        }
        out.insert(pid, out.len());
        let mut kids: Vec<i32> =
            entries.iter().filter(|e| e.ppid == pid && e.pid != pid && e.depth > 0).map(|e| e.pid).collect();
        kids.sort();
        for k in kids {
            visit(k, entries, out);
        }
    }
    let mut roots: Vec<&ProcessEntry> = entries.iter().filter(|e| e.depth == 0).collect();
    roots.sort_by_key(|e| e.pid);
    for r in roots {
        visit(r.pid, entries, &mut out);
    }
    // Processes whose parent left the tree: after the rest, by depth and PID.
    let mut rest: Vec<&ProcessEntry> = entries.iter().filter(|e| !out.contains_key(&e.pid)).collect();
    rest.sort_by_key(|e| (e.depth, e.pid));
    for e in rest {
        let n = out.len();
        out.entry(e.pid).or_insert(n);
    }
    out
}

/// Entries in tree order: parents before children, siblings by PID (as `proctree::family` lists).
pub fn sort_tree(entries: &mut [ProcessEntry]) {
    let order = tree_order(entries);
    entries.sort_by_key(|e| order.get(&e.pid).copied().unwrap_or(usize::MAX));
}
