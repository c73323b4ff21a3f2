//! Reading Python objects out of target memory: str, int, bytes, tuple/list, dict (including
//! split and managed instance dicts), module dicts and type names. Every length is bounded.

use super::offsets::DictKeysOffsets;
use super::PyProcess;
use crate::source::{Buf, MemError, MemResult};

/// Remembered name positions (see `store_get`), forgotten all at once past this.
const MAX_FOUND_NAMES: usize = 4096;

/// Longest string we decode (names, file names); longer ones are cut and marked with "…".
pub const MAX_STR_CHARS: u64 = 4096;
/// Most dict entries we look at (thread tables, module dicts can be large but not this large).
pub const MAX_DICT_ENTRIES: u64 = 1 << 20;

const TPFLAGS_INLINE_VALUES: u64 = 1 << 2;
const TPFLAGS_MANAGED_DICT: u64 = 1 << 4;

/// Where an object's attributes live.
#[derive(Debug, Clone, Copy)]
pub enum AttrStore {
    Dict(u64),
    /// Split values with the type's shared keys (3.11+ managed/inline values).
    Values {
        keys: u64,
        values: u64,
    },
}

fn bad(addr: u64) -> MemError {
    MemError::Unmapped(addr)
}

impl PyProcess {
    pub fn ob_type(&self, obj: u64) -> MemResult<u64> {
        self.mem().read_u64(obj.wrapping_add(self.off.ob_type))
    }

    /// `tp_name` of a type object, cached (type objects outlive a snapshot in practice).
    pub fn type_name(&self, ty: u64) -> MemResult<String> {
        self.type_text(ty).map(String::from)
    }

    /// `type_name` as record text (inline for short names: no allocation per call, which
    /// matters where every task asks, e.g. the type of the primitive it waits on).
    pub fn type_text(&self, ty: u64) -> MemResult<crate::model::Text> {
        if let Some(n) = crate::sync::lock(&self.caches.type_names).get(&ty) {
            return Ok(n.clone());
        }
        let p = self.mem().read_u64(ty.wrapping_add(self.off.tp_name))?;
        let name: crate::model::Text = self.read_cstr(p, 256)?.into();
        crate::sync::lock(&self.caches.type_names).insert(ty, name.clone());
        Ok(name)
    }

