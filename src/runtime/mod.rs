//! runtime: CPython's in-memory state — version and layouts, interpreters, threads, frames, objects.
//! `PyProcess` bundles a target's memory with its resolved offsets; the walkers hang off it.

pub mod code;
pub mod debug_offsets;
pub mod frames;
pub mod free_threading;
pub mod layout_file;
pub mod linetable;
pub mod locks;
pub mod objects;
pub mod offsets;
pub mod thread_names;
pub mod thread_waits;
pub mod threads;
pub mod version;

use crate::error::{Error, Result};
use crate::source::{target::mem_error, MemError, Memory, Target};
use offsets::Offsets;
use rustc_hash::FxHashMap as HashMap;
use std::sync::{Arc, Mutex};
use version::PyVersion;

/// Addresses of CPython's static type objects (and None), used to recognise objects by `ob_type`.
#[derive(Debug, Clone, Default)]
pub struct TypeAddrs {
    pub code: Option<u64>,
    pub unicode: Option<u64>,
    pub long: Option<u64>,
    pub dict: Option<u64>,
    pub none: Option<u64>,
    pub coro: Option<u64>,
    pub gen: Option<u64>,
    pub weakref: Option<u64>,
    pub method: Option<u64>,
    pub cfunction: Option<u64>,
    pub tuple: Option<u64>,
    pub list: Option<u64>,
    pub set: Option<u64>,
    /// The set "dummy" object marking deleted set entries (value of `_PySet_Dummy`).
    pub set_dummy: Option<u64>,
    pub true_: Option<u64>,
    pub module: Option<u64>,
}

/// Objects decoded once per reader: immutable in the target (code objects, line tables, type
/// names) or checked on every use (where a name sits in a dict).
#[derive(Default)]
struct ObjectCaches {
    /// Shared with sibling readers (see `sibling`): decoded at most once per capture, and asked
    /// only when a walk meets a new instruction, so the lock is rarely contended.
    code: Arc<Mutex<HashMap<u64, Arc<code::CodeInfo>>>>,
    type_names: Mutex<HashMap<u64, crate::model::Text>>,
    /// Line-table bytes objects by address (shared by code objects; with siblings too).
    linetables: Arc<Mutex<HashMap<u64, Arc<[u8]>>>>,
    /// Type address -> what kind of lock its instances are (if any).
    lock_kinds: Mutex<HashMap<u64, Option<locks::LockKind>>>,
    /// Where a name was found in a dict or values array: (store, hash of the name) -> (the name,
    /// entry index, key object). Checked against the name and the entry on every use, so a
    /// changed dict just falls back to a scan.
    found_names: Mutex<HashMap<(u64, u64), (Box<str>, usize, u64)>>,
}

pub struct PyProcess {
    pub pid: i32,
    /// Target memory behind a snapshot-scoped page cache (see `begin_snapshot`).
    pub mem: Arc<crate::source::cache::CachedMemory>,
    pub off: Offsets,
    pub version: PyVersion,
    pub free_threaded: bool,
    pub runtime_addr: u64,
    pub types: TypeAddrs,
    pub executable: String,
    pub library: Option<String>,
    /// The version's layout data (also used by the asyncio layer); shared with sibling readers.
    pub layout: Option<Arc<layout_file::LayoutFile>>,
    pub debug_offsets: Option<debug_offsets::DebugOffsets>,
    /// Address of the 3.14+ `.AsyncioDebug` section, if the `_asyncio` code is mapped.
    pub asyncio_debug_addr: Option<u64>,
    /// What this reader learned of the target's objects (code objects and line tables shared
    /// with sibling readers, the rest per reader).
    caches: ObjectCaches,
    /// Kernel view of the target's threads (live /proc or a core's notes).
    pub os: Arc<dyn crate::source::os::OsView>,
    /// What `snapshot::reuse` keeps between captures by this reader (repeated samples); its
    /// type is that module's business.
    pub kept: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

pub const MIN_MINOR: u32 = 8;
pub const MAX_MINOR: u32 = 15;

impl PyProcess {
    /// Work out version and layout for an attached target.
    pub fn open(target: Target) -> Result<PyProcess> {
        let pid = target.pid;
        let (version, ft_hint) = version::detect(&target)
            .ok_or_else(|| Error::NotPython { pid, detail: "cannot determine the Python version".into() })?;
        if version.major != 3 || version.minor < MIN_MINOR {
            return Err(Error::UnsupportedVersion { pid, version: version.to_string(), detail: String::new() });
        }
        let dbg = if version.at_least(3, 13) {
            debug_offsets::read(target.mem.as_ref(), target.runtime_addr, version.minor)
                .map_err(|e| mem_error(pid, e))?
        } else {
            None
        };
        if version.at_least(3, 13) && dbg.is_none() {
            return Err(Error::UnsupportedVersion {
                pid,
                version: version.to_string(),
                detail: " (its _Py_DebugOffsets table has a layout this build of taskspy does not know)".into(),
            });
        }
        let free_threaded = dbg.as_ref().map(|d| d.free_threaded).unwrap_or(ft_hint);
        let file = layout_file::embedded(version.minor, free_threaded);
        if file.is_none() && !version.at_least(3, 13) {
            return Err(Error::UnsupportedVersion {
                pid,
                version: version.to_string(),
                detail: format!(
                    " (no python_layouts/3.{}{}.json; have {})",
                    version.minor,
                    if free_threaded { "t" } else { "" },
                    layout_file::embedded_labels().join(", ")
                ),
            });
        }
        if version.minor > MAX_MINOR && file.is_none() {
            return Err(Error::UnsupportedVersion { pid, version: version.to_string(), detail: String::new() });
        }
        let off = Offsets::resolve(version, free_threaded, file.as_ref(), dbg.as_ref()).map_err(|missing| {
            Error::UnsupportedVersion {
                pid,
                version: version.to_string(),
                detail: format!(" (layout data lacks: {})", missing.join(", ")),
            }
        })?;
        let types = TypeAddrs {
            code: target.symbol("PyCode_Type"),
            unicode: target.symbol("PyUnicode_Type"),
            long: target.symbol("PyLong_Type"),
            dict: target.symbol("PyDict_Type"),
            none: target.symbol("_Py_NoneStruct"),
            coro: target.symbol("PyCoro_Type"),
            gen: target.symbol("PyGen_Type"),
            weakref: target.symbol("_PyWeakref_RefType"),
            method: target.symbol("PyMethod_Type"),
            cfunction: target.symbol("PyCFunction_Type"),
            tuple: target.symbol("PyTuple_Type"),
            list: target.symbol("PyList_Type"),
            set: target.symbol("PySet_Type"),
            set_dummy: target.symbol("_PySet_Dummy").and_then(|a| target.mem.read_u64(a).ok()),
            true_: target.symbol("_Py_TrueStruct"),
            module: target.symbol("PyModule_Type"),
        };
        let asyncio_debug_addr = target.section(".AsyncioDebug").map(|(a, _)| a);
        let library = if target.python.path != target.exe { Some(target.python.path.clone()) } else { None };
        Ok(PyProcess {
            pid,
            mem: Arc::new(crate::source::cache::CachedMemory::new(target.mem.clone())),
            off,
            version,
            free_threaded,
            runtime_addr: target.runtime_addr,
            types,
            executable: target.exe.clone(),
            library,
            layout: file.map(Arc::new),
            debug_offsets: dbg,
            asyncio_debug_addr,
            caches: Default::default(),
            os: target.os.clone(),
            kept: Mutex::new(None),
        })
    }

