//! commands: each subcommand turns parsed arguments into output through the pipeline (origin →
//! snapshot → analysis → render). They return `Result` and never exit the process themselves.

pub mod color;
pub mod completions;
pub mod deadlocks;
pub mod demo;
pub mod dump;
pub mod family;
pub mod gil;
pub mod manpage;
pub mod metrics;
pub mod origin;
pub mod tasks;
pub mod top;
pub mod watch;

use crate::model::Snapshot;
use std::io::Write;

/// What a command produces; JSON is streamed to stdout rather than built as one big string.
pub enum Output {
    Text(String),
    Snapshot(Box<Snapshot>),
    /// A series: one compact JSON document per line.
    Snapshots(Vec<Snapshot>),
    Json(serde_json::Value),
    /// `ps --json`, written as it is serialized.
    Ps(Box<Snapshot>),
    /// `pstree` text, written as it is rendered.
    Tree(Box<(Snapshot, crate::analysis::tree::TaskTree)>),
    /// Output plus a non-zero exit code that is not an error (e.g. deadlocks found: 3).
    WithCode(Box<Output>, i32),
}

fn write_json<T: serde::Serialize + ?Sized>(w: &mut dyn std::io::Write, v: &T, pretty: bool) -> std::io::Result<()> {
    // serde_json writes token by token: through `dyn Write` each token is a virtual call. A typed
    // buffer in between keeps those writes inlined memcpys and hands `w` 256 KiB chunks.
    let mut w = std::io::BufWriter::with_capacity(crate::render::WRITE_CHUNK, w);
    if pretty {
        serde_json::to_writer_pretty(&mut w, v)?;
    } else {
        serde_json::to_writer(&mut w, v)?;
    }
    w.write_all(b"\n")?;
    w.flush()
}

/// One snapshot as a compact JSON line (task records written by hand: see `render::json`).
fn write_snapshot(w: &mut dyn std::io::Write, s: &Snapshot) -> std::io::Result<()> {
    let mut w = std::io::BufWriter::with_capacity(crate::render::WRITE_CHUNK, w);
    crate::render::json::write_snapshot(&mut w, s)?;
    w.write_all(b"\n")?;
    w.flush()
}

impl Output {
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        // Pretty JSON for people at a terminal, compact JSON for pipes and files (half the size).
        let pretty = pretty();
        match self {
            Output::Text(t) => {
                w.write_all(t.as_bytes())?;
                if !t.ends_with('\n') {
                    w.write_all(b"\n")?;
                }
            }
            Output::Snapshot(s) if !pretty => write_snapshot(w, s)?,
            Output::Snapshot(s) => write_json(w, s.as_ref(), pretty)?,
            Output::Snapshots(v) => {
                for s in v {
                    write_snapshot(w, s)?;
                }
            }
            Output::Json(v) => write_json(w, v, pretty)?,
            Output::Ps(s) => write_json(w, &crate::render::tasks::PsJson(s), pretty)?,
            Output::Tree(b) => crate::render::tasks::write_pstree(w, &b.0, &b.1)?,
            Output::WithCode(o, _) => o.write_to(w)?,
        }
        w.flush()
    }

    /// The output as one JSON value (a text output becomes a string).
    pub fn to_json_value(&self) -> serde_json::Value {
        match self {
            Output::Text(t) => serde_json::Value::String(t.clone()),
            Output::Snapshot(s) => serde_json::to_value(s.as_ref()).unwrap_or_default(),
            Output::Snapshots(v) => serde_json::to_value(v).unwrap_or_default(),
            Output::Json(v) => v.clone(),
            Output::Ps(s) => serde_json::to_value(crate::render::tasks::PsJson(s)).unwrap_or_default(),
            Output::Tree(b) => serde_json::Value::String(crate::render::tasks::pstree_text(&b.0, &b.1)),
            Output::WithCode(o, _) => o.to_json_value(),
        }
    }

    /// The output as text (JSON outputs compact).
    pub fn text(&self) -> String {
        match self {
            Output::Text(t) => t.clone(),
            Output::Tree(b) => crate::render::tasks::pstree_text(&b.0, &b.1),
            Output::WithCode(o, _) => o.text(),
            other => other.to_json_value().to_string(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Output::WithCode(_, c) => *c,
            _ => 0,
        }
    }
}

fn pretty() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}
