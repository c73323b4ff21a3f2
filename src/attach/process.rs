//! Opening a target by PID: existence and permission checks, finding the ELF that holds
//! `_PyRuntime` (static python or libpython, read via /proc/PID/root), and its load bias.

use super::elf::{self, ElfInfo};
use super::maps::{self, MapEntry};
use super::memory::{MemError, Memory, ProcessMemory};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Everything the runtime layer needs from the attach layer.
pub struct Target {
    pub pid: i32,
    pub mem: Arc<dyn Memory>,
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

/// Map a file of the target read-only. Through /proc/PID/root so a target in another mount namespace
/// (container) resolves its own files. Mapping (not reading) keeps big debug-info libraries cheap.
fn read_target_file(pid: i32, path: &str, maps: &[MapEntry]) -> Option<memmap2::Mmap> {
    let f = open_target_file(pid, path, maps)?;
    // SAFETY: read-only private mapping; if the file is truncated underneath us, goblin sees short
    // data at worst (libraries in use are not truncated in practice).
    unsafe { memmap2::Mmap::map(&f).ok() }
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

fn is_elf_file(pid: i32, path: &str, maps: &[MapEntry]) -> bool {
    use std::io::Read;
    let mut f = match open_target_file(pid, path, maps) {
        Some(f) => f,
        None => return false,
    };
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic).is_ok() && &magic == b"\x7fELF"
}

pub fn check_exists(pid: i32) -> Result<()> {
    if pid <= 0 {
        return Err(Error::NoSuchProcess(pid));
    }
    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
        return Err(Error::NoSuchProcess(pid));
    }
    Ok(())
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
    let files = maps::mapped_files(&maps);

    let mut candidates: Vec<&String> = files.iter().filter(|p| looks_like_python(p)).collect();
    // libpython before the executable: when both exist, the runtime lives in the library.
    candidates.sort_by_key(|p| !p.rsplit('/').next().unwrap_or("").starts_with("lib"));

    let mut found: Option<ElfInfo> = None;
    let mut others = Vec::new();
    for path in &candidates {
        let Some(data) = read_target_file(pid, path, &maps) else { continue };
        let Ok(info) = elf::load(path, &data, &maps) else { continue };
        let has_runtime = info.symbols.contains_key("_PyRuntime") || info.sections.contains_key(".PyRuntime");
        if has_runtime && found.is_none() {
            found = Some(info);
        } else {
            others.push(info);
        }
    }
    if found.is_none() {
        // Embedders (uwsgi, blender, ...) link CPython into binaries without "python" in the name.
        for path in files.iter().filter(|p| !looks_like_python(p)).take(128) {
            if !is_elf_file(pid, path, &maps) {
                continue;
            }
            let Some(data) = read_target_file(pid, path, &maps) else { continue };
            if data.len() > 512 << 20 {
                continue;
            }
            if let Ok(info) = elf::load(path, &data, &maps) {
                if info.symbols.contains_key("_PyRuntime") || info.sections.contains_key(".PyRuntime") {
                    found = Some(info);
                    break;
                }
            }
        }
    }

    let Some(python) = found else {
        let names: Vec<String> = candidates.iter().map(|s| s.to_string()).collect();
        return Err(no_runtime_error(pid, &names, &exe));
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
    let asyncio = files
        .iter()
        .filter(|p| p.rsplit('/').next().unwrap_or("").starts_with("_asyncio"))
        .find_map(|p| read_target_file(pid, p, &maps).and_then(|d| elf::load(p, &d, &maps).ok()));

    let mem: Arc<dyn Memory> = Arc::new(ProcessMemory { pid });
    // One probe read tells permission problems and vanished targets apart from layout problems.
    if let Err(e) = mem.read_u64(runtime_addr) {
        return Err(mem_error(pid, e));
    }
    Ok(Target { pid, mem, exe, maps, python, others, runtime_addr, asyncio })
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

    #[test]
    fn missing_pid_is_no_such_process() {
        assert!(matches!(attach(999_999_999), Err(Error::NoSuchProcess(_))));
        assert!(matches!(attach(-3), Err(Error::NoSuchProcess(_))));
    }
}
