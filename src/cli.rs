//! Command-line definition (clap). Kept apart from dispatch: shell completions (`taskspy completions`)
//! and the man page (`taskspy man`) are generated from this same definition.

use clap::{Args, Parser, Subcommand};
use taskspy::commands::color::ColorWhen;
use taskspy::commands::completions::Shell;

pub const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    error (unreadable or inconsistent target state, I/O)
  2    usage error
  3    (deadlocks) at least one finding
  4    no such process
  5    permission denied (run as root, grant CAP_SYS_PTRACE, or check kernel.yama.ptrace_scope)
  6    not a Python process
  7    unsupported Python version
  8    target exited while reading
  9    Python binary stripped of the symbols taskspy needs
  130  interrupted (Ctrl-C)";

#[derive(Parser, Debug)]
#[command(name = "taskspy", version, about = "Show what a running CPython process is doing: every thread's stack, read from memory.", after_help = EXIT_CODES)]
pub struct Cli {
    /// When to colour text output.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = ColorWhen::Auto)]
    pub color: ColorWhen,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print every thread's Python stack (text, or JSON with --json).
    #[command(after_help = EXIT_CODES)]
    Dump(DumpArgs),
    /// Table of asyncio tasks: thread, id, name, coroutine stack, awaiter (like `python -m asyncio ps`).
    #[command(after_help = EXIT_CODES)]
    Ps(TaskArgs),
    /// Tree of asyncio tasks by awaited-by, with coroutine stacks; cycles marked, never refused.
    #[command(after_help = EXIT_CODES)]
    Pstree(TaskArgs),
    /// Find deadlock candidates: await cycles, lock cycles (tasks, threads), stuck lock waits, blocked loops. Exit 3 if any.
    #[command(after_help = EXIT_CODES)]
    Deadlocks(DeadlockArgs),
    /// Sample GIL ownership: share held per thread, waits, CPU, top stacks while holding, switches/s.
    #[command(after_help = EXIT_CODES)]
    Gil(GilArgs),
    /// Live terminal UI: threads, task tree, details, findings and GIL, refreshing as the process runs.
    #[command(after_help = EXIT_CODES)]
    Top(TopArgs),
    /// Start a bundled example service with the machine's python3, attach to it and dump it.
    #[command(after_help = EXIT_CODES)]
    Demo(DemoArgs),
    /// Print a shell completion script (e.g. `taskspy completions bash > /etc/bash_completion.d/taskspy`).
    Completions(CompletionsArgs),
    /// Print the manual page (roff), e.g. `taskspy man > ~/.local/share/man/man1/taskspy.1`.
    Man,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// Shell to generate completions for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Args, Debug)]
pub struct Target {
    /// Process id of the Python process.
    #[arg(value_name = "PID", required_unless_present = "pid_flag", conflicts_with = "pid_flag")]
    pub pid: Option<i32>,
    /// Process id (py-spy style).
    #[arg(short = 'p', long = "pid", value_name = "PID", id = "pid_flag")]
    pub pid_flag: Option<i32>,
}

impl Target {
    pub fn pid(&self) -> i32 {
        self.pid.or(self.pid_flag).unwrap_or(0)
    }
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print one JSON document (schema taskspy/1).
    #[arg(long)]
    pub json: bool,
    /// Pause the target while reading (consistent view; always resumed, also on error and Ctrl-C).
    #[arg(long)]
    pub blocking: bool,
}

#[derive(Args, Debug)]
pub struct TaskArgs {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Pause the target while reading.
    #[arg(long)]
    pub blocking: bool,
}

#[derive(Args, Debug)]
pub struct DeadlockArgs {
    #[command(flatten)]
    pub target: Target,
    /// Sample for this many seconds (needed to see blocked event loops); 0 = one snapshot.
    #[arg(long, default_value_t = 0.0)]
    pub duration: f64,
    /// A loop running one task synchronously for longer than this (seconds) is reported.
    #[arg(long, default_value_t = 1.0)]
    pub threshold: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Process id of the Python process.
    #[arg(value_name = "PID", required_unless_present_any = ["pid_flag", "replay"], conflicts_with = "pid_flag")]
    pub pid: Option<i32>,
    /// Process id (py-spy style).
    #[arg(short = 'p', long = "pid", value_name = "PID", id = "pid_flag")]
    pub pid_flag: Option<i32>,
    /// GIL samples per second between refreshes.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds between snapshot refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub refresh: f64,
    /// Browse a saved snapshot (from `dump --json` or `s` in top) instead of a live process.
    #[arg(long, value_name = "SNAPSHOT.json", conflicts_with_all = ["pid", "pid_flag"])]
    pub replay: Option<String>,
}

#[derive(Args, Debug)]
pub struct GilArgs {
    #[command(flatten)]
    pub target: Target,
    /// How long to sample, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Samples per second (the report says when the rate could not be kept).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Python interpreter to run the demo service with.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
