//! Command-line definition (clap). Kept apart from dispatch: shell completions (`taskspy completions`)
//! and the man page (`taskspy man`) are generated from this same definition.

use clap::{Args, Parser, Subcommand};
use taskspy::commands::color::ColorWhen;
use taskspy::commands::completions::Shell;
use taskspy::commands::origin::Origin;
use taskspy::source::core::CoreOptions;

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
  10   bad input file (not a core, truncated core, not a taskspy snapshot)
  11   a binary the core needs is missing on this machine (see --lib-root, --exe)
  12   a binary on disk is not the build the core was taken with (see --force)
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
    /// Print every thread's Python stack (text, or JSON with --json), from a PID, a core or a saved snapshot.
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
    /// Sample at an interval and print findings as they appear: deadlock candidates, stuck tasks, loop lag, blocked loops.
    #[command(after_help = EXIT_CODES)]
    Watch(WatchArgs),
    /// Serve OpenMetrics for Prometheus (--listen) or write a node_exporter textfile (--textfile): tasks, threads, stuck tasks, GIL, findings.
    #[command(after_help = EXIT_CODES)]
    Metrics(MetricsArgs),
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

/// Where a command reads from: a live process (PID), a core file, or a saved snapshot.
#[derive(Args, Debug, Clone)]
pub struct Source {
    /// Process id of the Python process.
    #[arg(value_name = "PID")]
    pub pid: Option<i32>,
    /// Process id (py-spy style).
    #[arg(short = 'p', long = "pid", value_name = "PID", id = "pid_flag")]
    pub pid_flag: Option<i32>,
    /// Read an ELF core file (gcore, kernel, systemd-coredump .zst/.lz4) instead of a live process.
    #[arg(long, value_name = "CORE")]
    pub core: Option<std::path::PathBuf>,
    /// With --core: the executable on this machine, when not at the path the core names.
    #[arg(long, value_name = "PATH", requires = "core")]
    pub exe: Option<std::path::PathBuf>,
    /// With --core: a directory holding the target's files under their original paths.
    #[arg(long, value_name = "DIR", requires = "core")]
    pub lib_root: Option<std::path::PathBuf>,
    /// With --core: read a truncated core, or binaries of another build than the core's.
    #[arg(long, requires = "core")]
    pub force: bool,
}

impl Source {
    /// The live PID, or what else was named; a usage error when none or several are given.
    pub fn origin(&self, input: Option<&String>, blocking: bool, pause_ms: u64) -> Result<Origin, String> {
        let pid = self.pid.or(self.pid_flag);
        let named = [pid.is_some(), self.core.is_some(), input.is_some()].iter().filter(|x| **x).count();
        if named == 0 {
            return Err("name a target: a PID, --core CORE or --input FILE".into());
        }
        if named > 1 || (self.pid.is_some() && self.pid_flag.is_some()) {
            return Err("name one target: a PID, --core CORE or --input FILE, not several".into());
        }
        if blocking && pid.is_none() {
            return Err("--blocking pauses a live process: it needs a PID".into());
        }
        Ok(if let Some(core) = &self.core {
            Origin::Core(CoreOptions {
                core: core.clone(),
                exe: self.exe.clone(),
                lib_root: self.lib_root.clone(),
                force: self.force,
            })
        } else if let Some(i) = input {
            Origin::Saved(i.clone())
        } else {
            Origin::Live { pid: pid.unwrap_or(0), blocking, pause_ms }
        })
    }
}

/// A process tree instead of one process.
#[derive(Args, Debug, Clone)]
pub struct FamilyArgs {
    /// Also read the target's descendants that run Python (gunicorn/uvicorn workers, multiprocessing
    /// pools); others are listed as skipped, exited ones as gone. Output is grouped by process.
    #[arg(long)]
    pub subprocesses: bool,
    /// How many levels of descendants to follow (1 = children only); implies --subprocesses.
    #[arg(long, value_name = "N")]
    pub depth: Option<u32>,
}

impl FamilyArgs {
    pub fn wanted(&self) -> bool {
        self.subprocesses || self.depth.is_some()
    }
}

