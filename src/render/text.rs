//! Human-readable `dump` output: a header naming the process and interpreter, then each thread
//! with its state and its Python stack innermost first as `function (file:line)`.

use super::escape::escape;
use crate::snapshot::Snapshot;
use std::fmt::Write;

pub fn dump_text(s: &Snapshot, cmdline: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "Process {}: {}", s.pid, escape(cmdline));
    let build = if s.python.free_threaded { "free-threaded build" } else { "GIL build" };
    let gil = if s.python.gil_enabled { "GIL enabled" } else { "GIL disabled" };
    let _ = writeln!(o, "Python v{} ({}), {}, {}", s.python.version, escape(&s.python.executable), build, gil);
    if let Some(r) = &s.python.gil_reason {
        let _ = writeln!(o, "GIL {}", escape(&r.detail));
        for m in &r.modules {
            let _ = writeln!(
                o,
                "    needs the GIL: {}{}",
                escape(&m.name),
                m.file.as_deref().map(|f| format!(" ({})", escape(f))).unwrap_or_default()
            );
        }
    }
    if let Some(lib) = &s.python.library {
        let _ = writeln!(o, "Runtime in {}", escape(lib));
    }
    let multi = s.interpreters.len() > 1;
    let mut last_interp = None;
    for t in &s.threads {
        if multi && last_interp != Some(t.interpreter) {
            let _ = writeln!(o, "\nInterpreter {}", t.interpreter);
            last_interp = Some(t.interpreter);
        }
        let name = match &t.name {
            Some(n) => format!("\"{}\"", escape(n)),
            None => match &t.os_name {
                Some(c) => format!("<no Python name; OS name {}>", escape(c)),
                None => "<no Python name>".to_string(),
            },
        };
        let tid = t.tid.map(|t| t.to_string()).unwrap_or_else(|| "?".into());
        let gil = if t.holds_gil { ", holds the GIL" } else { "" };
        let _ = writeln!(o, "\nThread {tid} {name} ({}{gil}) ident 0x{:x}", t.state.as_str(), t.ident);
        if t.frames.is_empty() {
            let _ = writeln!(o, "    <no Python frames>");
        }
        for f in &t.frames {
            let _ = writeln!(o, "    {} ({}:{})", escape(&f.function), escape(&f.file), f.line);
        }
        if t.truncated {
            let _ = writeln!(o, "    ... stack cut at {} frames", t.frames.len());
        }
        if let Some(e) = &t.error {
            let _ = writeln!(o, "    <stack unreadable: {}>", escape(e));
        }
    }
    if !s.tasks.is_empty() {
        let _ =
            writeln!(o, "\n{} pending asyncio task(s): `taskspy pstree {}` shows them as a tree", s.tasks.len(), s.pid);
    }
    for f in &s.findings {
        let _ = writeln!(o, "\n[{}] {}: {}", f.severity.to_uppercase(), f.kind, escape(&f.summary));
    }
    o
}
