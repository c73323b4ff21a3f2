//! A target, whatever its memory source: its memory, its OS thread view, its mappings and the ELF
//! files (python/libpython, `_asyncio`) found among them, with `_PyRuntime`'s address.

use super::elf::{self, ElfInfo};
use super::maps::{self, MapEntry};
use super::memory::{MemError, Memory};
use super::os::OsView;
use crate::error::{Error, Result};
use std::sync::Arc;

/// Everything the runtime layer needs from a memory source.
pub struct Target {
    pub pid: i32,
    pub mem: Arc<dyn Memory>,
    pub os: Arc<dyn OsView>,
    pub exe: String,
    pub maps: Vec<MapEntry>,
    /// The ELF containing `_PyRuntime` (python executable or libpython).
    pub python: ElfInfo,
    /// Other mapped ELFs with python-ish names (e.g. the executable when libpython is shared).
    pub others: Vec<ElfInfo>,
    pub runtime_addr: u64,
    /// The `_asyncio` extension module, when it is a separate shared object and already loaded.
    pub asyncio: Option<ElfInfo>,
}

impl Target {
    /// Address and size of a section in the python ELF, the `_asyncio` module or another python ELF.
    pub fn section(&self, name: &str) -> Option<(u64, u64)> {
        self.python
            .section(name)
            .or_else(|| self.asyncio.as_ref().and_then(|e| e.section(name)))
            .or_else(|| self.others.iter().find_map(|e| e.section(name)))
    }

    /// Address of an exported symbol in whichever python ELF has it.
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.python.symbol(name).or_else(|| self.others.iter().find_map(|e| e.symbol(name)))
    }
}

/// Map a memory error to the user-facing error for this PID.
pub fn mem_error(pid: i32, e: MemError) -> Error {
    match e {
        MemError::Exited => Error::TargetExited(pid),
        MemError::Permission => Error::PermissionDenied { pid, detail: "process_vm_readv was refused".into() },
        MemError::Unmapped(a) => Error::Inconsistent(format!("unreadable address 0x{a:x}")),
        MemError::Interrupted => Error::Interrupted,
        MemError::Deadline => Error::Inconsistent("the read was cut at its deadline".into()),
        MemError::Other(m) => Error::Other(m),
    }
}

/// `major.minor` parsed from a file name like `libpython3.8.so.1.0`, `python3.14`, `libpython2.7.so`.
pub fn version_from_name(path: &str) -> Option<(u32, u32, bool)> {
    let path = path.trim_end_matches(" (deleted)");
    let base = path.rsplit('/').next().unwrap_or(path);
    let i = base.find("python")? + "python".len();
    let rest = &base[i..];
    let mut parts = rest.splitn(2, '.');
    let major: u32 = parts.next()?.parse().ok()?;
    let tail = parts.next()?;
    let digits: String = tail.chars().take_while(|c| c.is_ascii_digit()).collect();
    let minor: u32 = digits.parse().ok()?;
    let ft = tail[digits.len()..].starts_with('t');
    Some((major, minor, ft))
}

fn looks_like_python(path: &str) -> bool {
    let path = path.trim_end_matches(" (deleted)");
    let base = path.rsplit('/').next().unwrap_or(path);
    base.contains("python") && !base.contains("_asyncio") && !base.ends_with(".py")
}

/// Why no `_PyRuntime` was found: an old Python, a stripped one, or no Python at all.
pub fn no_runtime_error(pid: i32, python_files: &[String], exe: &str) -> Error {
    match python_files.iter().find_map(|p| version_from_name(p)) {
        Some((maj, min, _)) if maj != 3 || min < 8 => {
            Error::UnsupportedVersion { pid, version: format!("{maj}.{min}"), detail: String::new() }
        }
        Some(_) => Error::MissingSymbols { pid, binary: python_files[0].clone() },
        None => {
            Error::NotPython { pid, detail: format!("no libpython or python binary is mapped; executable is {exe}") }
        }
    }
}

/// How a memory source opens the files its target maps (through /proc/PID/root for a live
/// process; under `--lib-root` for a core).
pub trait FileOpener {
    /// The file's bytes, or `None` when it cannot be used.
    fn open(&self, path: &str) -> Option<Arc<memmap2::Mmap>>;
    /// Why `path` could not be used (missing, another build), when that is worth an error of its own.
    fn problem(&self, _path: &str) -> Option<Error> {
        None
    }
}

/// The python ELFs among the mapped files.
pub struct PythonElfs {
    pub python: ElfInfo,
    pub others: Vec<ElfInfo>,
    pub asyncio: Option<ElfInfo>,
    pub runtime_addr: u64,
}

