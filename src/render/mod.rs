//! render: turning snapshots into text and JSON for people and scripts.
//! Every string from the target passes through `escape` before it reaches a terminal.

pub mod escape;
pub mod json;
pub mod tasks;
pub mod text;
