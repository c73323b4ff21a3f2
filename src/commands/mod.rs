//! Subcommand implementations: each turns parsed arguments into output using the pipeline.
//! They return `Result` and never exit the process themselves.

pub mod color;
pub mod completions;
pub mod deadlocks;
pub mod demo;
pub mod dump;
pub mod gil;
pub mod manpage;
pub mod tasks;

use crate::snapshot::Snapshot;

/// What a command produces; JSON is streamed to stdout rather than built as one big string.
pub enum Output {
    Text(String),
    Snapshot(Box<Snapshot>),
    Json(serde_json::Value),
    /// Output plus a non-zero exit code that is not an error (e.g. deadlocks found: 3).
    WithCode(Box<Output>, i32),
}

impl Output {
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        match self {
            Output::Text(t) => {
                w.write_all(t.as_bytes())?;
                if !t.ends_with('\n') {
                    w.write_all(b"\n")?;
                }
            }
            // Pretty JSON for people at a terminal, compact JSON for pipes and files (half the size).
            Output::Snapshot(s) => {
                if pretty() {
                    serde_json::to_writer_pretty(&mut *w, s.as_ref())?;
                } else {
                    serde_json::to_writer(&mut *w, s.as_ref())?;
                }
                w.write_all(b"\n")?;
            }
            Output::Json(v) => {
                if pretty() {
                    serde_json::to_writer_pretty(&mut *w, v)?;
                } else {
                    serde_json::to_writer(&mut *w, v)?;
                }
                w.write_all(b"\n")?;
            }
            Output::WithCode(o, _) => o.write_to(w)?,
        }
        w.flush()
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
