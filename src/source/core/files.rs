//! The binaries a core needs from disk (everything it omits: code, read-only data), found under
//! `--lib-root` or where the target had them, and checked against the build-ids the core recorded.

use super::notes::{build_id, hex, FileMapping};
use crate::error::Error;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
enum Problem {
    Missing(Vec<PathBuf>),
    Mismatch {
        disk: PathBuf,
        core_id: String,
        disk_id: String,
    },
    /// No build-id in the core to compare with, and the file's segments do not fit its mappings.
    Layout {
        disk: PathBuf,
        detail: String,
    },
    Unreadable(PathBuf, String),
}

pub struct DiskFiles {
    lib_root: Option<PathBuf>,
    /// The executable's path as the core names it, and where it is on disk (`--exe`).
    exe: Option<(String, PathBuf)>,
    force: bool,
    /// Where the core says each file was mapped.
    mappings: Vec<FileMapping>,
    /// Build-id of each file, as read from its first page in the core (where the core holds it).
    expected: Mutex<HashMap<String, Vec<u8>>>,
    cache: Mutex<HashMap<String, Result<Arc<memmap2::Mmap>, Problem>>>,
}

impl DiskFiles {
    pub fn new(
        lib_root: Option<PathBuf>,
        exe: Option<(String, PathBuf)>,
        force: bool,
        mappings: Vec<FileMapping>,
    ) -> DiskFiles {
        DiskFiles { lib_root, exe, force, mappings, expected: Mutex::default(), cache: Mutex::default() }
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
        let problem = match want {
            // The build-id the core recorded decides.
            Some(want) => {
                let have = build_id(&m).unwrap_or_default();
                (have != want).then(|| Problem::Mismatch {
                    disk: disk.clone(),
                    core_id: hex(&want),
                    disk_id: hex(&have),
                })
            }
            // gcore does not keep read-only pages (where build-ids live): the file's segments must
            // at least be where the core says the file was mapped.
            None => self.layout_mismatch(path, &m).map(|detail| Problem::Layout { disk: disk.clone(), detail }),
        };
        if let Some(p) = problem {
            if !self.force {
                return Err(p);
            }
            eprintln!("taskspy: warning: {} (--force: reading it anyway)", describe(path, &p));
        }
        Ok(Arc::new(m))
    }

    /// Why the file's PT_LOAD segments cannot be the ones mapped at the core's addresses, if so.
    fn layout_mismatch(&self, path: &str, data: &[u8]) -> Option<String> {
        use goblin::elf::program_header::PT_LOAD;
        const PAGE: u64 = 4096;
        let maps: Vec<&FileMapping> = self.mappings.iter().filter(|m| m.path == path).collect();
        if maps.is_empty() {
            return None;
        }
        let Ok(elf) = goblin::elf::Elf::parse(data) else { return Some("it is not an ELF file".into()) };
        let loads: Vec<_> = elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD).collect();
        // The bias from the first mapping that some segment starts at, then every mapping must be
        // covered by a segment at the same file offset and address.
        let bias = maps.iter().find_map(|m| {
            loads
                .iter()
                .find(|p| p.p_offset & !(PAGE - 1) == m.offset)
                .map(|p| m.start.wrapping_sub(p.p_vaddr & !(PAGE - 1)))
        });
        let Some(bias) = bias else {
            return Some("none of its segments starts where the core says the file was mapped".into());
        };
        for m in &maps {
            let fits = loads.iter().any(|p| {
                let (off, va) = (p.p_offset & !(PAGE - 1), (p.p_vaddr & !(PAGE - 1)).wrapping_add(bias));
                let end = p.p_vaddr.wrapping_add(p.p_memsz).wrapping_add(bias);
                m.offset >= off && m.start.wrapping_sub(va) == m.offset - off && m.start < end.saturating_add(PAGE)
            });
            if !fits {
                return Some(format!(
                    "no segment of it maps file offset 0x{:x} at 0x{:x} as the core records",
                    m.offset, m.start
                ));
            }
        }
        None
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
                Problem::Mismatch { .. } | Problem::Layout { .. } => Error::BinaryMismatch(describe(path, p)),
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
        Problem::Layout { disk, detail } => format!(
            "{} is not the build the core was taken with ({detail}; the core holds no build-id to compare): pass \
             the target's own files with --lib-root DIR / --exe PATH, or --force to read anyway",
            disk.display()
        ),
        Problem::Unreadable(disk, e) => format!("cannot read {} (needed by the core for {path}): {e}", disk.display()),
    }
}
