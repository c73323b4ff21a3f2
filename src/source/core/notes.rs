//! The parts of an x86-64 Linux ELF core this reader needs: PT_LOAD segments, and the notes for
//! threads (NT_PRSTATUS registers), the process (NT_PRPSINFO), the aux vector and NT_FILE.

use crate::source::Buf;

pub const ET_CORE: u16 = 4;
pub const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const NT_PRSTATUS: u32 = 1;
const NT_PRPSINFO: u32 = 3;
const NT_AUXV: u32 = 6;
const NT_FILE: u32 = 0x4649_4c45;

/// Upper bounds on what a (possibly hostile) core may make us allocate.
const MAX_SEGMENTS: usize = 1 << 20;
const MAX_THREADS: usize = 1 << 16;
const MAX_FILES: u64 = 1 << 20;

/// One PT_LOAD: `memsz` bytes at `vaddr`, of which the first `filesz` are at `offset` in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

/// One thread's NT_PRSTATUS: its kernel id and the registers that tell whether it sat in a
/// system call (orig_rax >= 0) and, for futex(2), on which address (rdi).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoreThread {
    pub tid: i32,
    pub orig_rax: i64,
    pub rdi: u64,
    pub rip: u64,
    pub rsp: u64,
    /// User and system CPU time, in microseconds.
    pub cpu_us: u64,
}

/// One NT_FILE entry: `[start, end)` maps `path` from byte `offset` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub path: String,
}

#[derive(Debug, Clone, Default)]
pub struct CoreInfo {
    pub segments: Vec<Segment>,
    pub threads: Vec<CoreThread>,
    pub files: Vec<FileMapping>,
    pub auxv: Vec<(u64, u64)>,
    pub pid: Option<i32>,
    /// NT_PRPSINFO's short name and the first 80 bytes of the command line.
    pub fname: Option<String>,
    pub psargs: Option<String>,
    /// The largest offset+size any segment needs: more than the file holds means a truncated core.
    pub needed_len: u64,
}

/// Why a file is not a usable core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoreFormatError {
    NotElf,
    NotCore(u16),
    Unsupported(String),
    Malformed(String),
}

impl std::fmt::Display for CoreFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CoreFormatError::NotElf => write!(f, "not an ELF file"),
            CoreFormatError::NotCore(t) => write!(
                f,
                "an ELF {} file, not a core dump",
                match t {
                    2 => "executable",
                    3 => "shared-object or PIE",
                    1 => "relocatable",
                    _ => "non-core",
                }
            ),
            CoreFormatError::Unsupported(m) => write!(f, "{m}"),
            CoreFormatError::Malformed(m) => write!(f, "malformed core: {m}"),
        }
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn slice(data: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let end = off.checked_add(len)?;
    data.get(usize::try_from(off).ok()?..usize::try_from(end).ok()?)
}

/// Parse the ELF header, program headers and notes. Segments may point past the end of `data`
/// (a truncated core): they are kept, and `needed_len` tells how long the file should be.
pub fn parse(data: &[u8]) -> Result<CoreInfo, CoreFormatError> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Err(CoreFormatError::NotElf);
    }
    if data[4] != 2 || data[5] != 1 {
        return Err(CoreFormatError::Unsupported("only 64-bit little-endian cores are supported".into()));
    }
    let e_type = u16::from_le_bytes([data[16], data[17]]);
    if e_type != ET_CORE {
        return Err(CoreFormatError::NotCore(e_type));
    }
    let machine = u16::from_le_bytes([data[18], data[19]]);
    if machine != EM_X86_64 {
        return Err(CoreFormatError::Unsupported(format!(
            "a core of machine type {machine}; only x86-64 is supported"
        )));
    }
    let phoff = data.u64_at(32);
    let phentsize = data.u16_at(54) as u64;
    let phnum = data.u16_at(56) as u64;
    // PN_XNUM: the real count lives in section 0's sh_info.
    let phnum = if phnum == 0xffff {
        let shoff = data.u64_at(40);
        slice(data, shoff, 64).map(|sh| sh.u32_at(44) as u64).unwrap_or(0)
    } else {
        phnum
    };
    if phentsize < 56 || phnum as usize > MAX_SEGMENTS {
        return Err(CoreFormatError::Malformed(format!("{phnum} program headers of {phentsize} bytes")));
    }
    let mut info = CoreInfo::default();
    let mut notes: Vec<(u64, u64)> = Vec::new();
    for i in 0..phnum {
        let Some(ph) = slice(data, phoff.saturating_add(i * phentsize), 56) else {
            return Err(CoreFormatError::Malformed("program headers lie past the end of the file".into()));
        };
        let p_type = ph.u32_at(0);
        let flags = ph.u32_at(4);
        let (offset, vaddr, filesz, memsz) = (ph.u64_at(8), ph.u64_at(16), ph.u64_at(32), ph.u64_at(40));
        info.needed_len = info.needed_len.max(offset.saturating_add(filesz));
        match p_type {
            PT_LOAD => info.segments.push(Segment { vaddr, memsz, offset, filesz, flags }),
            PT_NOTE => notes.push((offset, filesz)),
            _ => {}
        }
    }
    info.segments.sort_by_key(|s| s.vaddr);
    for (off, size) in notes {
        // A note segment cut by truncation: read what is there.
        let avail = (data.len() as u64).saturating_sub(off).min(size);
        if let Some(n) = slice(data, off, avail) {
            parse_notes(n, &mut info);
        }
    }
    Ok(info)
}

