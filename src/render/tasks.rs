//! `ps` table and `pstree` drawing of asyncio tasks, in the layout `python -m asyncio ps/pstree`
//! users know; cycles are marked instead of refusing to draw.

use super::escape::{escape, escaped};
use crate::analysis::tree::{TaskTree, TreeNode};
use crate::model::{Snapshot, TaskSnap};
use rustc_hash::FxHashMap as HashMap;
use std::fmt::Write;

fn stack_names(t: &TaskSnap) -> String {
    t.coroutine_stack.iter().map(|f| &*f.function).collect::<Vec<_>>().join(" -> ")
}

/// The awaiter column of a `ps` row.
enum Awaiter<'a> {
    /// Nobody awaits the task (CPython prints awaiter id "0x0").
    Nobody,
    /// A task of the snapshot (its index).
    Task(usize),
    /// An id the snapshot has no task for.
    Unknown(&'a str),
}

/// The rows of `ps` in table order, one per (task index, awaiter) like CPython 3.14's `asyncio ps`:
/// the one place that decides which rows exist, for the text table and for JSON.
fn ps_pairs(s: &Snapshot) -> impl Iterator<Item = (usize, Awaiter<'_>)> + '_ {
    let index: HashMap<&str, usize> = s.tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
    s.tasks.iter().enumerate().flat_map(move |(i, t)| {
        let mut rows = Vec::with_capacity(t.awaited_by.len().max(1));
        if t.awaited_by.is_empty() {
            rows.push((i, Awaiter::Nobody));
        }
        for p in t.awaited_by.iter() {
            rows.push((i, index.get(p.as_str()).map_or(Awaiter::Unknown(p.as_str()), |&j| Awaiter::Task(j))));
        }
        rows
    })
}

/// A task's coroutine stack as `ps` shows it (outermost last, " -> " between frames).
fn ps_stack(t: &TaskSnap) -> String {
    match &t.error {
        Some(e) => format!("<unreadable: {e}>"),
        None => stack_names(t),
    }
}

/// One row per (task, awaiter), produced one at a time (a 200,000-task table is never held
/// whole). Values are exact (for JSON); `ps_text` escapes them.
pub fn ps_rows(s: &Snapshot) -> impl Iterator<Item = [String; 7]> + '_ {
    ps_pairs(s).map(move |(i, awaiter)| {
        let t = &s.tasks[i];
        let (chain, pname, pid) = match awaiter {
            Awaiter::Nobody => (String::new(), String::new(), "0x0".to_string()),
            Awaiter::Task(j) => (stack_names(&s.tasks[j]), s.tasks[j].name.to_string(), s.tasks[j].id.to_string()),
            Awaiter::Unknown(p) => (String::new(), "Unknown".to_string(), p.to_string()),
        };
        [
            t.thread.map(|x| x.to_string()).unwrap_or_else(|| "?".into()),
            t.id.to_string(),
            t.name.to_string(),
            ps_stack(t),
            chain,
            pname,
            pid,
        ]
    })
}

/// `ps --json`: the rows and the tasks, serialized as they are produced.
pub struct PsJson<'a>(pub &'a Snapshot);

struct PsRows<'a>(&'a Snapshot);

impl serde::Serialize for PsRows<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Row {
            tid: Option<i64>,
            task_id: String,
            task_name: String,
            coroutine_stack: String,
            awaiter_chain: String,
            awaiter_name: String,
            awaiter_id: String,
        }
        ser.collect_seq(ps_rows(self.0).map(
            |[tid, task_id, task_name, coroutine_stack, awaiter_chain, awaiter_name, awaiter_id]| Row {
                tid: tid.parse().ok(),
                task_id,
                task_name,
                coroutine_stack,
                awaiter_chain,
                awaiter_name,
                awaiter_id,
            },
        ))
    }
}