/// Find the ELF holding `_PyRuntime` (symbol or `.PyRuntime` section) among the mappings,
/// libpython before the executable, then embedders' binaries; and the `_asyncio` module.
pub fn find_python(pid: i32, exe: &str, maps: &[MapEntry], files: &dyn FileOpener) -> Result<PythonElfs> {
    let paths = maps::mapped_files(maps);
    let mut candidates: Vec<&String> = paths.iter().filter(|p| looks_like_python(p)).collect();
    // libpython before the executable: when both exist, the runtime lives in the library.
    candidates.sort_by_key(|p| !p.rsplit('/').next().unwrap_or("").starts_with("lib"));

    let has_runtime = |i: &ElfInfo| i.symbols.contains_key("_PyRuntime") || i.sections.contains_key(".PyRuntime");
    let mut found: Option<ElfInfo> = None;
    let mut others = Vec::new();
    for path in &candidates {
        let Some(data) = files.open(path) else { continue };
        let Ok(info) = elf::load(path, &data, maps) else { continue };
        if has_runtime(&info) && found.is_none() {
            found = Some(info);
        } else {
            others.push(info);
        }
    }
    if found.is_none() {
        // Embedders (uwsgi, blender, ...) link CPython into binaries without "python" in the name.
        for path in paths.iter().filter(|p| !looks_like_python(p)).take(128) {
            let Some(data) = files.open(path) else { continue };
            if data.len() > 512 << 20 || !data.starts_with(b"\x7fELF") {
                continue;
            }
            if let Ok(info) = elf::load(path, &data, maps) {
                if has_runtime(&info) {
                    found = Some(info);
                    break;
                }
            }
        }
    }
    let Some(python) = found else {
        // A python binary the source could not supply (a core without its binaries) says why.
        if let Some(e) = candidates.iter().find_map(|p| files.problem(p)) {
            return Err(e);
        }
        let names: Vec<String> = candidates.iter().map(|s| s.to_string()).collect();
        return Err(no_runtime_error(pid, &names, exe));
    };
    if let Some((maj, min, _)) = version_from_name(&python.path) {
        if maj != 3 || min < 8 {
            return Err(Error::UnsupportedVersion { pid, version: format!("{maj}.{min}"), detail: String::new() });
        }
    }
    let runtime_addr = python
        .symbol("_PyRuntime")
        .or_else(|| python.section(".PyRuntime").map(|(a, _)| a))
        .ok_or_else(|| Error::MissingSymbols { pid, binary: python.path.clone() })?;
    // `_asyncio` is only mapped once the target imported asyncio; its ELF carries 3.14's AsyncioDebug.
    let mut asyncio = None;
    for p in paths.iter().filter(|p| p.rsplit('/').next().unwrap_or("").starts_with("_asyncio")) {
        match files.open(p) {
            Some(d) => {
                if let Ok(info) = elf::load(p, &d, maps) {
                    asyncio = Some(info);
                    break;
                }
            }
            None => {
                if let Some(e) = files.problem(p) {
                    return Err(e);
                }
            }
        }
    }
    Ok(PythonElfs { python, others, asyncio, runtime_addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_file_names() {
        assert_eq!(version_from_name("/x/libpython3.8.so.1.0"), Some((3, 8, false)));
        assert_eq!(version_from_name("/usr/bin/python3.14"), Some((3, 14, false)));
        assert_eq!(version_from_name("/x/libpython3.13t.so.1.0"), Some((3, 13, true)));
        assert_eq!(version_from_name("/x/libpython3.7m.so.1.0"), Some((3, 7, false)));
        assert_eq!(version_from_name("/x/libpython2.7.so.1.0"), Some((2, 7, false)));
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert_eq!(version_from_name("/usr/bin/sleep"), None);
    }

    #[test]
    fn no_runtime_is_classified() {
        let f = |v: &[&str]| no_runtime_error(1, &v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "/bin/x");
        assert!(matches!(f(&["/usr/bin/python3.11"]), Error::MissingSymbols { .. }));
        assert!(
            matches!(f(&["/usr/lib/libpython3.7m.so.1.0"]), Error::UnsupportedVersion { ref version, .. } if version == "3.7")
        );
        assert!(
            matches!(f(&["/usr/lib/libpython2.7.so.1.0"]), Error::UnsupportedVersion { ref version, .. } if version == "2.7")
        );
        assert!(matches!(f(&[]), Error::NotPython { .. }));
        let msg = f(&["/usr/bin/python3.11"]).to_string();
        assert!(msg.contains("stripped") && !msg.contains('\n'), "{msg}");
    }
}
