//! Index the DWARF of one or more ELF files by type name (one pass over the
//! top-level DIEs of every unit), then resolve the requested structs, member
//! paths and enums against that index.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Result;
use gimli::{constants as dw, AttributeValue, DebuggingInformationEntry, UnitOffset};

use crate::elf::{LoadedElf, R};
use crate::layout::{Layout, StructLayout};
use crate::spec::{self, StructSpec};

type Die = DebuggingInformationEntry<R>;

/// Where a DIE lives: file, unit within that file, offset within the unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    file: usize,
    unit: usize,
    off: UnitOffset<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// struct or union
    Aggregate,
    Typedef,
    Enum,
}

#[derive(Clone, Copy, Debug)]
struct Occurrence {
    kind: Kind,
    loc: Loc,
    /// For aggregates and enums: a definition (not a declaration, has children).
    is_def: bool,
}

struct FileDwarf {
    dwarf: gimli::Dwarf<R>,
    units: Vec<gimli::Unit<R>>,
    /// `.debug_info` offset of each unit's header (ascending).
    unit_starts: Vec<usize>,
    /// Compile unit file name (DW_AT_name), empty if absent.
    unit_names: Vec<Vec<u8>>,
}

pub struct Program {
    files: Vec<FileDwarf>,
    pub sources: Vec<String>,
    /// Every occurrence of a wanted name (typedef, struct/union tag, enum tag),
    /// in file order then unit order.
    named: HashMap<&'static [u8], Vec<Occurrence>>,
    /// First definition of every struct/union tag (to complete declarations).
    tag_defs: HashMap<&'static [u8], Loc>,
    /// Anonymous enumeration types with enumerators.
    anon_enums: Vec<Loc>,
}

/// A resolved member path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// Byte offset from the start of the struct.
    Field(u64),
    /// Bit-field: byte offset, bit offset within that byte (from the LSB), size in bits.
    Bits { byte: u64, bit: u64, size: u64 },
}

struct Member {
    name: Option<&'static [u8]>,
    ty: Option<Loc>,
    /// Byte offset of the member (of its storage unit for old-style bit-fields).
    byte_off: u64,
    /// For bit-fields: (bit offset from the start of the containing struct, size).
    bits: Option<(u64, u64)>,
}

impl Program {
    pub fn new(elfs: Vec<LoadedElf>) -> Result<Self> {
        let wanted: HashSet<&'static [u8]> = spec::wanted_names().into_iter().map(str::as_bytes).collect();
        let mut prog = Program {
            files: Vec::new(),
            sources: Vec::new(),
            named: HashMap::new(),
            tag_defs: HashMap::new(),
            anon_enums: Vec::new(),
        };
        for (file_idx, elf) in elfs.into_iter().enumerate() {
            prog.sources.push(elf.name);
            let dwarf = elf.dwarf;
            let mut units = Vec::new();
            let mut unit_starts = Vec::new();
            let mut unit_names = Vec::new();
            let mut headers = dwarf.units();
            while let Some(header) = headers.next()? {
                let Some(start) = header.offset().to_debug_info_offset(&header) else {
                    continue;
                };
                let start = start.0;
                let unit = dwarf.unit(header)?;
                unit_names.push(unit.name.map(|n| n.slice().to_vec()).unwrap_or_default());
                unit_starts.push(start);
                units.push(unit);
            }
            for (unit_idx, unit) in units.iter().enumerate() {
                prog.index_unit(&dwarf, unit, file_idx, unit_idx, &wanted)?;
            }
            prog.files.push(FileDwarf { dwarf, units, unit_starts, unit_names });
        }
        Ok(prog)
    }

