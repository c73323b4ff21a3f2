//! `taskspy completions SHELL`: shell completion scripts generated from the clap definition, so they
//! always match the commands and flags the binary has.

use super::Output;
use crate::error::{Error, Result};
pub use clap_complete::Shell;

/// The completion script for `shell`, for the command line `cmd` (the binary's own `Cli::command()`).
pub fn completions(mut cmd: clap::Command, shell: Shell) -> Result<Output> {
    let name = cmd.get_name().to_string();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut buf);
    String::from_utf8(buf).map(Output::Text).map_err(|e| Error::other(format!("completion script is not UTF-8: {e}")))
}
