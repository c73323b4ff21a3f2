//! A core file as a memory source: `taskspy dump --core CORE` reads the same runtime walkers over an
//! ELF core (gcore or kernel, plain or systemd-coredump compressed) plus the binaries on disk.

pub mod decompress;
pub mod files;
pub mod memory;
pub mod notes;

use super::maps::MapEntry;
use super::os::{OsThreadState, OsView, SYS_FUTEX};
use super::target::{find_python, FileOpener, Target};
use super::{Buf, Memory};
use crate::error::{Error, Result};
use files::DiskFiles;
use memory::CoreMemory;
use notes::{CoreThread, AT_EXECFN, AT_PHDR};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct CoreOptions {
    pub core: PathBuf,
    /// Where the executable is on this machine, when not at the path the core names.
    pub exe: Option<PathBuf>,
    /// A directory holding the target's files under their original paths (a container's root).
    pub lib_root: Option<PathBuf>,
    /// Read a truncated core, or binaries whose build-id differs from the core's.
    pub force: bool,
}

/// The threads a core recorded, answering like /proc would for a stopped process.
pub struct CoreOs {
    threads: Vec<CoreThread>,
    cmdline: String,
    /// The environment the process started with (from its initial stack).
    environ: Vec<String>,
}

impl OsView for CoreOs {
    fn thread_ids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.threads.iter().map(|t| t.tid).collect();
        v.sort();
        v
    }
    fn thread_state(&self, tid: i32) -> OsThreadState {
        let Some(t) = self.threads.iter().find(|t| t.tid == tid) else { return OsThreadState::default() };
        OsThreadState {
            state: None,
            syscall: Some((t.orig_rax >= 0).then_some(t.orig_rax)),
            futex_addr: (t.orig_rax == SYS_FUTEX).then_some(t.rdi),
            comm: None,
        }
    }
    fn cmdline(&self) -> String {
        self.cmdline.clone()
    }
    fn kind(&self) -> &'static str {
        "core"
    }
    fn environ_var(&self, name: &str) -> Option<String> {
        self.environ.iter().find_map(|kv| kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')).map(str::to_string))
    }
}

struct CoreFiles<'a>(&'a DiskFiles);

impl FileOpener for CoreFiles<'_> {
    fn open(&self, path: &str) -> Option<Arc<memmap2::Mmap>> {
        self.0.get(path)
    }
    fn problem(&self, path: &str) -> Option<Error> {
        self.0.problem(path)
    }
}

fn perms(flags: u32) -> String {
    format!(
        "{}{}{}p",
        if flags & 4 != 0 { 'r' } else { '-' },
        if flags & 2 != 0 { 'w' } else { '-' },
        if flags & 1 != 0 { 'x' } else { '-' }
    )
}

pub fn open(opts: &CoreOptions) -> Result<Target> {
    let shown = opts.core.display().to_string();
    let bad = |detail: String| Error::BadInput { path: shown.clone(), detail };
    let opened = decompress::map_core(&opts.core)?;
    let data = opened.map.clone();
    let info = notes::parse(&data).map_err(|e| bad(e.to_string()))?;
    if info.needed_len > data.len() as u64 && !opts.force {
        return Err(bad(format!(
            "truncated core: the file has {} bytes but its segments need {} (pass --force to read what is there)",
            data.len(),
            info.needed_len
        )));
    }
    if info.segments.is_empty() {
        return Err(bad("the core holds no memory segments".into()));
    }
    let pid = info.pid.or_else(|| info.threads.first().map(|t| t.tid)).unwrap_or(0);

    // The executable: the file mapped where the program headers are (AT_PHDR).
    let phdr = info.auxv.iter().find(|(k, _)| *k == AT_PHDR).map(|(_, v)| *v);
    let mut core_exe = phdr
        .and_then(|a| info.files.iter().find(|f| f.start <= a && a < f.end))
        .map(|f| f.path.trim_end_matches(" (deleted)").to_string());
    let disk = Arc::new(DiskFiles::new(
        opts.lib_root.clone(),
        opts.exe.clone().map(|e| (core_exe.clone().unwrap_or_else(|| e.display().to_string()), e)),
        opts.force,
        info.files.clone(),
    ));
    let mem = Arc::new(CoreMemory::new(opened, info.segments.clone(), info.files.clone(), disk.clone()));

    // Build-ids as the core recorded them (kernel cores keep each ELF's first page; gcore only
    // pages that were written, so there the file layout is checked instead).
    let mut ids = HashMap::new();
    for f in info.files.iter().filter(|f| f.offset == 0) {
        if let Some(id) = in_memory_build_id(&mem, f.start) {
            ids.entry(f.path.clone()).or_insert(id);
        }
    }
    disk.set_expected(ids);

    if core_exe.is_none() {
        core_exe = info
            .auxv
            .iter()
            .find(|(k, _)| *k == AT_EXECFN)
            .and_then(|(_, a)| read_cstr(mem.as_ref(), *a))
            .or_else(|| opts.exe.as_ref().map(|e| e.display().to_string()));
    }
    let exe = core_exe.unwrap_or_else(|| info.fname.clone().unwrap_or_default());
    let maps: Vec<MapEntry> = info
        .files
        .iter()
        .map(|f| MapEntry {
            start: f.start,
            end: f.end,
            perms: info
                .segments
                .iter()
                .find(|s| s.vaddr <= f.start && f.start < s.vaddr.saturating_add(s.memsz))
                .map(|s| perms(s.flags))
                .unwrap_or_else(|| "r--p".into()),
            offset: f.offset,
            path: Some(f.path.clone()),
            dev: (0, 0),
            inode: 0,
        })
        .collect();
    if maps.is_empty() {
        return Err(bad(if info.needed_len > data.len() as u64 {
            "truncated core: its NT_FILE note (which files were mapped where) is past the end of the file".into()
        } else {
            "the core has no NT_FILE note (which files were mapped where), so the Python binary cannot be \
             located; cores from Linux 3.7+ and gdb's gcore have one"
                .into()
        }));
    }
    let found = find_python(pid, &exe, &maps, &CoreFiles(&disk)).map_err(|e| match e {
        Error::NotPython { pid, detail } => Error::NotPython { pid, detail: format!("core {shown}: {detail}") },
        other => other,
    })?;
    if mem.read_u64(found.runtime_addr).is_err() {
        return Err(bad(format!(
            "the core does not hold the Python runtime's memory at 0x{:x} (written with a coredump_filter that \
             leaves out data mappings?)",
            found.runtime_addr
        )));
    }
    let (argv, environ) = stack_strings(mem.as_ref(), &info).unwrap_or_default();
    let cmdline = if argv.is_empty() { info.psargs.clone().unwrap_or_default() } else { argv.join(" ") };
    Ok(Target {
        pid,
        mem,
        os: Arc::new(CoreOs { threads: info.threads.clone(), cmdline, environ }),
        exe,
        maps,
        python: found.python,
        others: found.others,
        runtime_addr: found.runtime_addr,
        asyncio: found.asyncio,
    })
}

