//! `taskspy top`: the live terminal UI on a PID, or on a saved snapshot (`--input`, `--replay`).

use super::Output;
use crate::error::Result;
use crate::tui::runner::{self, TopOptions};

pub fn run(opts: &TopOptions) -> Result<Output> {
    runner::run(opts)?;
    Ok(Output::Text(String::new()))
}
