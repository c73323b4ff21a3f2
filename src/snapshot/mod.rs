//! snapshot: one complete look at a target — runtime and asyncio readers over a memory source,
//! assembled into the record (`model::Snapshot`) with bounded retries; and saved records read back.

pub mod capture;
pub mod gil_sample;
pub mod input;
pub mod paused;
pub mod reuse;

pub use crate::model::*;
pub use capture::{capture, capture_repeated, capture_with, CaptureOptions};
