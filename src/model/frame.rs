//! One Python frame as every layer names it: function (co_qualname on 3.11+), file and line.
//! Strings are shared with the code-object cache, so cloning a frame copies no text.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    pub function: std::sync::Arc<str>,
    pub file: std::sync::Arc<str>,
    /// 0 when the location has no line ("no location" entries).
    pub line: i64,
}

/// Whether a thread's innermost frames are the event loop's selector (waiting for I/O/timers).
pub fn in_selector(frames: &[Frame]) -> bool {
    frames.iter().take(3).any(|f| {
        let func = f.function.rsplit('.').next().unwrap_or("");
        f.file.ends_with("selectors.py") && matches!(func, "select" | "poll" | "_run_once")
    }) || frames.first().map(|f| f.file.contains("uvloop")).unwrap_or(false)
}
