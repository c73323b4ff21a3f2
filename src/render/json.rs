//! JSON output: the snapshot serialized as one document (names carried exactly, unescaped).

use crate::snapshot::Snapshot;

pub fn snapshot_json(s: &Snapshot) -> String {
    // serde_json escapes control characters inside strings, so the document is always valid JSON.
    serde_json::to_string_pretty(s).unwrap_or_else(|e| format!("{{\"error\": {:?}}}", e.to_string()))
}
