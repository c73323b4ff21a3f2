//! `taskspy dump`: one snapshot of a process, a core or a saved file, as text or JSON.

use super::family::{self, FamilyOptions};
use super::origin::{self, Origin};
use super::Output;
use crate::error::Result;
use crate::model::Snapshot;
use crate::render;
use crate::snapshot::CaptureOptions;

pub struct DumpOptions {
    pub origin: Origin,
    pub json: bool,
}

fn capture_options(json: bool) -> CaptureOptions {
    // Text shows no lock facts: skip the per-frame lock scan there (findings are JSON's).
    if json {
        CaptureOptions::full()
    } else {
        CaptureOptions::default()
    }
}

pub fn run(opts: &DumpOptions) -> Result<Output> {
    let mut snaps = origin::snapshots(&opts.origin, capture_options(opts.json))?;
    if opts.json {
        return Ok(match snaps.len() {
            1 => Output::Snapshot(Box::new(snaps.remove(0))),
            _ => Output::Snapshots(snaps),
        });
    }
    let texts: Vec<String> = snaps.iter().map(text_of).collect();
    Ok(Output::Text(texts.join("\n")))
}

fn text_of(s: &Snapshot) -> String {
    render::text::dump_text(s, s.cmdline.as_deref().unwrap_or(""))
}

/// `dump --subprocesses`: every Python process of the tree.
pub fn run_family(fo: &FamilyOptions, json: bool) -> Result<Output> {
    family::run("dump", fo, capture_options(json), json, &|s| {
        Ok(if json { Output::Snapshot(Box::new(s)) } else { Output::Text(text_of(&s)) })
    })
}