impl Source {
    /// `--subprocesses` follows a live process tree: the PID it starts from.
    pub fn family_root(&self, input: Option<&String>) -> Result<i32, String> {
        if self.core.is_some() || input.is_some() {
            return Err("--subprocesses follows a live process tree: name a PID, not --core or --input".into());
        }
        if self.pid.is_some() && self.pid_flag.is_some() {
            return Err("name one target: a PID, --core CORE or --input FILE, not several".into());
        }
        self.pid.or(self.pid_flag).ok_or_else(|| "name a target: a PID".to_string())
    }
}

/// Options that read a saved snapshot or pause a live process.
#[derive(Args, Debug, Clone)]
pub struct ReadOpts {
    /// Read saved snapshot(s) (`dump --json`, `s` in top; several, one per line) instead; `-` = stdin.
    #[arg(long, value_name = "FILE")]
    pub input: Option<String>,
    /// Pause the target while reading (consistent view; always resumed, also on error and Ctrl-C).
    #[arg(long)]
    pub blocking: bool,
    /// With --blocking: resume the target after this many milliseconds whatever the read is doing
    /// (the rest is read while it runs, and the snapshot says so).
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub pause_ms: u64,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub read: ReadOpts,
    #[command(flatten)]
    pub family: FamilyArgs,
    /// Print one JSON document (schema taskspy/1).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TaskArgs {
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub read: ReadOpts,
    #[command(flatten)]
    pub family: FamilyArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DeadlockArgs {
    #[command(flatten)]
    pub source: Source,
    #[command(flatten)]
    pub read: ReadOpts,
    #[command(flatten)]
    pub family: FamilyArgs,
    /// Sample for this many seconds (needed to see blocked event loops); 0 = one snapshot.
    #[arg(long, default_value_t = 0.0)]
    pub duration: f64,
    /// A loop running one task synchronously for longer than this (seconds) is reported.
    #[arg(long, default_value_t = 1.0)]
    pub threshold: f64,
    /// A task at the same await point this long (seconds) while its loop runs others is stuck.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub stuck_after: f64,
    /// A callback waiting this long (seconds) in a loop's ready queue is loop lag.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub lag_threshold: f64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Process ids of the Python processes (any number).
    #[arg(value_name = "PID", required = true)]
    pub pids: Vec<i32>,
    /// Serve the exposition at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR", required_unless_present_any = ["textfile", "once"])]
    pub listen: Option<String>,
    /// Write DIR/taskspy.prom (node_exporter's textfile collector), replaced atomically each interval.
    #[arg(long, value_name = "DIR")]
    pub textfile: Option<std::path::PathBuf>,
    /// Seconds between collections.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub interval: f64,
    /// A task at the same await point this long (seconds) while its loop runs others is stuck.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub stuck_after: f64,
    /// Collect once, write the textfile (or print the exposition) and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: Target,
    /// Seconds between samples.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long = "for", value_name = "SECONDS")]
    pub for_s: Option<f64>,
    /// One JSON object per finding and line (schema taskspy-watch/1).
    #[arg(long)]
    pub json: bool,
    /// A task at the same await point this long (seconds) while its loop runs others is stuck.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub stuck_after: f64,
    /// A callback waiting this long (seconds) in a loop's ready queue is loop lag.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub lag_threshold: f64,
    /// A loop running one task synchronously this long (seconds) is blocked.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    pub threshold: f64,
}

/// A live process only (sampling over time).
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
pub struct TopArgs {
    /// Process id of the Python process.
    #[arg(value_name = "PID", required_unless_present_any = ["pid_flag", "replay", "input"], conflicts_with = "pid_flag")]
    pub pid: Option<i32>,
    /// Process id (py-spy style).
    #[arg(short = 'p', long = "pid", value_name = "PID", id = "pid_flag")]
    pub pid_flag: Option<i32>,
    /// Browse a saved snapshot (from `dump --json` or `s` in top) instead of a live process; `-` = stdin.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pid", "pid_flag", "replay"])]
    pub input: Option<String>,
    /// GIL samples per second between refreshes.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Seconds between snapshot refreshes.
    #[arg(long, default_value_t = 1.0)]
    pub refresh: f64,
    /// Same as --input (kept for scripts written against earlier versions).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["pid", "pid_flag"])]
    pub replay: Option<String>,
    #[command(flatten)]
    pub family: FamilyArgs,
}

#[derive(Args, Debug)]
pub struct GilArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub family: FamilyArgs,
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