impl serde::Serialize for PsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let s = self.0;
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("schema", "taskspy-ps/1")?;
        m.serialize_entry("pid", &s.pid)?;
        m.serialize_entry("captured_at", &s.captured_at)?;
        m.serialize_entry("python", &s.python)?;
        m.serialize_entry("rows", &PsRows(s))?;
        m.serialize_entry("tasks", &s.tasks)?;
        m.end()
    }
}

pub fn ps_text(s: &Snapshot) -> String {
    let mut o = String::new();
    // With several samples (a saved series, `top`) each task's time at its await point is known.
    let waiting = s.tasks.iter().any(|t| t.waiting_s.is_some());
    let _ = write!(
        o,
        "{:<10} {:<20} {:<20} {:<50} {:<50} {:<15} {:<15}",
        "tid", "task id", "task name", "coroutine stack", "awaiter chain", "awaiter name", "awaiter id"
    );
    let _ = writeln!(o, "{}", if waiting { " waiting" } else { "" });
    let _ = writeln!(o, "{}", "-".repeat(if waiting { 190 } else { 180 }));
    // Each task's stack is joined and escaped once: it is also the awaiter chain of every task
    // it awaits (100 children of one TaskGroup share their parent's).
    // Tasks sharing one coroutine-stack list (parked at the same awaits) share its text too.
    let mut distinct: Vec<String> = Vec::new();
    let mut seen: HashMap<(usize, usize), usize> = HashMap::default();
    let stack_of: Vec<usize> = s
        .tasks
        .iter()
        .map(|t| {
            let mut make = || {
                distinct.push(escape(&ps_stack(t)));
                distinct.len() - 1
            };
            if t.error.is_some() {
                return make();
            }
            *seen.entry(crate::model::Frame::list_identity(&t.coroutine_stack)).or_insert_with(make)
        })
        .collect();
    let stacks = |i: usize| distinct[stack_of[i]].as_str();
    for (i, awaiter) in ps_pairs(s) {
        let t = &s.tasks[i];
        let (chain, pname, pid) = match awaiter {
            Awaiter::Nobody => ("", escaped(""), escaped("0x0")),
            Awaiter::Task(j) => (stacks(j), escaped(&s.tasks[j].name), escaped(&s.tasks[j].id)),
            Awaiter::Unknown(p) => ("", escaped("Unknown"), escaped(p)),
        };
        let tid = t.thread.map(|x| x.to_string()).unwrap_or_else(|| "?".into());
        for (v, width) in [
            (tid.as_str(), 10),
            (&escaped(&t.id), 20),
            (&escaped(&t.name), 20),
            (stacks(i), 50),
            (chain, 50),
            (&pname, 15),
        ] {
            pad(&mut o, v, width);
            o.push(' ');
        }
        pad(&mut o, &pid, 15);
        if let Some(w) = t.waiting_s {
            o.push(' ');
            o.push_str(&fmt_wait(w));
        }
        o.push('\n');
    }
    if s.tasks.is_empty() {
        let _ = writeln!(o, "(no pending asyncio tasks)");
    }
    o
}

/// `v` left-aligned in `width` columns (counted in chars, as `{:<width}` does; never cut).
fn pad(o: &mut String, v: &str, width: usize) {
    o.push_str(v);
    let n = if v.is_ascii() { v.len() } else { v.chars().count() };
    for _ in n..width {
        o.push(' ');
    }
}

