//! A live process by PID: existence and permission checks, its maps and files (read through
//! /proc/PID/root so containers resolve their own files), and `process_vm_readv` memory.

use super::maps::{self, MapEntry};
use super::memory::{Memory, ProcessMemory};
use super::os::LiveOs;
use super::target::{find_python, mem_error, FileOpener, Target};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Files of a live target: through /proc/PID/root, or the mapping itself when replaced on disk.
struct LiveFiles<'a> {
    pid: i32,
    maps: &'a [MapEntry],
}

impl FileOpener for LiveFiles<'_> {
    fn open(&self, path: &str) -> Option<Arc<memmap2::Mmap>> {
        let f = open_target_file(self.pid, path, self.maps)?;
        // SAFETY: read-only private mapping; if the file is truncated underneath us, goblin sees
        // short data at worst (libraries in use are not truncated in practice).
        unsafe { memmap2::Mmap::map(&f).ok() }.map(Arc::new)
    }
}

/// Open a file mapped by the target. A file replaced on disk while the target runs (a package
/// upgrade) shows as "PATH (deleted)": then the mapping itself is opened via /proc/PID/map_files.
fn open_target_file(pid: i32, path: &str, maps: &[MapEntry]) -> Option<std::fs::File> {
    if path.ends_with(" (deleted)") {
        let m = maps.iter().find(|m| m.path.as_deref() == Some(path) && m.offset == 0)?;
        return std::fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)).ok();
    }
    std::fs::File::open(format!("/proc/{pid}/root{path}")).or_else(|_| std::fs::File::open(path)).ok()
}

pub fn check_exists(pid: i32) -> Result<()> {
    if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Error::NoSuchProcess(pid));
    }
    Ok(())
}

pub fn attach(pid: i32) -> Result<Target> {
    check_exists(pid)?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.to_string_lossy().trim_end_matches(" (deleted)").to_string())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NoSuchProcess(pid),
            std::io::ErrorKind::PermissionDenied => {
                Error::PermissionDenied { pid, detail: "cannot read /proc/PID/exe".into() }
            }
            _ => Error::Other(format!("reading /proc/{pid}/exe: {e}")),
        })?;
    let maps = maps::read_maps(pid)?;
    let found = find_python(pid, &exe, &maps, &LiveFiles { pid, maps: &maps })?;
    let mem: Arc<dyn Memory> = Arc::new(ProcessMemory { pid });
    // One probe read tells permission problems and vanished targets apart from layout problems.
    if let Err(e) = mem.read_u64(found.runtime_addr) {
        return Err(mem_error(pid, e));
    }
    Ok(Target {
        pid,
        mem,
        os: Arc::new(LiveOs { pid }),
        exe,
        maps,
        python: found.python,
        others: found.others,
        runtime_addr: found.runtime_addr,
        asyncio: found.asyncio,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pid_is_no_such_process() {
        assert!(matches!(attach(999_999_999), Err(Error::NoSuchProcess(_))));
        assert!(matches!(attach(-3), Err(Error::NoSuchProcess(_))));
    }
}