    pub fn read_cstr(&self, addr: u64, max: usize) -> MemResult<String> {
        // Read in small chunks so a string near the end of a mapping still reads.
        let mut out = Vec::new();
        let mut a = addr;
        while out.len() < max {
            let mut chunk = [0u8; 64];
            let n = if self.mem().read(a, &mut chunk).is_ok() {
                64
            } else {
                // fall back byte-wise at mapping ends
                let b = self.mem().read_u8(a)?;
                chunk[0] = b;
                1
            };
            if let Some(z) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..z]);
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&chunk[..n]);
            a += n as u64;
        }
        out.truncate(max);
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Decode a `str` object (any kind: ASCII, Latin-1, UCS-2, UCS-4; compact or not).
    pub fn read_str(&self, addr: u64) -> MemResult<String> {
        self.read_str_max(addr, MAX_STR_CHARS)
    }

    /// A str as shared text, with one read and no allocation for the common case (a compact
    /// ASCII string of at most SHORT_TEXT characters, e.g. a task name); anything else (longer,
    /// non-ASCII, at the end of a mapping) goes through `read_str`.
    pub fn read_text(&self, addr: u64) -> MemResult<crate::model::Text> {
        const SHORT_TEXT: u64 = 24;
        let o = &self.off;
        let mut b = [0u8; 128];
        let len = (o.str_ascii_size + SHORT_TEXT) as usize;
        if addr != 0 && len <= b.len() && o.str_length.max(o.str_state) + 8 <= o.str_ascii_size {
            if let Ok(()) = self.mem().read(addr, &mut b[..len]) {
                let (length, kind, compact, ascii) = self.str_header(&b);
                if kind == 1 && compact && ascii && length <= SHORT_TEXT {
                    let start = o.str_ascii_size as usize;
                    let bytes = &b[start..start + length as usize];
                    if let Ok(t) = std::str::from_utf8(bytes) {
                        if bytes.is_ascii() {
                            return Ok(t.into());
                        }
                    }
                }
            }
        }
        self.read_str(addr).map(Into::into)
    }

    /// A str's length, character width (1, 2 or 4 bytes), and its compact and ASCII flags, from
    /// a copy of its header.
    fn str_header(&self, head: &[u8]) -> (u64, u32, bool, bool) {
        let o = &self.off;
        let state = head.u32_at(o.str_state);
        (
            head.u64_at(o.str_length),
            (state >> o.str_kind.0) & ((1 << o.str_kind.1) - 1),
            (state >> o.str_compact_bit) & 1 == 1,
            (state >> o.str_ascii_bit) & 1 == 1,
        )
    }

    pub fn read_str_max(&self, addr: u64, max_chars: u64) -> MemResult<String> {
        if addr == 0 {
            return Err(bad(addr));
        }
        let o = &self.off;
        // Only the fixed header: a short string may sit at the very end of a mapping.
        let mut head = [0u8; 96];
        let head_len = (o.str_length.max(o.str_state) + 8).min(96) as usize;
        self.mem().read(addr, &mut head[..head_len])?;
        let (length, kind, compact, ascii) = self.str_header(&head);
        if !matches!(kind, 1 | 2 | 4) || length > (1 << 40) {
            return Err(bad(addr));
        }
        let data = if compact && ascii {
            addr + o.str_ascii_size
        } else if compact {
            addr + o.str_compact_size
        } else {
            self.mem().read_u64(addr + o.str_compact_size)?
        };
        let n = length.min(max_chars);
        let bytes = self.mem().read_vec(data, (n * kind as u64) as usize)?;
        let mut s: String = match kind {
            // The common case: the bytes read become the string, no per-char rebuild.
            1 if ascii && bytes.is_ascii() => String::from_utf8(bytes).unwrap_or_default(),
            1 if ascii => bytes.iter().map(|&b| if b < 0x80 { b as char } else { '\u{fffd}' }).collect(),
            1 => bytes.iter().map(|&b| b as char).collect(),
            2 => bytes
                .chunks_exact(2)
                .map(|c| char::from_u32(u16::from_le_bytes([c[0], c[1]]) as u32).unwrap_or('\u{fffd}'))
                .collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_le_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('\u{fffd}'))
                .collect(),
        };
        if length > n {
            s.push('…');
        }
        Ok(s)
    }

    /// Decode an `int` that fits in i128 (thread idents, counters). Larger values are an error.
    pub fn read_long(&self, addr: u64) -> MemResult<i128> {
        let o = &self.off;
        if let Some(t) = self.types.long {
            if self.ob_type(addr)? != t {
                return Err(bad(addr)); // None, bool or garbage: not an exact int
            }
        }
        let (ndigits, negative) = if let Some(tag_off) = o.long_lv_tag {
            let tag = self.mem().read_u64(addr + tag_off)?;
            ((tag >> 3) as usize, tag & 3 == 2)
        } else {
            let size = self.mem().read_i64(addr + o.ob_size)?;
            (size.unsigned_abs() as usize, size < 0)
        };
        if ndigits > 4 {
            return Err(bad(addr));
        }
        let mut buf = [0u8; 16];
        self.mem().read(addr + o.long_digits, &mut buf[..ndigits * 4])?;
        let mut v: i128 = 0;
        for i in (0..ndigits).rev() {
            v = (v << 30) | (buf[..].u32_at(i as u64 * 4) & 0x3fff_ffff) as i128;
        }
        Ok(if negative { -v } else { v })
    }

    /// Raw contents of a `bytes` object, bounded.
    pub fn read_bytes_obj(&self, addr: u64, max: u64) -> MemResult<Vec<u8>> {
        let size = self.mem().read_i64(addr + self.off.ob_size)?;
        if size < 0 || size as u64 > max {
            return Err(bad(addr));
        }
        self.mem().read_vec(addr + self.off.bytes_sval, size as usize)
    }

    /// Items of a tuple (inline) or list (pointer to array), bounded by `max`.
    pub fn read_sequence(&self, addr: u64, is_tuple: bool, max: u64) -> MemResult<Vec<u64>> {
        let size = self.mem().read_i64(addr + self.off.ob_size)?;
        if size < 0 || size as u64 > max {
            return Err(bad(addr));
        }
        let items =
            if is_tuple { addr + self.off.tuple_item } else { self.mem().read_u64(addr + self.off.list_item)? };
        let raw = self.mem().read_vec(items, size as usize * 8)?;
        Ok(crate::source::words(&raw).collect())
    }

    /// The first `max` items of a tuple or list, however long it is.
    pub fn read_sequence_prefix(&self, addr: u64, is_tuple: bool, max: u64) -> MemResult<Vec<u64>> {
        let size = self.mem().read_i64(addr + self.off.ob_size)?;
        if size < 0 || size > 1 << 40 {
            return Err(bad(addr));
        }
        let n = (size as u64).min(max);
        let items =
            if is_tuple { addr + self.off.tuple_item } else { self.mem().read_u64(addr + self.off.list_item)? };
        let raw = self.mem().read_vec(items, n as usize * 8)?;
        Ok(crate::source::words(&raw).collect())
    }

    /// (key, value) pairs of a dict object.
    pub fn dict_items(&self, dict: u64) -> MemResult<Vec<(u64, u64)>> {
        let mut b = [0u8; 64];
        let n = (self.off.dict_values + 8) as usize;
        self.mem().read(dict, &mut b[..n])?;
        let keys = b[..].u64_at(self.off.dict_keys);
        let values = b[..].u64_at(self.off.dict_values);
        self.keys_items(keys, if values != 0 { Some(values) } else { None })
    }

    /// Entries of a keys object; values come from the entries or from a split values array.
    pub fn keys_items(&self, keys: u64, split_values: Option<u64>) -> MemResult<Vec<(u64, u64)>> {
        let mut h = [0u8; 48];
        self.mem().read(keys, &mut h)?;
        let (entries_at, nentries, entry_size, key_off, value_off) = match self.off.dk {
            DictKeysOffsets::Sized { size, nentries, indices } => {
                let dk_size = h[..].u64_at(size);
                if dk_size == 0 || dk_size > (1 << 32) || !dk_size.is_power_of_two() {
                    return Err(bad(keys));
                }
                let width = if dk_size <= 0xff {
                    1
                } else if dk_size <= 0xffff {
                    2
                } else if dk_size <= 0xffff_ffff {
                    4
                } else {
                    8
                };
                (keys + indices + dk_size * width, h[..].u64_at(nentries), 24u64, 8u64, 16u64)
            }
            DictKeysOffsets::Log2 { log2_size, log2_index_bytes, kind, nentries, indices } => {
                let l2 = h[..].u8_at(log2_size);
                let l2i = h[..].u8_at(log2_index_bytes);
                let k = h[..].u8_at(kind);
                if l2 > 40 || l2i > 44 || k > 2 {
                    return Err(bad(keys));
                }
                let (es, ko, vo) = if k == 0 { (24, 8, 16) } else { (16, 0, 8) };
                (keys + indices + (1u64 << l2i), h[..].u64_at(nentries), es, ko, vo)
            }
        };
        if nentries > MAX_DICT_ENTRIES {
            return Err(bad(keys));
        }
        let raw = self.mem().read_vec(entries_at, (nentries * entry_size) as usize)?;
        let vals = match split_values {
            Some(v) => {
                let r = self.mem().read_vec(v + self.off.dict_values_header, nentries as usize * 8)?;
                Some(r)
            }
            None => None,
        };
        let mut out = Vec::with_capacity(nentries as usize);
        for i in 0..nentries {
            let e = &raw[(i * entry_size) as usize..((i + 1) * entry_size) as usize];
            let key = e.u64_at(key_off);
            let value = match &vals {
                Some(v) => v[..].u64_at(i * 8),
                None => e.u64_at(value_off),
            };
            if key != 0 && value != 0 {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// Look up a str key in a dict or attribute store by comparing decoded keys.
    pub fn store_get(&self, store: AttrStore, name: &str) -> MemResult<Option<u64>> {
        let (items, id) = match store {
            AttrStore::Dict(d) => (self.dict_items(d)?, d),
            AttrStore::Values { keys, values } => (self.keys_items(keys, Some(values))?, values),
        };
        // Repeated lookups (sys.modules, module globals, every sample of `top`) go straight to the
        // entry where the name was last found, if the same key object is still there: a dict
        // holds its keys alive, and strings do not change, so that key still spells `name`.
        let cache_key = (id, std::hash::BuildHasher::hash_one(&rustc_hash::FxBuildHasher, name));
        if let Some((n, i, key)) = crate::sync::lock(&self.caches.found_names).get(&cache_key) {
            if let Some(&(_, v)) = items.get(*i).filter(|(k, _)| k == key && **n == *name) {
                return Ok(Some(v));
            }
        }
        let want = name.chars().count() as u64;
        for (i, (k, v)) in items.into_iter().enumerate() {
            // Cheap length check first: most keys differ in length.
            let len = match self.mem().read_u64(k + self.off.str_length) {
                Ok(l) => l,
                Err(_) => continue,
            };
            if len != want {
                continue;
            }
            if let Ok(s) = self.read_str_max(k, want + 1) {
                if s == name {
                    let mut found = crate::sync::lock(&self.caches.found_names);
                    if found.len() >= MAX_FOUND_NAMES {
                        found.clear(); // bounded: instance attributes of many objects pass here too
                    }
                    found.insert(cache_key, (name.into(), i, k));
                    return Ok(Some(v));
                }
            }
        }
        Ok(None)
    }

    pub fn dict_get(&self, dict: u64, name: &str) -> MemResult<Option<u64>> {
        self.store_get(AttrStore::Dict(dict), name)
    }

    /// A module's `__dict__`.
    pub fn module_dict(&self, module: u64) -> MemResult<u64> {
        self.mem().read_u64(module + self.off.module_dict)
    }

    /// Where an instance keeps its attributes, per version: tp_dictoffset (≤3.10), managed dict or
    /// values (3.11, 3.12 tagged), managed dict or inline values (3.13+).
    pub fn instance_attrs(&self, obj: u64) -> MemResult<Option<AttrStore>> {
        let o = &self.off;
        let ty = self.ob_type(obj)?;
        let flags = self.mem().read_u64(ty + o.tp_flags)?;
        let v = self.version;
        let nonzero = |x: u64| if x != 0 { Some(x) } else { None };
        let cached_keys = || -> MemResult<Option<u64>> {
            match o.ht_cached_keys {
                Some(off) => Ok(nonzero(self.mem().read_u64(ty + off)?)),
                None => Ok(None),
            }
        };
        if v.at_least(3, 11) && flags & TPFLAGS_MANAGED_DICT != 0 {
            let slot = if self.free_threaded { obj - 8 } else { obj - 24 };
            let word = self.mem().read_u64(slot)?;
            if v.is(3, 11) {
                if word != 0 {
                    return Ok(Some(AttrStore::Dict(word)));
                }
                let values = self.mem().read_u64(obj - 32)?;
                return Ok(match (cached_keys()?, nonzero(values)) {
                    (Some(keys), Some(values)) => Some(AttrStore::Values { keys, values }),
                    _ => None,
                });
            }
            if v.is(3, 12) {
                if word & 1 == 1 {
                    let values = word.wrapping_add(1);
                    return Ok(cached_keys()?.map(|keys| AttrStore::Values { keys, values }));
                }
                return Ok(nonzero(word).map(AttrStore::Dict));
            }
            if word != 0 {
                return Ok(Some(AttrStore::Dict(word)));
            }
            if flags & TPFLAGS_INLINE_VALUES != 0 {
                let basic = self.mem().read_u64(ty + o.tp_basicsize)?;
                let values = obj + basic;
                let valid = self.mem().read_u8(values + 3)?;
                if valid == 0 {
                    return Ok(None);
                }
                return Ok(cached_keys()?.map(|keys| AttrStore::Values { keys, values }));
            }
            return Ok(None);
        }
        let dictoffset = self.mem().read_i64(ty + o.tp_dictoffset)?;
        if dictoffset > 0 && dictoffset < 1 << 20 {
            let d = self.mem().read_u64(obj + dictoffset as u64)?;
            return Ok(nonzero(d).map(AttrStore::Dict));
        }
        Ok(None)
    }

    /// `obj.name` for an instance attribute stored in its dict.
    pub fn getattr(&self, obj: u64, name: &str) -> MemResult<Option<u64>> {
        match self.instance_attrs(obj)? {
            Some(store) => self.store_get(store, name),
            None => Ok(None),
        }
    }

    /// `sys.modules[name]` of an interpreter.
    pub fn find_module(&self, interp: u64, name: &str) -> MemResult<Option<u64>> {
        let modules = self.mem().read_u64(interp + self.off.interp_modules)?;
        if modules == 0 {
            return Ok(None);
        }
        self.dict_get(modules, name)
    }
}