/// "37 s", "12 min", "3.2 h": how long a task has been at its await point.
pub fn fmt_wait(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// `pstree`: each task with its coroutine stack (outermost first) and the tasks it awaits below.
pub fn pstree_text(s: &Snapshot, tree: &TaskTree) -> String {
    let mut out = Vec::new();
    let _ = write_pstree(&mut out, s, tree); // writing to a Vec cannot fail
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The `pstree` text of `s`, written to `w` as it is rendered.
pub fn write_pstree(w: &mut dyn std::io::Write, s: &Snapshot, tree: &TaskTree) -> std::io::Result<()> {
    let mut o = String::with_capacity(super::WRITE_CHUNK + (super::WRITE_CHUNK >> 2));
    let mut frames = FrameLines::default();
    for root in &tree.roots {
        render_node(&mut o, root, &mut frames, w)?;
    }
    if s.tasks.is_empty() {
        let _ = writeln!(o, "(no pending asyncio tasks)");
    }
    if !tree.cycles.is_empty() {
        let names: HashMap<&str, &str> = s.tasks.iter().map(|t| (t.id.as_str(), t.name.as_str())).collect();
        let _ = writeln!(o, "\nawait cycles ({}):", tree.cycles.len());
        for c in &tree.cycles {
            let path: Vec<String> = c
                .iter()
                .map(|id| format!("{} ({id})", escape(names.get(id.as_str()).copied().unwrap_or("?"))))
                .collect();
            let _ = writeln!(o, "cycle: {}", path.join(" → "));
        }
    }
    w.write_all(o.as_bytes())
}

/// "function file:line\n" of each distinct frame, escaped once: 10,000 tasks suspended at the
/// same few places repeat the same few frames. Keyed by the shared strings' addresses (the
/// frames outlive the rendering, so no other string can take those addresses meanwhile).
#[derive(Default)]
struct FrameLines(rustc_hash::FxHashMap<crate::model::FrameIdentity, String>);

impl FrameLines {
    fn line(&mut self, f: &crate::model::Frame) -> &str {
        self.0
            .entry(f.identity())
            .or_insert_with(|| format!("{} {}:{}\n", escaped(&f.function), escaped(&f.file), f.line))
    }
}

fn render_node(
    o: &mut String,
    root: &TreeNode,
    frames: &mut FrameLines,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    // (node, prefix, is_last, is_root); iterative so deep trees cannot overflow the stack.
    let mut work: Vec<(&TreeNode, String, bool, bool)> = vec![(root, String::new(), true, true)];
    while let Some((n, prefix, last, is_root)) = work.pop() {
        let branch = if is_root || last { "└── " } else { "├── " };
        o.push_str(&prefix);
        o.push_str(branch);
        o.push_str("(T) ");
        o.push_str(&escaped(&n.name));
        if n.cycle {
            o.push_str("  ↺ cycle: already on this path");
        } else if n.shown_elsewhere {
            o.push_str("  (shown above)");
        }
        if let Some(e) = &n.error {
            let _ = write!(o, "  [unreadable: {}]", escape(e));
        }
        if let (Some(w), false) = (n.waiting_s, n.cycle || n.shown_elsewhere) {
            let _ = write!(o, "  (waiting {})", fmt_wait(w));
        }
        o.push('\n');
        let mut pref = prefix + if last { "    " } else { "│   " };
        if n.cycle || n.shown_elsewhere {
            continue;
        }
        // Coroutine frames, outermost first, each one level deeper.
        for f in n.coroutine_stack.iter().rev() {
            o.push_str(&pref);
            o.push_str("└──  ");
            o.push_str(frames.line(f));
            pref.push_str("    ");
        }
        if n.continued_below {
            let _ = writeln!(o, "{pref}└── … deeper tasks continue in separate trees below");
        }
        let k = n.children.len();
        for (i, c) in n.children.iter().enumerate().rev() {
            work.push((c, pref.clone(), i + 1 == k, false));
        }
        if o.len() >= super::WRITE_CHUNK {
            w.write_all(o.as_bytes())?;
            o.clear();
        }
    }
    Ok(())
}

/// Cut every line to `width` columns (counted in chars), marking cut lines with "…". Used when
/// printing wide tables to a terminal; pipes get the full lines.
pub fn fit_width(text: &str, width: usize) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let n = line.chars().count();
        if width > 1 && n > width {
            out.extend(line.chars().take(width - 1));
            out.push('…');
        } else {
            out.push_str(line.trim_end());
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::fit_width;

    #[test]
    fn fit_width_cuts_long_lines_only() {
        assert_eq!(fit_width("abcdef\nab\n", 4), "abc…\nab\n");
        assert_eq!(fit_width("wörker-名前x", 8), "wörker-…\n");
    }
}