fn parse_notes(mut n: &[u8], info: &mut CoreInfo) {
    let align4 = |x: u64| (x + 3) & !3;
    while n.len() >= 12 {
        let namesz = n.u32_at(0) as u64;
        let descsz = n.u32_at(4) as u64;
        let ty = n.u32_at(8);
        let name_end = 12 + align4(namesz);
        let desc_end = name_end.saturating_add(align4(descsz));
        let (Some(name), Some(desc)) = (slice(n, 12, namesz), slice(n, name_end, descsz)) else { return };
        let name = cstr(name);
        if name == "CORE" {
            match ty {
                NT_PRSTATUS if desc.len() >= 336 && info.threads.len() < MAX_THREADS => {
                    let reg = |i: u64| desc.u64_at(112 + 8 * i);
                    let tv = |o: u64| desc.u64_at(o).saturating_mul(1_000_000).saturating_add(desc.u64_at(o + 8));
                    info.threads.push(CoreThread {
                        tid: desc.i32_at(32),
                        orig_rax: reg(15) as i64,
                        rdi: reg(14),
                        rip: reg(16),
                        rsp: reg(19),
                        cpu_us: tv(48).saturating_add(tv(64)),
                    });
                }
                NT_PRPSINFO if desc.len() >= 136 => {
                    info.pid = Some(desc.i32_at(24));
                    info.fname = Some(cstr(&desc[40..56]));
                    info.psargs = Some(cstr(&desc[56..136]).trim_end().to_string());
                }
                NT_AUXV => {
                    info.auxv = desc.chunks_exact(16).map(|c| (c.u64_at(0), c.u64_at(8))).take(1024).collect();
                }
                NT_FILE => info.files = parse_nt_file(desc),
                _ => {}
            }
        }
        match n.get(desc_end as usize..) {
            Some(rest) if desc_end > 0 => n = rest,
            _ => return,
        }
    }
}

fn parse_nt_file(d: &[u8]) -> Vec<FileMapping> {
    let count = d.u64_at(0);
    let page = d.u64_at(8);
    if count > MAX_FILES || count.saturating_mul(24).saturating_add(16) > d.len() as u64 {
        return Vec::new();
    }
    let names_at = 16 + count as usize * 24;
    let mut names = d[names_at..].split(|&c| c == 0);
    (0..count)
        .filter_map(|i| {
            let e = &d[16 + i as usize * 24..];
            let path = String::from_utf8_lossy(names.next()?).into_owned();
            Some(FileMapping { start: e.u64_at(0), end: e.u64_at(8), offset: e.u64_at(16).wrapping_mul(page), path })
        })
        .collect()
}

/// Auxiliary vector keys used to find the executable.
pub const AT_PHDR: u64 = 3;
pub const AT_EXECFN: u64 = 31;

/// The GNU build-id of an ELF image (a file, or its first pages as mapped in a core).
pub fn build_id(elf: &[u8]) -> Option<Vec<u8>> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return None;
    }
    let phoff = elf.u64_at(32);
    let phentsize = elf.u16_at(54) as u64;
    let phnum = elf.u16_at(56) as u64;
    for i in 0..phnum.min(256) {
        let ph = slice(elf, phoff.checked_add(i.checked_mul(phentsize)?)?, 56)?;
        if ph.u32_at(0) != PT_NOTE {
            continue;
        }
        // In a file the notes are at p_offset.
        let Some(n) = slice(elf, ph.u64_at(8), ph.u64_at(32)) else { continue };
        if let Some(id) = gnu_build_id_note(n) {
            return Some(id);
        }
    }
    None
}

/// The NT_GNU_BUILD_ID note's descriptor in a run of ELF notes.
pub fn gnu_build_id_note(mut n: &[u8]) -> Option<Vec<u8>> {
    while n.len() >= 12 {
        let (namesz, descsz, ty) = (n.u32_at(0) as u64, n.u32_at(4) as u64, n.u32_at(8));
        let name_end = 12 + ((namesz + 3) & !3);
        let desc_end = name_end + ((descsz + 3) & !3);
        if ty == 3 && slice(n, 12, namesz).map(cstr).as_deref() == Some("GNU") {
            return slice(n, name_end, descsz).map(<[u8]>::to_vec);
        }
        n = n.get(desc_end as usize..)?;
    }
    None
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_cores_by_kind() {
        assert_eq!(parse(b"hello").unwrap_err(), CoreFormatError::NotElf);
        let exe = std::fs::read("/proc/self/exe").unwrap();
        assert!(matches!(parse(&exe), Err(CoreFormatError::NotCore(2 | 3))));
        assert!(build_id(&exe).is_some_and(|b| !b.is_empty()) || build_id(&exe).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        let mut s: u64 = 0x9e3779b97f4a7c15;
        for len in [64usize, 200, 4096] {
            for _ in 0..200 {
                let mut d: Vec<u8> = (0..len)
                    .map(|_| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        s as u8
                    })
                    .collect();
                d[..4].copy_from_slice(b"\x7fELF");
                d[4] = 2;
                d[5] = 1;
                d[16..18].copy_from_slice(&ET_CORE.to_le_bytes());
                d[18..20].copy_from_slice(&EM_X86_64.to_le_bytes());
                let _ = parse(&d);
                let _ = build_id(&d);
            }
        }
    }

    #[test]
    fn nt_file_entries() {
        let mut d = Vec::new();
        for v in [2u64, 4096, 0x1000, 0x2000, 0, 0x5000, 0x7000, 3] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(b"/a\0/lib/b.so\0");
        let f = parse_nt_file(&d);
        assert_eq!(f.len(), 2);
        assert_eq!(f[1], FileMapping { start: 0x5000, end: 0x7000, offset: 3 * 4096, path: "/lib/b.so".into() });
        // A count larger than the note is refused, not trusted.
        d[0] = 200;
        assert!(parse_nt_file(&d).is_empty());
    }
}
