//! The per-version struct layout data files (`python_layouts/*.json`, written by layoutgen from
//! DWARF or headers) and lookup of a file for a Python version.

use serde::Deserialize;
use std::collections::HashMap;

include!(concat!(env!("OUT_DIR"), "/layout_files.rs"));

#[derive(Debug, Clone, Deserialize, Default)]
pub struct StructLayout {
    pub size: u64,
    #[serde(default)]
    pub fields: HashMap<String, u64>,
    /// path -> [byte offset, bit offset in that byte, bit size]
    #[serde(default)]
    pub bitfields: HashMap<String, [u64; 3]>,
}

#[derive(Debug, Clone, Deserialize, Default)]
pub struct LayoutFile {
    pub schema: String,
    pub label: String,
    pub python_version: String,
    #[serde(default)]
    pub free_threaded: bool,
    #[serde(default)]
    pub generator: String,
    #[serde(default)]
    pub structs: HashMap<String, StructLayout>,
    #[serde(default)]
    pub enums: HashMap<String, HashMap<String, i64>>,
}

impl LayoutFile {
    pub fn parse(text: &str) -> Result<LayoutFile, String> {
        let f: LayoutFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if f.schema != "taskspy-layout/1" {
            return Err(format!("unknown layout schema {:?}", f.schema));
        }
        Ok(f)
    }
    pub fn field(&self, st: &str, field: &str) -> Option<u64> {
        self.structs.get(st)?.fields.get(field).copied()
    }
    pub fn size(&self, st: &str) -> Option<u64> {
        self.structs.get(st).map(|s| s.size)
    }
    pub fn bitfield(&self, st: &str, field: &str) -> Option<[u64; 3]> {
        self.structs.get(st)?.bitfields.get(field).copied()
    }
    pub fn enum_value(&self, name: &str) -> Option<i64> {
        self.enums.values().find_map(|e| e.get(name).copied())
    }
}

/// The embedded layout for `3.X` (or `3.Xt` for free-threaded builds).
pub fn embedded(minor: u32, free_threaded: bool) -> Option<LayoutFile> {
    let label = format!("3.{minor}{}", if free_threaded { "t" } else { "" });
    let name = format!("{label}.json");
    LAYOUT_FILES.iter().find(|(n, _)| *n == name).and_then(|(_, text)| LayoutFile::parse(text).ok())
}

/// Labels of all embedded layouts, for error messages and `--help`.
pub fn embedded_labels() -> Vec<String> {
    LAYOUT_FILES.iter().map(|(n, _)| n.trim_end_matches(".json").to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_layout_parses() {
        for (name, text) in LAYOUT_FILES {
            let f = LayoutFile::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(format!("{}.json", f.label), *name);
        }
    }
}
