//! Load the DWARF sections of an ELF file (shared object, executable or
//! relocatable object) into a `gimli::Dwarf`.
//!
//! File contents are leaked on purpose: this is a short-lived CLI and leaking
//! gives every `EndianSlice` a `'static` lifetime.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use goblin::elf::section_header::{SHF_COMPRESSED, SHT_NOBITS};
use goblin::elf::Elf;

pub type R = gimli::EndianSlice<'static, gimli::RunTimeEndian>;

pub struct LoadedElf {
    /// File name only (what goes into `sources`).
    pub name: String,
    pub dwarf: gimli::Dwarf<R>,
}

pub fn load(path: &Path) -> Result<LoadedElf> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let data: &'static [u8] = Box::leak(data.into_boxed_slice());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    let dwarf = load_bytes(data).with_context(|| format!("loading DWARF from {}", path.display()))?;
    Ok(LoadedElf { name, dwarf })
}

pub fn load_bytes(data: &'static [u8]) -> Result<gimli::Dwarf<R>> {
    let elf = Elf::parse(data).context("not a valid ELF file")?;
    let endian = if elf.little_endian { gimli::RunTimeEndian::Little } else { gimli::RunTimeEndian::Big };

    // Section name -> index.
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    for (i, sh) in elf.section_headers.iter().enumerate() {
        if let Some(n) = elf.shdr_strtab.get_at(sh.sh_name) {
            by_name.entry(n).or_insert(i);
        }
    }
    if !by_name.contains_key(".debug_info") {
        if by_name.contains_key(".zdebug_info") {
            bail!("compressed .zdebug_* sections are not supported; decompress with `objcopy --decompress-debug-sections`");
        }
        bail!("no .debug_info section (stripped binary? use `layoutgen headers` for such interpreters)");
    }

    // Relocations of relocatable objects (gcc -c output): target section index
    // -> relocation section. Applied to a copy of the target's bytes.
    let is_rel = elf.header.e_type == goblin::elf::header::ET_REL;
    let mut relocs_for: HashMap<usize, usize> = HashMap::new();
    if is_rel {
        for (reloc_idx, _) in elf.shdr_relocs.iter().enumerate() {
            let shdr_idx = elf.shdr_relocs[reloc_idx].0;
            let target = elf.section_headers[shdr_idx].sh_info as usize;
            relocs_for.insert(target, reloc_idx);
        }
    }

    let mut load_section = |id: gimli::SectionId| -> Result<R> {
        let Some(&idx) = by_name.get(id.name()) else {
            return Ok(gimli::EndianSlice::new(&[], endian));
        };
        let sh = &elf.section_headers[idx];
        if sh.sh_type == SHT_NOBITS {
            return Ok(gimli::EndianSlice::new(&[], endian));
        }
        if sh.sh_flags & u64::from(SHF_COMPRESSED) != 0 {
            bail!(
                "section {} is compressed (SHF_COMPRESSED); decompress with `objcopy --decompress-debug-sections`",
                id.name()
            );
        }
        let range = sh.file_range().with_context(|| format!("section {} has no file range", id.name()))?;
        let bytes = data.get(range).with_context(|| format!("section {} is out of bounds", id.name()))?;
        if let Some(&reloc_idx) = relocs_for.get(&idx) {
            let mut owned = bytes.to_vec();
            apply_relocations(&elf, reloc_idx, &mut owned).with_context(|| format!("relocating {}", id.name()))?;
            let leaked: &'static [u8] = Box::leak(owned.into_boxed_slice());
            return Ok(gimli::EndianSlice::new(leaked, endian));
        }
        Ok(gimli::EndianSlice::new(bytes, endian))
    };
    let dwarf = gimli::Dwarf::load(&mut load_section)?;
    Ok(dwarf)
}

/// Apply the absolute relocations that DWARF sections of a relocatable object
/// use (section-relative offsets into .debug_str, .debug_line, ...).
fn apply_relocations(elf: &Elf<'_>, reloc_idx: usize, buf: &mut [u8]) -> Result<()> {
    use goblin::elf::header::{EM_386, EM_AARCH64, EM_X86_64};
    let machine = elf.header.e_machine;
    let little = elf.little_endian;
    let (_, section) = &elf.shdr_relocs[reloc_idx];
    for r in section.iter() {
        let width = match (machine, r.r_type) {
            (EM_X86_64, 1) => 8,        // R_X86_64_64
            (EM_X86_64, 10 | 11) => 4,  // R_X86_64_32, R_X86_64_32S
            (EM_X86_64, 24) => 8,       // R_X86_64_PC64 (not expected in DWARF)
            (EM_X86_64, 2) => continue, // R_X86_64_PC32: only in .debug_frame/.eh_frame style data
            (EM_386, 1) => 4,           // R_386_32
            (EM_AARCH64, 257) => 8,     // R_AARCH64_ABS64
            (EM_AARCH64, 258) => 4,     // R_AARCH64_ABS32
            (_, 0) => continue,         // R_*_NONE
            (m, t) => bail!("unsupported relocation type {t} for machine {m}"),
        };
        let sym_value = if r.r_sym == 0 { 0 } else { elf.syms.get(r.r_sym).map(|s| s.st_value).unwrap_or(0) };
        let off = r.r_offset as usize;
        let slot =
            buf.get_mut(off..off + width).with_context(|| format!("relocation offset {off:#x} out of bounds"))?;
        let addend = match r.r_addend {
            Some(a) => a,
            None => {
                // REL: the addend is stored in place.
                let mut v: u64 = 0;
                for (i, b) in slot.iter().enumerate() {
                    let shift = if little { 8 * i } else { 8 * (width - 1 - i) };
                    v |= u64::from(*b) << shift;
                }
                v as i64
            }
        };
        let value = sym_value.wrapping_add(addend as u64);
        for (i, b) in slot.iter_mut().enumerate() {
            let shift = if little { 8 * i } else { 8 * (width - 1 - i) };
            *b = (value >> shift) as u8;
        }
    }
    Ok(())
}
