//! taskspy: read a running CPython's threads and asyncio tasks from its memory, never running code in it.
//! Pipeline: attach (process, symbols) → runtime (layouts, threads, frames, objects) → snapshot → render.

pub mod analysis;
pub mod asyncio;
pub mod commands;
pub mod error;
pub mod heap;
pub mod model;
pub mod placement;
pub mod render;
pub mod runtime;
pub mod snapshot;
pub mod source;
pub mod sync;
pub mod timing;
pub mod tui;
