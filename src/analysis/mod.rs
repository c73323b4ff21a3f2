//! analysis: views computed over a snapshot — the awaited-by task tree and its cycles (and later
//! deadlock findings and GIL statistics). Pure functions over `Snapshot`, no target access.

pub mod deadlock;
pub mod gil;
pub mod tree;
