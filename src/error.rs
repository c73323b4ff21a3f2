//! Error kinds the user can act on, each with its documented process exit code.
//! Everything that reaches the user goes through `Error` so every failure is one clear line.

use std::fmt;

/// Exit codes, documented in `--help` and the README. Keep them stable: scripts depend on them.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Any other error (I/O, corrupt target state after retries, bad arguments).
    pub const GENERIC: i32 = 1;
    /// Command-line usage error (clap's own code).
    pub const USAGE: i32 = 2;
    /// `deadlocks`: at least one finding (reserved for that command).
    pub const FINDINGS: i32 = 3;
    /// No process with that PID.
    pub const NO_SUCH_PROCESS: i32 = 4;
    /// Permission denied: not allowed to read the target's memory.
    pub const PERMISSION: i32 = 5;
    /// The process is not a Python process (no CPython runtime found).
    pub const NOT_PYTHON: i32 = 6;
    /// A Python whose version taskspy has no layout for.
    pub const UNSUPPORTED_VERSION: i32 = 7;
    /// The target exited while taskspy was reading it.
    pub const TARGET_EXITED: i32 = 8;
    /// The Python binary is stripped of the symbols taskspy needs.
    pub const MISSING_SYMBOLS: i32 = 9;
    /// An input file (core, saved snapshot) is not what it should be: not a core, truncated, corrupt.
    pub const BAD_INPUT: i32 = 10;
    /// A binary the core needs is not on this machine (`--lib-root`, `--exe`).
    pub const BINARY_MISSING: i32 = 11;
    /// A binary on disk is another build than the one the core was taken with (`--force`).
    pub const BINARY_MISMATCH: i32 = 12;
    /// Interrupted by Ctrl-C (128 + SIGINT).
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug)]
pub enum Error {
    NoSuchProcess(i32),
    PermissionDenied {
        pid: i32,
        detail: String,
    },
    NotPython {
        pid: i32,
        detail: String,
    },
    UnsupportedVersion {
        pid: i32,
        version: String,
        detail: String,
    },
    TargetExited(i32),
    MissingSymbols {
        pid: i32,
        binary: String,
    },
    Interrupted,
    BadInput {
        path: String,
        detail: String,
    },
    BinaryMissing(String),
    /// A command line that names no target, or several (exit 2, like clap's own usage errors).
    Usage(String),
    BinaryMismatch(String),
    /// Memory did not make sense even after retries (target changing too fast, or corrupt).
    Inconsistent(String),
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NoSuchProcess(_) => exit::NO_SUCH_PROCESS,
            Error::PermissionDenied { .. } => exit::PERMISSION,
            Error::NotPython { .. } => exit::NOT_PYTHON,
            Error::UnsupportedVersion { .. } => exit::UNSUPPORTED_VERSION,
            Error::TargetExited(_) => exit::TARGET_EXITED,
            Error::MissingSymbols { .. } => exit::MISSING_SYMBOLS,
            Error::Interrupted => exit::INTERRUPTED,
            Error::BadInput { .. } => exit::BAD_INPUT,
            Error::Usage(_) => exit::USAGE,
            Error::BinaryMissing(_) => exit::BINARY_MISSING,
            Error::BinaryMismatch(_) => exit::BINARY_MISMATCH,
            Error::Inconsistent(_) | Error::Other(_) => exit::GENERIC,
        }
    }

    pub fn other(msg: impl Into<String>) -> Error {
        Error::Other(msg.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchProcess(pid) => write!(f, "no such process: PID {pid} does not exist"),
            Error::PermissionDenied { pid, detail } => write!(
                f,
                "permission denied reading PID {pid} ({detail}): run as root (sudo), grant CAP_SYS_PTRACE \
                 (setcap cap_sys_ptrace+ep $(which taskspy)), or check kernel.yama.ptrace_scope \
                 (sysctl kernel.yama.ptrace_scope=0); in Docker add --cap-add SYS_PTRACE"
            ),
            Error::NotPython { pid, detail } => {
                write!(f, "PID {pid} is not a Python process ({detail})")
            }
            Error::UnsupportedVersion { pid, version, detail } => {
                write!(f, "unsupported Python version {version} in PID {pid}: taskspy supports CPython 3.8 to 3.15{detail}")?;
                let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
                if major == 3 && minor >= 8 {
                    // A newer or unusual build: a layout can be generated for it.
                    write!(f, "; to add it, generate its layout with layoutgen (see python_layouts/README.md)")?;
                }
                Ok(())
            }
            Error::TargetExited(pid) => write!(f, "target PID {pid} exited while taskspy was reading it"),
            Error::MissingSymbols { pid, binary } => write!(
                f,
                "cannot find the CPython runtime in PID {pid}: {binary} is stripped of the _PyRuntime symbol and has no \
                 .PyRuntime section; use an unstripped python/libpython build"
            ),
            Error::Interrupted => write!(f, "interrupted"),
            Error::BadInput { path, detail } => write!(f, "{path}: {detail}"),
            Error::BinaryMissing(m) | Error::BinaryMismatch(m) | Error::Usage(m) => write!(f, "{m}"),
            Error::Inconsistent(m) => write!(f, "target memory kept changing or is corrupt: {m}"),
            Error::Other(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Attach a short context to lower-level errors at module boundaries.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::Other(format!("{}: {e}", what())))
    }
}
