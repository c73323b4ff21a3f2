//! ELF symbol and section lookup with goblin, and load-bias computation from PT_LOAD segments.
//! Addresses are derived from segment virtual addresses, never from raw file offsets.

use super::maps::MapEntry;
use crate::error::{Error, Result};
use goblin::elf::{program_header::PT_LOAD, Elf};

/// What we learned from one mapped ELF file.
#[derive(Debug, Clone, Default)]
pub struct ElfInfo {
    pub path: String,
    /// Address in the target = link-time virtual address + bias.
    pub bias: u64,
    pub symbols: std::collections::HashMap<String, u64>,
    /// name -> (link-time address, size)
    pub sections: std::collections::HashMap<String, (u64, u64)>,
    pub is_exec: bool,
}

impl ElfInfo {
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).map(|v| v + self.bias)
    }
    pub fn section(&self, name: &str) -> Option<(u64, u64)> {
        self.sections.get(name).map(|(a, s)| (a + self.bias, *s))
    }
}

/// Symbols worth keeping (the whole table of libpython is ~10k entries; we only need these).
pub const WANTED_SYMBOLS: &[&str] = &[
    "_PyRuntime",
    "Py_Version",
    "PyCode_Type",
    "PyUnicode_Type",
    "PyLong_Type",
    "PyDict_Type",
    "PyTuple_Type",
    "PyList_Type",
    "PySet_Type",
    "PyFrozenSet_Type",
    "PyCoro_Type",
    "PyGen_Type",
    "PyFunction_Type",
    "PyMethod_Type",
    "PyCFunction_Type",
    "PyModule_Type",
    "PyType_Type",
    "_PyWeakref_RefType",
    "_Py_NoneStruct",
    "_Py_TrueStruct",
    "_PySet_Dummy",
    "PyFloat_Type",
    "PyBool_Type",
    "PyBytes_Type",
];

/// Parse an ELF file (read through `/proc/PID/root` by the caller) and compute its bias from the
/// maps of the target.
pub fn load(path: &str, data: &[u8], maps: &[MapEntry]) -> Result<ElfInfo> {
    let parse =
        |with_symtab| parse_tables(data, with_symtab).map_err(|e| Error::Other(format!("parsing ELF {path}: {e}")));
    let mut elf = parse(false)?;
    let bias = load_bias(&elf, path, maps)
        .ok_or_else(|| Error::Other(format!("{path}: no mapping matches its PT_LOAD segments")))?;
    let mut info = ElfInfo {
        path: path.to_string(),
        bias,
        is_exec: elf.header.e_type == goblin::elf::header::ET_EXEC,
        ..Default::default()
    };
    take_symbols(&elf.dynsyms, &elf.dynstrtab, &mut info);
    // Not everything wanted was exported: the full symbol table (if the file has one) may add it.
    if info.symbols.len() < WANTED_SYMBOLS.len() {
        elf = parse(true)?;
        take_symbols(&elf.syms, &elf.strtab, &mut info);
    }
    for sh in &elf.section_headers {
        if let Some(name) = elf.shdr_strtab.get_at(sh.sh_name) {
            if sh.sh_addr != 0 {
                info.sections.insert(name.to_string(), (sh.sh_addr, sh.sh_size));
            }
        }
    }
    Ok(info)
}

/// Wanted symbols of `syms` not known yet.
fn take_symbols(syms: &goblin::elf::Symtab, strtab: &goblin::strtab::Strtab, info: &mut ElfInfo) {
    for sym in syms.iter() {
        if sym.st_value == 0 {
            continue;
        }
        if let Some(name) = strtab.get_at(sym.st_name) {
            if WANTED_SYMBOLS.contains(&name) && !info.symbols.contains_key(name) {
                info.symbols.insert(name.to_string(), sym.st_value);
            }
        }
    }
}

