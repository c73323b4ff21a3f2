//! `taskspy dump`: one snapshot of a process, a core or a saved file, as text or JSON.

use super::origin::{self, Origin};
use super::Output;
use crate::error::Result;
use crate::render;
use crate::snapshot::CaptureOptions;

pub struct DumpOptions {
    pub origin: Origin,
    pub json: bool,
}

pub fn run(opts: &DumpOptions) -> Result<Output> {
    // Text shows no lock facts: skip the per-frame lock scan there (findings are JSON's).
    let capture = if opts.json { CaptureOptions::full() } else { CaptureOptions::default() };
    let mut snaps = origin::snapshots(&opts.origin, capture)?;
    if opts.json {
        return Ok(match snaps.len() {
            1 => Output::Snapshot(Box::new(snaps.remove(0))),
            _ => Output::Snapshots(snaps),
        });
    }
    let texts: Vec<String> =
        snaps.iter().map(|s| render::text::dump_text(s, s.cmdline.as_deref().unwrap_or(""))).collect();
    Ok(Output::Text(texts.join("\n")))
}
