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

    fn problem(&self, path: &str) -> Option<Error> {
        // Only worth an error of its own when the file could not be opened at all: otherwise the
        // caller's "no runtime in it" is the truth.
        if open_target_file(self.pid, path, self.maps).is_some() {
            return None;
        }
        Some(Error::Other(format!(
            "cannot open {path}, which PID {} maps, through /proc/{}/root or /proc/{}/map_files \
             (reading another mount namespace needs root or CAP_SYS_ADMIN)",
            self.pid, self.pid, self.pid
        )))
    }
}

/// Open a file mapped by the target: the target's own file, never a namesake on this machine.
/// Tried in order: the path under /proc/PID/root (the target's root, so containers resolve their
/// own files), the mapping itself via /proc/PID/map_files (any mount namespace; also a file
/// replaced on disk, "PATH (deleted)"), and the path as this machine resolves it — each accepted
/// only when it is the device and inode the kernel lists for the mapping.
fn open_target_file(pid: i32, path: &str, maps: &[MapEntry]) -> Option<std::fs::File> {
    use std::os::unix::fs::MetadataExt;
    let m = maps.iter().filter(|m| m.path.as_deref() == Some(path)).min_by_key(|m| m.offset)?;
    let same_file = |f: &std::fs::File| match f.metadata() {
        Ok(md) if m.inode != 0 => {
            let dev = md.dev();
            let (major, minor) = (libc::major(dev), libc::minor(dev));
            md.ino() == m.inode && (major, minor) == m.dev
        }
        Ok(_) => true,
        Err(_) => false,
    };
    let map_file = || std::fs::File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)).ok();
    if path.ends_with(" (deleted)") {
        return map_file();
    }
    [
        std::fs::File::open(format!("/proc/{pid}/root{path}")).ok().filter(same_file),
        map_file().filter(same_file),
        std::fs::File::open(path).ok().filter(same_file),
    ]
    .into_iter()
    .flatten()
    .next()
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
    let mut maps = maps::read_maps(pid)?;
    // A chroot-ed target lists its files under its root directory: show and open them as it sees them.
    let root = std::fs::read_link(format!("/proc/{pid}/root")).map(|p| p.to_string_lossy().into_owned());
    if let Ok(root) = &root {
        maps::strip_root(&mut maps, root);
    }
    let exe = match &root {
        Ok(r) if r != "/" => {
            exe.strip_prefix(r.trim_end_matches('/')).filter(|e| e.starts_with('/')).map(str::to_string).unwrap_or(exe)
        }
        _ => exe,
    };
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