/// The parts of an ELF file `load` reads: program and section headers, section names, and the
/// symbol tables with their strings. Not the relocations, dynamic section or version tables
/// `Elf::parse` also decodes: for a build with debug info that was most of the attach time
/// (~1.5 ms of a free-threaded 3.14 `python3.14t`).
/// The full symbol table (`.symtab`, and its strings) only `with_symtab`: an exported `.dynsym`
/// usually holds every wanted symbol already.
fn parse_tables(data: &[u8], with_symtab: bool) -> goblin::error::Result<Elf<'_>> {
    use goblin::elf::section_header::{SHT_DYNSYM, SHT_SYMTAB};
    use goblin::elf::{ProgramHeader, SectionHeader, Symtab};
    use goblin::strtab::Strtab;
    let h = Elf::parse_header(data)?;
    let ctx = goblin::container::Ctx::new(h.container()?, h.endianness()?);
    let mut elf = Elf::lazy_parse(h)?;
    elf.program_headers = ProgramHeader::parse(data, h.e_phoff as usize, h.e_phnum as usize, ctx)?;
    elf.section_headers = SectionHeader::parse(data, h.e_shoff as usize, h.e_shnum as usize, ctx)?;
    let strtab_of = |idx: usize| -> goblin::error::Result<Strtab<'_>> {
        match elf.section_headers.get(idx) {
            Some(sh) => Strtab::parse(data, sh.sh_offset as usize, sh.sh_size as usize, 0),
            None => Ok(Strtab::default()),
        }
    };
    elf.shdr_strtab = strtab_of(h.e_shstrndx as usize)?;
    for sh in &elf.section_headers {
        if sh.sh_entsize == 0 || !(sh.sh_type == SHT_DYNSYM || (with_symtab && sh.sh_type == SHT_SYMTAB)) {
            continue;
        }
        let syms = Symtab::parse(data, sh.sh_offset as usize, (sh.sh_size / sh.sh_entsize) as usize, ctx)?;
        let strs = strtab_of(sh.sh_link as usize)?;
        if sh.sh_type == SHT_DYNSYM {
            (elf.dynsyms, elf.dynstrtab) = (syms, strs);
        } else {
            (elf.syms, elf.strtab) = (syms, strs);
        }
    }
    Ok(elf)
}

/// Bias = where a PT_LOAD segment is mapped minus its page-aligned virtual address. We match each
/// segment to the mapping of this file with the same page-aligned file offset, so binaries whose
/// file offsets were shifted (patchelf, prelink) still resolve correctly.
pub fn load_bias(elf: &Elf, path: &str, maps: &[MapEntry]) -> Option<u64> {
    const PAGE: u64 = 0x1000;
    let file_maps: Vec<&MapEntry> = maps.iter().filter(|m| m.path.as_deref() == Some(path)).collect();
    for ph in elf.program_headers.iter().filter(|p| p.p_type == PT_LOAD) {
        let off = ph.p_offset & !(PAGE - 1);
        let vaddr = ph.p_vaddr & !(PAGE - 1);
        if let Some(m) = file_maps.iter().find(|m| m.offset == off) {
            return Some(m.start.wrapping_sub(vaddr));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lean parse finds what the full one finds: headers, section names, both symbol tables.
    #[test]
    fn lean_parse_matches_goblins_full_parse() {
        let data = std::fs::read(std::fs::read_link("/proc/self/exe").unwrap()).unwrap();
        let (full, lean) = (Elf::parse(&data).unwrap(), parse_tables(&data, true).unwrap());
        assert_eq!(full.program_headers, lean.program_headers);
        assert_eq!(full.section_headers.len(), lean.section_headers.len());
        let names = |e: &Elf| -> Vec<String> {
            e.section_headers.iter().filter_map(|s| e.shdr_strtab.get_at(s.sh_name)).map(String::from).collect()
        };
        assert_eq!(names(&full), names(&lean));
        for (a, b) in [(&full.syms, &lean.syms), (&full.dynsyms, &lean.dynsyms)] {
            assert_eq!(a.len(), b.len());
        }
        let sym_names = |e: &Elf| -> Vec<(String, u64)> {
            e.syms.iter().filter_map(|s| Some((e.strtab.get_at(s.st_name)?.to_string(), s.st_value))).collect()
        };
        assert!(!sym_names(&lean).is_empty());
        assert_eq!(sym_names(&full), sym_names(&lean));
    }

    #[test]
    fn bias_of_this_test_binary_matches_its_own_maps() {
        // The running test executable is a PIE: its bias must put `main`-ish code inside a mapping.
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let path = exe.to_string_lossy().to_string();
        let data = std::fs::read(&exe).unwrap();
        let maps = super::super::maps::read_maps(std::process::id() as i32).unwrap();
        let elf = Elf::parse(&data).unwrap();
        let bias = load_bias(&elf, &path, &maps).expect("bias");
        let entry = elf.header.e_entry + bias;
        assert!(maps.iter().any(|m| m.start <= entry && entry < m.end && m.path.as_deref() == Some(&path)));
    }
}
