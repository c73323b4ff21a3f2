//! Entry point: parse arguments, run the subcommand, turn errors into one line and an exit code.
//! No backtraces reach the user; panics are reported as one line too.

mod cli;

use clap::{CommandFactory, Parser};
use std::io::Write;
use taskspy::commands::family::FamilyOptions;
use taskspy::commands::{color, completions, deadlocks, demo, dump, gil, manpage, metrics, tasks, top, watch, Output};
use taskspy::error::{exit, Error, Result};

#[global_allocator]
static ALLOCATOR: taskspy::heap::Allocator = taskspy::heap::Allocator;

fn main() {
    taskspy::heap::tune();
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let _ = writeln!(std::io::stderr(), "taskspy: internal error: {msg} (please report this)");
    }));
    let cli = cli::Cli::parse();
    let phase = taskspy::timing::Phase::start("command");
    let result = run(&cli);
    drop(phase);
    // Colour is added after rendering, only to `dump`-style text and only when wanted
    // (`--color`, NO_COLOR, stdout a terminal): piped output never contains escape sequences.
    let colorable = matches!(cli.command, cli::Command::Dump(_) | cli::Command::Demo(_));
    let result = match result {
        Ok(out) if colorable && color::enabled_for_stdout(cli.color) => Ok(color::colorize_output(out)),
        other => other,
    };
    match result {
        Ok(out) => {
            // Write through a large buffer straight to fd 1: std's stdout is line-buffered, which
            // costs a newline scan per write on multi-megabyte JSON documents.
            let stdout_lock = std::io::stdout().lock();
            let raw = raw_stdout();
            let mut stdout = std::io::BufWriter::with_capacity(taskspy::render::WRITE_CHUNK, &*raw);
            // A closed pipe (e.g. `| head`) is not an error worth a message.
            let phase = taskspy::timing::Phase::start("write output");
            let _ = out.write_to(&mut stdout);
            drop(stdout);
            drop(phase);
            drop(stdout_lock);
            std::process::exit(if out.exit_code() != 0 { out.exit_code() } else { exit::OK });
        }
        Err(e) => {
            eprintln!("taskspy: error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}

/// fd 1 as a `File` that is never closed by Rust.
fn raw_stdout() -> std::mem::ManuallyDrop<std::fs::File> {
    use std::os::unix::io::FromRawFd;
    // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop keeps us from closing it.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(1) })
}

fn run(cli: &cli::Cli) -> Result<Output> {
    let usage = |m: String| Error::Usage(m);
    match &cli.command {
        cli::Command::Dump(a) if a.family.wanted() => {
            dump::run_family(&family(&a.source, &a.read, &a.family).map_err(usage)?, a.json)
        }
        cli::Command::Ps(a) if a.family.wanted() => {
            tasks::ps_family(&family(&a.source, &a.read, &a.family).map_err(usage)?, a.json)
        }
        cli::Command::Pstree(a) if a.family.wanted() => {
            tasks::pstree_family(&family(&a.source, &a.read, &a.family).map_err(usage)?, a.json)
        }
        cli::Command::Deadlocks(a) if a.family.wanted() => {
            let fo = family(&a.source, &a.read, &a.family).map_err(usage)?;
            deadlocks::run_family(&deadlock_options(a, fo.origin(fo.root)), &fo)
        }
        cli::Command::Gil(a) if a.family.wanted() => {
            let fo = FamilyOptions { root: a.target.pid(), depth: a.family.depth, blocking: false, pause_ms: 0 };
            gil::run_family(
                &gil::GilOptions { pid: a.target.pid(), duration: a.duration, rate: a.rate, json: a.json },
                &fo,
            )
        }
        cli::Command::Dump(a) => {
            let origin = a.source.origin(a.read.input.as_ref(), a.read.blocking, a.read.pause_ms).map_err(usage)?;
            dump::run(&dump::DumpOptions { origin, json: a.json })
        }
        cli::Command::Ps(a) => {
            let origin = a.source.origin(a.read.input.as_ref(), a.read.blocking, a.read.pause_ms).map_err(usage)?;
            tasks::ps(&origin, a.json)
        }
        cli::Command::Pstree(a) => {
            let origin = a.source.origin(a.read.input.as_ref(), a.read.blocking, a.read.pause_ms).map_err(usage)?;
            tasks::pstree(&origin, a.json)
        }
        cli::Command::Deadlocks(a) => {
            let origin = a.source.origin(a.read.input.as_ref(), a.read.blocking, a.read.pause_ms).map_err(usage)?;
            deadlocks::run(&deadlock_options(a, origin))
        }
        cli::Command::Watch(a) => watch::run(&watch::WatchOptions {
            pid: a.target.pid(),
            interval: a.interval,
            for_s: a.for_s,
            json: a.json,
            thresholds: watch::Thresholds { stuck_after: a.stuck_after, lag: a.lag_threshold, blocked: a.threshold },
        }),
        cli::Command::Metrics(a) => metrics::run(&metrics::MetricsOptions {
            pids: a.pids.clone(),
            listen: a.listen.clone(),
            textfile: a.textfile.clone(),
            interval: a.interval,
            stuck_after: a.stuck_after,
            once: a.once,
        }),
        cli::Command::Gil(a) => {
            gil::run(&gil::GilOptions { pid: a.target.pid(), duration: a.duration, rate: a.rate, json: a.json })
        }
        cli::Command::Top(a) if a.family.wanted() && (a.input.is_some() || a.replay.is_some()) => {
            Err(usage("--subprocesses follows a live process tree: name a PID, not --input".into()))
        }
        cli::Command::Top(a) => top::run(&taskspy::tui::runner::TopOptions {
            color: color::enabled_for_stdout(cli.color),
            pid: a.pid.or(a.pid_flag).unwrap_or(0),
            rate: a.rate,
            refresh: a.refresh,
            replay: a.input.clone().or_else(|| a.replay.clone()),
            subprocesses: a.family.wanted().then_some(a.family.depth),
        }),
        cli::Command::Demo(a) => demo::run_demo(&a.python, a.json),
        cli::Command::Completions(a) => completions::completions(cli::Cli::command(), a.shell),
        cli::Command::Man => manpage::man_page(cli::Cli::command()),
    }
}

fn family(
    source: &cli::Source,
    read: &cli::ReadOpts,
    fam: &cli::FamilyArgs,
) -> std::result::Result<FamilyOptions, String> {
    Ok(FamilyOptions {
        root: source.family_root(read.input.as_ref())?,
        depth: fam.depth,
        blocking: read.blocking,
        pause_ms: read.pause_ms,
    })
}

fn deadlock_options(a: &cli::DeadlockArgs, origin: taskspy::commands::origin::Origin) -> deadlocks::DeadlockOptions {
    deadlocks::DeadlockOptions {
        origin,
        duration: a.duration,
        threshold: a.threshold,
        stuck_after: a.stuck_after,
        lag_threshold: a.lag_threshold,
        json: a.json,
    }
}
