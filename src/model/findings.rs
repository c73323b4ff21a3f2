//! Findings: what the analyses conclude (deadlock candidates, blocked loops), with the locks,
//! threads, tasks and frames that prove each one. Part of the record so a saved snapshot keeps them.

use super::Frame;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockRef {
    /// e.g. "asyncio.Lock", "threading.RLock"
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
    /// A variable or attribute name that refers to the lock, where one could be found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    /// "task 0x… (name)" or "thread 1234 (name)"
    pub actor: String,
    pub note: String,
    pub frames: Vec<Frame>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    pub kind: String,
    pub severity: String,
    pub summary: String,
    pub threads: Vec<i32>,
    pub tasks: Vec<String>,
    pub locks: Vec<LockRef>,
    pub evidence: Vec<Evidence>,
}
