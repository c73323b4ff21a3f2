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
