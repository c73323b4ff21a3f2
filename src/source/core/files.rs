//! The binaries a core needs from disk (everything it omits: code, read-only data), found under
//! `--lib-root` or where the target had them, and checked against the build-ids the core recorded.

use super::notes::{build_id, hex};
use crate::error::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
enum Problem {
    Missing(Vec<PathBuf>),
    Mismatch { disk: PathBuf, core_id: String, disk_id: String },
    Unreadable(PathBuf, String),
}

pub struct DiskFiles {
    lib_root: Option<PathBuf>,
    /// The executable's path as the core names it, and where it is on disk (`--exe`).
    exe: Option<(String, PathBuf)>,
    force: bool,
    /// Build-id of each file, as read from its first page in the core (where the core holds it).
    expected: Mutex<HashMap<String, Vec<u8>>>,
    cache: Mutex<HashMap<String, Result<Arc<memmap2::Mmap>, Problem>>>,
}

impl DiskFiles {
    pub fn new(lib_root: Option<PathBuf>, exe: Option<(String, PathBuf)>, force: bool) -> DiskFiles {
        DiskFiles { lib_root, exe, force, expected: Mutex::default(), cache: Mutex::default() }
    }

    pub fn set_expected(&self, ids: HashMap<String, Vec<u8>>) {
        *crate::sync::lock(&self.expected) = ids;
    }

    /// Where to look for a file the core names, in order.
    fn candidates(&self, path: &str) -> Vec<PathBuf> {
        let path = path.trim_end_matches(" (deleted)");
        if let Some((core_exe, disk)) = &self.exe {
            if core_exe.trim_end_matches(" (deleted)") == path {
                return vec![disk.clone()];
            }
        }
        let mut out = Vec::new();
        if let Some(root) = &self.lib_root {
            out.push(root.join(path.trim_start_matches('/')));
        }
        out.push(PathBuf::from(path));
        out
    }

    fn load(&self, path: &str) -> Result<Arc<memmap2::Mmap>, Problem> {
        let tried = self.candidates(path);
        let Some(disk) = tried.iter().find(|p| p.is_file()).cloned() else { return Err(Problem::Missing(tried)) };
        let f = std::fs::File::open(&disk).map_err(|e| Problem::Unreadable(disk.clone(), e.to_string()))?;
        // SAFETY: a read-only private mapping of a file we only read.
        let m = unsafe { memmap2::Mmap::map(&f) }.map_err(|e| Problem::Unreadable(disk.clone(), e.to_string()))?;
        let want = crate::sync::lock(&self.expected).get(path).cloned();
        if let Some(want) = want {
            let have = build_id(&m).unwrap_or_default();
            if have != want {
                let p = Problem::Mismatch { disk: disk.clone(), core_id: hex(&want), disk_id: hex(&have) };
                if !self.force {
                    return Err(p);
                }
                eprintln!("taskspy: warning: {} (--force: reading it anyway)", describe(path, &p));
            }
        }
        Ok(Arc::new(m))
    }

    /// The file's bytes, or `None` when it is missing, unreadable or of another build.
    pub fn get(&self, path: &str) -> Option<Arc<memmap2::Mmap>> {
        let mut cache = crate::sync::lock(&self.cache);
        if let Some(r) = cache.get(path) {
            return r.as_ref().ok().cloned();
        }
        let r = self.load(path);
        let out = r.as_ref().ok().cloned();
        cache.insert(path.to_string(), r);
        out
    }

    /// Why `path` could not be used, as the error to report when the reader needs it.
    pub fn problem(&self, path: &str) -> Option<Error> {
        self.get(path);
        let cache = crate::sync::lock(&self.cache);
        match cache.get(path)? {
            Ok(_) => None,
            Err(p) => Some(match p {
                Problem::Mismatch { .. } => Error::BinaryMismatch(describe(path, p)),
                _ => Error::BinaryMissing(describe(path, p)),
            }),
        }
    }
}

fn describe(path: &str, p: &Problem) -> String {
    match p {
        Problem::Missing(tried) => format!(
            "the core needs {path}, which is not on this machine (looked at {}): copy the target's files here and \
             pass --lib-root DIR (or --exe PATH for the executable)",
            tried.iter().map(|t| t.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
        Problem::Mismatch { disk, core_id, disk_id } => format!(
            "{} is not the build the core was taken with (build-id {core_id} in the core, {} on disk): pass the \
             target's own files with --lib-root DIR / --exe PATH, or --force to read anyway",
            disk.display(),
            if disk_id.is_empty() { "none" } else { disk_id }
        ),
        Problem::Unreadable(disk, e) => format!("cannot read {} (needed by the core for {path}): {e}", disk.display()),
    }
}

/// A path for messages.
pub fn show(p: &Path) -> String {
    p.display().to_string()
}