    /// A reader of the same target for a helper thread: same offsets and types, its own page
    /// cache and object caches (nothing locked per read across threads). `None` when the page
    /// cache cannot be split (see `CachedMemory::sibling`).
    pub fn sibling(&self) -> Option<PyProcess> {
        Some(PyProcess {
            pid: self.pid,
            mem: Arc::new(self.mem.sibling()?),
            off: self.off.clone(),
            version: self.version,
            free_threaded: self.free_threaded,
            runtime_addr: self.runtime_addr,
            types: self.types.clone(),
            executable: self.executable.clone(),
            library: self.library.clone(),
            layout: self.layout.clone(),
            debug_offsets: self.debug_offsets.clone(),
            asyncio_debug_addr: self.asyncio_debug_addr,
            // Code objects and line tables one reader decoded serve the others (type names and
            // lock kinds are asked per task: each reader keeps its own, no lock shared per task).
            caches: ObjectCaches {
                code: self.caches.code.clone(),
                linetables: self.caches.linetables.clone(),
                ..Default::default()
            },
            os: self.os.clone(),
            kept: Mutex::new(None),
        })
    }

    pub fn mem(&self) -> &dyn Memory {
        self.mem.as_ref()
    }

    /// Cache target pages until `end_snapshot`: one consistent pass reads each page once.
    pub fn begin_snapshot(&self) {
        self.mem.begin();
    }

    pub fn end_snapshot(&self) {
        self.mem.end();
    }

    /// Run `f` with its reads past the snapshot's page cache (see `CachedMemory::past_cache`);
    /// `None` when the memory cannot have changed (a paused copy, a core file).
    pub fn past_cache<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        if self.os.kind() != "live" {
            return None;
        }
        self.mem.past_cache(f)
    }

    /// Convert a memory error into the user-facing error for this target.
    pub fn err(&self, e: MemError) -> Error {
        mem_error(self.pid, e)
    }
}

impl PyProcess {
    /// Build a reader over any memory (synthetic images in tests, core files later).
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        pid: i32,
        mem: Arc<dyn Memory>,
        off: Offsets,
        runtime_addr: u64,
        types: TypeAddrs,
        executable: String,
        os: Arc<dyn crate::source::os::OsView>,
    ) -> PyProcess {
        PyProcess {
            pid,
            mem: Arc::new(crate::source::cache::CachedMemory::new(mem)),
            version: off.version,
            free_threaded: off.free_threaded,
            off,
            runtime_addr,
            types,
            executable,
            library: None,
            layout: None,
            debug_offsets: None,
            asyncio_debug_addr: None,
            caches: Default::default(),
            os,
            kept: Mutex::new(None),
        }
    }
}

#[cfg(test)]
mod synthetic_tests;