    fn index_unit(
        &mut self,
        dwarf: &gimli::Dwarf<R>,
        unit: &gimli::Unit<R>,
        file: usize,
        unit_idx: usize,
        wanted: &HashSet<&'static [u8]>,
    ) -> Result<()> {
        let mut cursor = unit.entries();
        if !cursor.next_entry()? {
            return Ok(());
        }
        match cursor.current() {
            Some(root) if root.has_children() => {}
            _ => return Ok(()),
        }
        cursor.next_entry()?; // first child of the unit DIE
        while let Some(entry) = cursor.current() {
            let kind = match entry.tag() {
                dw::DW_TAG_structure_type | dw::DW_TAG_union_type | dw::DW_TAG_class_type => Some(Kind::Aggregate),
                dw::DW_TAG_typedef => Some(Kind::Typedef),
                dw::DW_TAG_enumeration_type => Some(Kind::Enum),
                _ => None,
            };
            if let Some(kind) = kind {
                let loc = Loc { file, unit: unit_idx, off: entry.offset() };
                let is_def = entry.has_children() && !is_declaration(entry);
                let name = match entry.attr_value(dw::DW_AT_name) {
                    Some(v) => Some(dwarf.attr_string(unit, v)?.slice()),
                    None => None,
                };
                match name {
                    Some(name) => {
                        if kind == Kind::Aggregate && is_def {
                            self.tag_defs.entry(name).or_insert(loc);
                        }
                        if wanted.contains(name) {
                            self.named.entry(name).or_default().push(Occurrence { kind, loc, is_def });
                        }
                    }
                    None => {
                        if kind == Kind::Enum && is_def {
                            self.anon_enums.push(loc);
                        }
                    }
                }
            }
            if cursor.next_sibling()?.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn unit(&self, loc: Loc) -> &gimli::Unit<R> {
        &self.files[loc.file].units[loc.unit]
    }

    fn entry(&self, loc: Loc) -> Result<Die> {
        Ok(self.unit(loc).entry(loc.off)?)
    }

    fn name_of(&self, loc: Loc, entry: &Die) -> Result<Option<&'static [u8]>> {
        match entry.attr_value(dw::DW_AT_name) {
            Some(v) => {
                let f = &self.files[loc.file];
                Ok(Some(f.dwarf.attr_string(&f.units[loc.unit], v)?.slice()))
            }
            None => Ok(None),
        }
    }

    fn children(&self, loc: Loc) -> Result<Vec<Die>> {
        let unit = self.unit(loc);
        let mut tree = unit.entries_tree(Some(loc.off))?;
        let root = tree.root()?;
        let mut out = Vec::new();
        let mut iter = root.children();
        while let Some(child) = iter.next()? {
            out.push(child.entry().clone());
        }
        Ok(out)
    }

    /// Follow a reference attribute (DW_AT_type) of `entry` (located in `loc`'s unit).
    fn reference(&self, loc: Loc, entry: &Die, attr: gimli::DwAt) -> Option<Loc> {
        match entry.attr_value(attr)? {
            AttributeValue::UnitRef(off) => Some(Loc { off, ..loc }),
            AttributeValue::DebugInfoRef(off) => {
                let f = &self.files[loc.file];
                let idx = match f.unit_starts.binary_search(&off.0) {
                    Ok(i) => i,
                    Err(0) => return None,
                    Err(i) => i - 1,
                };
                let unit_off = off.to_unit_offset(&f.units[idx].header)?;
                Some(Loc { file: loc.file, unit: idx, off: unit_off })
            }
            _ => None,
        }
    }

    /// Strip typedefs and qualifiers. Returns the underlying type's location and DIE.
    fn strip(&self, mut loc: Loc) -> Result<Option<(Loc, Die)>> {
        for _ in 0..64 {
            let e = self.entry(loc)?;
            match e.tag() {
                dw::DW_TAG_typedef
                | dw::DW_TAG_const_type
                | dw::DW_TAG_volatile_type
                | dw::DW_TAG_restrict_type
                | dw::DW_TAG_atomic_type
                | dw::DW_TAG_immutable_type
                | dw::DW_TAG_packed_type => match self.reference(loc, &e, dw::DW_AT_type) {
                    Some(next) => loc = next,
                    None => return Ok(None), // typedef of void
                },
                _ => return Ok(Some((loc, e))),
            }
        }
        Ok(None)
    }

    /// The defining DIE of a struct/union (following a declaration to a
    /// definition elsewhere by tag name).
    fn aggregate_def(&self, loc: Loc) -> Result<Option<(Loc, Die)>> {
        let Some((loc, e)) = self.strip(loc)? else {
            return Ok(None);
        };
        if !matches!(e.tag(), dw::DW_TAG_structure_type | dw::DW_TAG_union_type | dw::DW_TAG_class_type) {
            return Ok(None);
        }
        if e.has_children() && !is_declaration(&e) {
            return Ok(Some((loc, e)));
        }
        let Some(name) = self.name_of(loc, &e)? else {
            return Ok(None);
        };
        match self.tag_defs.get(name) {
            Some(&def) => Ok(Some((def, self.entry(def)?))),
            None => Ok(None),
        }
    }

    fn find_struct(&self, spec: &StructSpec) -> Result<Option<(Loc, Die)>> {
        for cname in spec.c_names {
            let Some(occs) = self.named.get(cname.as_bytes()) else {
                continue;
            };
            for occ in occs {
                if let Some(suffix) = spec.unit_suffix {
                    let unit_name = &self.files[occ.loc.file].unit_names[occ.loc.unit];
                    if !unit_name.ends_with(suffix.as_bytes()) {
                        continue;
                    }
                }
                match occ.kind {
                    Kind::Enum => continue,
                    Kind::Aggregate if !occ.is_def => continue,
                    Kind::Aggregate | Kind::Typedef => {
                        if let Some(found) = self.aggregate_def(occ.loc)? {
                            return Ok(Some(found));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn member_of(&self, loc: Loc, e: &Die) -> Result<Member> {
        let name = self.name_of(loc, e)?;
        let ty = self.reference(loc, e, dw::DW_AT_type);
        let byte_off = match e.attr_value(dw::DW_AT_data_member_location) {
            None => 0,
            Some(v) => member_location(&v).unwrap_or(0),
        };
        let bits = match e.attr_value(dw::DW_AT_bit_size).and_then(|v| v.udata_value()) {
            None => None,
            Some(size) => {
                if let Some(dbo) = e.attr_value(dw::DW_AT_data_bit_offset).and_then(|v| v.udata_value()) {
                    Some((byte_off * 8 + dbo, size))
                } else if let Some(bo) = e.attr_value(dw::DW_AT_bit_offset).and_then(|v| v.udata_value()) {
                    // DWARF 2-4 style: bit_offset counts from the most significant
                    // bit of a storage unit of DW_AT_byte_size bytes at data_member_location.
                    let storage = match e.attr_value(dw::DW_AT_byte_size).and_then(|v| v.udata_value()) {
                        Some(s) => s,
                        None => match ty {
                            Some(t) => self
                                .strip(t)?
                                .and_then(|(_, te)| te.attr_value(dw::DW_AT_byte_size).and_then(|v| v.udata_value()))
                                .unwrap_or(4),
                            None => 4,
                        },
                    };
                    Some((byte_off * 8 + old_bit_offset_to_lsb(storage, bo, size), size))
                } else {
                    Some((byte_off * 8, size))
                }
            }
        };
        Ok(Member { name, ty, byte_off, bits })
    }

    /// Find a member by name among the members of the aggregate at `loc`,
    /// looking through anonymous struct/union members. Offsets in the result
    /// are absolute (base added).
    fn find_member(&self, loc: Loc, name: &[u8], base: u64, depth: u32) -> Result<Option<Member>> {
        if depth > 16 {
            return Ok(None);
        }
        let mut anonymous = Vec::new();
        for child in self.children(loc)? {
            if child.tag() != dw::DW_TAG_member {
                continue;
            }
            let mut m = self.member_of(loc, &child)?;
            match m.name {
                Some(n) if n == name => {
                    m.byte_off += base;
                    if let Some((b, s)) = m.bits {
                        m.bits = Some((b + base * 8, s));
                    }
                    return Ok(Some(m));
                }
                Some(_) => {}
                None => anonymous.push(m),
            }
        }
        for m in anonymous {
            if m.bits.is_some() {
                continue; // unnamed padding bit-field
            }
            let Some(ty) = m.ty else { continue };
            if let Some((inner, _)) = self.aggregate_def(ty)? {
                if let Some(found) = self.find_member(inner, name, base + m.byte_off, depth + 1)? {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Resolve a dotted member path against the aggregate at `loc`.
    pub fn resolve_path(&self, loc: Loc, path: &str) -> Result<Option<Resolved>> {
        let mut cur = loc;
        let mut base = 0u64;
        let parts: Vec<&str> = path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let Some(m) = self.find_member(cur, part.as_bytes(), base, 0)? else {
                return Ok(None);
            };
            if i + 1 == parts.len() {
                return Ok(Some(match m.bits {
                    Some((bit, size)) => Resolved::Bits { byte: bit / 8, bit: bit % 8, size },
                    None => Resolved::Field(m.byte_off),
                }));
            }
            if m.bits.is_some() {
                return Ok(None);
            }
            let Some(ty) = m.ty else { return Ok(None) };
            let Some((inner, _)) = self.aggregate_def(ty)? else {
                return Ok(None);
            };
            cur = inner;
            base = m.byte_off;
        }
        Ok(None)
    }

    pub fn struct_layout(&self, spec: &StructSpec) -> Result<Option<StructLayout>> {
        let Some((loc, e)) = self.find_struct(spec)? else {
            return Ok(None);
        };
        let size = e.attr_value(dw::DW_AT_byte_size).and_then(|v| v.udata_value()).unwrap_or(0);
        let mut layout = StructLayout { size, fields: BTreeMap::new(), bitfields: BTreeMap::new() };
        for path in spec.paths {
            match self.resolve_path(loc, path)? {
                None => {}
                Some(Resolved::Field(off)) => {
                    layout.fields.insert(path.to_string(), off);
                }
                Some(Resolved::Bits { byte, bit, size }) => {
                    layout.bitfields.insert(path.to_string(), [byte, bit, size]);
                }
            }
        }
        Ok(Some(layout))
    }

    fn enumerators(&self, loc: Loc, e: &Die) -> Result<BTreeMap<String, i64>> {
        // Is the underlying integer type signed? (decides how DW_FORM_dataN is read)
        let signed = match self.reference(loc, e, dw::DW_AT_type) {
            Some(t) => match self.strip(t)? {
                Some((_, te)) => matches!(
                    te.attr_value(dw::DW_AT_encoding),
                    Some(AttributeValue::Encoding(dw::DW_ATE_signed | dw::DW_ATE_signed_char))
                ),
                None => false,
            },
            None => false,
        };
        let mut out = BTreeMap::new();
        for child in self.children(loc)? {
            if child.tag() != dw::DW_TAG_enumerator {
                continue;
            }
            let Some(name) = self.name_of(loc, &child)? else {
                continue;
            };
            let Some(attr) = child.attr(dw::DW_AT_const_value) else {
                continue;
            };
            let value = match attr.raw_value() {
                AttributeValue::Sdata(v) => v,
                AttributeValue::Udata(v) => v as i64,
                AttributeValue::Data1(v) => {
                    if signed {
                        v as i8 as i64
                    } else {
                        v as i64
                    }
                }
                AttributeValue::Data2(v) => {
                    if signed {
                        v as i16 as i64
                    } else {
                        v as i64
                    }
                }
                AttributeValue::Data4(v) => {
                    if signed {
                        v as i32 as i64
                    } else {
                        v as i64
                    }
                }
                AttributeValue::Data8(v) => v as i64,
                _ => continue,
            };
            out.insert(String::from_utf8_lossy(name).into_owned(), value);
        }
        Ok(out)
    }

    pub fn enum_values(&self, cname: &str) -> Result<Option<BTreeMap<String, i64>>> {
        let Some(occs) = self.named.get(cname.as_bytes()) else {
            return Ok(None);
        };
        for occ in occs {
            let target = match occ.kind {
                Kind::Aggregate => continue,
                Kind::Enum if occ.is_def => Some((occ.loc, self.entry(occ.loc)?)),
                Kind::Enum => continue,
                Kind::Typedef => self.strip(occ.loc)?,
            };
            let Some((loc, e)) = target else { continue };
            if e.tag() != dw::DW_TAG_enumeration_type || !e.has_children() || is_declaration(&e) {
                continue;
            }
            return Ok(Some(self.enumerators(loc, &e)?));
        }
        Ok(None)
    }

    /// Enumerators of anonymous enums matching the configured prefixes.
    pub fn anonymous_enumerators(&self) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for &loc in &self.anon_enums {
            let e = self.entry(loc)?;
            for (name, value) in self.enumerators(loc, &e)? {
                if spec::ANONYMOUS_ENUMERATOR_PREFIXES.iter().any(|p| name.starts_with(p)) {
                    out.entry(name).or_insert(value);
                }
            }
        }
        Ok(out)
    }

    /// Build the full layout document.
    pub fn layout(&self, label: &str, python_version: &str, generator: &str) -> Result<Layout> {
        let mut structs = BTreeMap::new();
        for spec in spec::STRUCTS {
            if let Some(l) = self.struct_layout(spec)? {
                structs.insert(spec.logical.to_string(), l);
            }
        }
        let mut enums = BTreeMap::new();
        for name in spec::ENUMS {
            if let Some(values) = self.enum_values(name)? {
                enums.insert(name.to_string(), values);
            }
        }
        let anon = self.anonymous_enumerators()?;
        if !anon.is_empty() {
            enums.insert(spec::ANONYMOUS_KEY.to_string(), anon);
        }
        let free_threaded = structs.get("PyObject").is_some_and(|o: &StructLayout| o.fields.contains_key("ob_tid"));
        Ok(Layout {
            schema: crate::layout::SCHEMA.to_string(),
            label: label.to_string(),
            python_version: python_version.to_string(),
            free_threaded,
            generator: generator.to_string(),
            sources: self.sources.clone(),
            structs,
            enums,
        })
    }

    /// Debug helper: describe the members of the struct found for `spec`.
    pub fn describe(&self, spec: &StructSpec) -> Result<Option<Vec<String>>> {
        let Some((loc, e)) = self.find_struct(spec)? else {
            return Ok(None);
        };
        let mut out = Vec::new();
        let size = e.attr_value(dw::DW_AT_byte_size).and_then(|v| v.udata_value()).unwrap_or(0);
        let unit_name = String::from_utf8_lossy(&self.files[loc.file].unit_names[loc.unit]).into_owned();
        out.push(format!("size {size} (from {} unit {unit_name})", self.sources[loc.file]));
        self.describe_members(loc, 0, "", &mut out, 0)?;
        Ok(Some(out))
    }

    fn describe_members(&self, loc: Loc, base: u64, prefix: &str, out: &mut Vec<String>, depth: u32) -> Result<()> {
        if depth > 6 {
            return Ok(());
        }
        for child in self.children(loc)? {
            if child.tag() != dw::DW_TAG_member {
                continue;
            }
            let m = self.member_of(loc, &child)?;
            let name = m.name.map(|n| String::from_utf8_lossy(n).into_owned());
            let path = match &name {
                Some(n) => format!("{prefix}{n}"),
                None => format!("{prefix}<anon>"),
            };
            match m.bits {
                Some((bit, size)) => out.push(format!(
                    "  {:>6} bit {} size {}  {path}",
                    (base * 8 + bit) / 8,
                    (base * 8 + bit) % 8,
                    size
                )),
                None => out.push(format!("  {:>6}  {path}", base + m.byte_off)),
            }
            if m.bits.is_none() {
                if let Some(ty) = m.ty {
                    if let Some((inner, _)) = self.aggregate_def(ty)? {
                        let p = match &name {
                            Some(n) => format!("{prefix}{n}."),
                            None => prefix.to_string(),
                        };
                        self.describe_members(inner, base + m.byte_off, &p, out, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn is_declaration(e: &Die) -> bool {
    matches!(e.attr_value(dw::DW_AT_declaration), Some(AttributeValue::Flag(true)))
}

/// DW_AT_data_member_location: a constant, or an expression of the form
/// `DW_OP_plus_uconst N` (DWARF 2 style).
fn member_location(v: &AttributeValue<R>) -> Option<u64> {
    if let Some(n) = v.udata_value() {
        return Some(n);
    }
    let expr = v.exprloc_value()?;
    let bytes = expr.0.slice();
    match bytes.split_first() {
        Some((&0x23, rest)) => read_uleb(rest), // DW_OP_plus_uconst
        Some((&op, _)) if (0x30..=0x4f).contains(&op) => Some(u64::from(op - 0x30)), // DW_OP_lit0..31
        Some((&0x10, rest)) => read_uleb(rest), // DW_OP_constu
        _ => None,
    }
}

fn read_uleb(bytes: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Convert a DWARF 2-4 `DW_AT_bit_offset` (bits from the most significant bit
/// of a `storage_bytes`-byte storage unit down to the most significant bit of
/// the field) to the bit offset from the storage unit's least significant bit,
/// i.e. from its first byte on a little-endian target.
pub fn old_bit_offset_to_lsb(storage_bytes: u64, bit_offset: u64, bit_size: u64) -> u64 {
    (storage_bytes * 8).saturating_sub(bit_offset + bit_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_style_bit_offsets() {
        // struct { unsigned a:1; unsigned b:3; unsigned c:2; } in a 4-byte unit,
        // as GCC's DWARF 4 describes them on a little-endian target.
        assert_eq!(old_bit_offset_to_lsb(4, 31, 1), 0);
        assert_eq!(old_bit_offset_to_lsb(4, 28, 3), 1);
        assert_eq!(old_bit_offset_to_lsb(4, 26, 2), 4);
        // A field in the second byte of a 4-byte storage unit.
        assert_eq!(old_bit_offset_to_lsb(4, 21, 3), 8);
    }

    #[test]
    fn member_location_forms() {
        let e = gimli::RunTimeEndian::Little;
        assert_eq!(member_location(&AttributeValue::Udata(24)), Some(24));
        let expr = gimli::Expression(gimli::EndianSlice::new(&[0x23, 0x90, 0x01], e));
        assert_eq!(member_location(&AttributeValue::Exprloc(expr)), Some(144));
    }
}
