//! The record of a process tree (`taskspy-processes/1`): one entry per process of a service —
//! PID, parent, depth, command line, role, whether it could be read — each with its own document.

use serde::{Deserialize, Serialize};

pub const PROCESSES_SCHEMA: &str = "taskspy-processes/1";

/// What became of one process of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessStatus {
    /// Read: `document` holds what the command reports for it.
    Ok,
    /// Not read, by design: not a Python process, or a Python taskspy does not support.
    Skipped,
    /// Exited (or replaced its program) before or while it was read.
    Gone,
    /// Could not be read (permission, unreadable runtime): `note` says why, `exit_code` what
    /// taskspy would exit with for this process alone.
    Error,
}

impl ProcessStatus {
    /// Why a process of the tree was not read, as a status and a note. `exe` is the program
    /// /proc named when the process was listed.
    pub fn of_error(e: &crate::error::Error, exe: Option<&str>) -> (ProcessStatus, String) {
        use crate::error::Error;
        match e {
            Error::NotPython { .. } => (
                ProcessStatus::Skipped,
                format!("not a Python process{}", exe.map(|x| format!(" ({x})")).unwrap_or_default()),
            ),
            Error::UnsupportedVersion { .. } => (ProcessStatus::Skipped, e.to_string()),
            Error::NoSuchProcess(_) => (ProcessStatus::Gone, "exited before it could be read".into()),
            Error::TargetExited(_) => (ProcessStatus::Gone, "exited while it was read".into()),
            _ => (ProcessStatus::Error, e.to_string()),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ProcessStatus::Ok => "ok",
            ProcessStatus::Skipped => "skipped",
            ProcessStatus::Gone => "gone",
            ProcessStatus::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessEntry {
    pub pid: i32,
    pub ppid: i32,
    /// 0 for the PID named on the command line, 1 for its children, …
    pub depth: u32,
    pub cmdline: String,
    /// gunicorn master, uvicorn worker, multiprocessing pool worker, … where it can be told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub status: ProcessStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The command's own document for this process (a `taskspy/1` snapshot for `dump`,
    /// `taskspy-ps/1` rows for `ps`, …), when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessesDoc {
    pub schema: String,
    /// The command that produced the documents: dump, ps, pstree, deadlocks, gil.
    pub command: String,
    /// The PID named on the command line.
    pub root: i32,
    /// `--depth`, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    pub captured_at: String,
    pub processes: Vec<ProcessEntry>,
}