/// The GNU build-id of the ELF mapped at `start`, read from what the core itself holds: its
/// program headers (first page) and its PT_NOTE segment at the note's loaded address.
fn in_memory_build_id(mem: &CoreMemory, start: u64) -> Option<Vec<u8>> {
    let mut head = [0u8; 64];
    mem.read_core_only(start, &mut head).ok()?;
    if &head[..4] != b"\x7fELF" || head[4] != 2 {
        return None;
    }
    let phoff = head.u64_at(32);
    let phnum = head.u16_at(56) as u64;
    if phnum == 0 || phnum > 64 {
        return None;
    }
    let mut ph = vec![0u8; (phnum * 56) as usize];
    mem.read_core_only(start.checked_add(phoff)?, &mut ph).ok()?;
    let entries: Vec<&[u8]> = ph.chunks_exact(56).collect();
    let first_load = entries.iter().find(|e| e.u32_at(0) == 1)?;
    let bias = start.wrapping_sub(first_load.u64_at(16) & !0xfff);
    for e in entries.iter().filter(|e| e.u32_at(0) == 4) {
        let (vaddr, size) = (e.u64_at(16), e.u64_at(32).min(4096));
        let mut n = vec![0u8; size as usize];
        if mem.read_core_only(vaddr.wrapping_add(bias), &mut n).is_err() {
            continue;
        }
        if let Some(id) = notes::gnu_build_id_note(&n) {
            return Some(id);
        }
    }
    None
}

/// The command line and environment, from the initial stack: the aux vector (which NT_AUXV gives
/// us) sits on the stack right after `argc, argv[], NULL, envp[], NULL`; find it there and walk
/// back. NT_PRPSINFO keeps only the first 80 bytes of the command line.
fn stack_strings(mem: &CoreMemory, info: &notes::CoreInfo) -> Option<(Vec<String>, Vec<String>)> {
    let execfn = info.auxv.iter().find(|(k, _)| *k == AT_EXECFN)?.1;
    let seg = info.segments.iter().find(|s| s.vaddr <= execfn && execfn < s.vaddr.saturating_add(s.memsz))?;
    let len = seg.memsz.min(64 << 20) as usize;
    let start = seg.vaddr + seg.memsz - len as u64;
    let mut stack = vec![0u8; len];
    mem.read_core_only(start, &mut stack).ok()?;
    let pattern: Vec<u8> =
        info.auxv.iter().take(4).flat_map(|(k, v)| [k.to_le_bytes(), v.to_le_bytes()]).flatten().collect();
    if pattern.len() < 32 {
        return None;
    }
    let at = (0..stack.len().saturating_sub(pattern.len())).step_by(8).find(|&i| stack[i..].starts_with(&pattern))?;
    let word = |i: usize| -> Option<u64> { Some(u64::from_le_bytes(stack.get(i..i + 8)?.try_into().ok()?)) };
    // Back over envp's NULL and pointers, then argv's NULL and pointers, to argc.
    let mut i = at.checked_sub(8)?;
    if word(i)? != 0 {
        return None;
    }
    i = i.checked_sub(8)?;
    let mut envp = Vec::new();
    while word(i)? != 0 {
        envp.push(word(i)?);
        if envp.len() > 65_536 {
            return None;
        }
        i = i.checked_sub(8)?;
    }
    envp.reverse();
    let mut argv = Vec::new();
    loop {
        i = i.checked_sub(8)?;
        let w = word(i)?;
        if w == argv.len() as u64 && !argv.is_empty() {
            break;
        }
        if argv.len() > 4096 {
            return None;
        }
        argv.push(w);
    }
    argv.reverse();
    let args: Vec<String> = argv.iter().filter_map(|a| read_cstr(mem, *a)).collect();
    let env: Vec<String> = envp.iter().filter_map(|a| read_cstr(mem, *a)).collect();
    (args.len() == argv.len()).then_some((args, env))
}

fn read_cstr(mem: &dyn Memory, addr: u64) -> Option<String> {
    let mut out = Vec::new();
    for i in 0..4096u64 {
        let b = mem.read_u8(addr.checked_add(i)?).ok()?;
        if b == 0 {
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.push(b);
    }
    None
}
