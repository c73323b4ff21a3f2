//! The JSON document written to python_layouts/*.json, and comparison of two
//! documents for `check`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const SCHEMA: &str = "taskspy-layout/1";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub schema: String,
    pub label: String,
    pub python_version: String,
    pub free_threaded: bool,
    pub generator: String,
    pub sources: Vec<String>,
    pub structs: BTreeMap<String, StructLayout>,
    pub enums: BTreeMap<String, BTreeMap<String, i64>>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StructLayout {
    pub size: u64,
    pub fields: BTreeMap<String, u64>,
    /// path -> [byte offset, bit offset within that byte from the LSB, size in bits]
    pub bitfields: BTreeMap<String, [u64; 3]>,
}

impl Layout {
    /// Pretty-printed (2-space indent) JSON with a trailing newline.
    pub fn to_json(&self) -> Result<String> {
        let mut s = serde_json::to_string_pretty(self)?;
        s.push('\n');
        Ok(s)
    }

    pub fn read(path: &std::path::Path) -> Result<Layout> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn field_count(&self) -> usize {
        self.structs.values().map(|s| s.fields.len() + s.bitfields.len()).sum()
    }
}

/// Differences that matter to the runtime reader: schema, free_threaded,
/// structs, enums. (`label`, `python_version`, `generator` and `sources` are
/// descriptive and compared only as notes.)
pub fn diff(committed: &Layout, fresh: &Layout) -> (Vec<String>, Vec<String>) {
    let mut d = Vec::new();
    let mut notes = Vec::new();
    if committed.schema != fresh.schema {
        d.push(format!("schema: committed {:?}, regenerated {:?}", committed.schema, fresh.schema));
    }
    if committed.free_threaded != fresh.free_threaded {
        d.push(format!("free_threaded: committed {}, regenerated {}", committed.free_threaded, fresh.free_threaded));
    }
    if committed.sources != fresh.sources {
        notes.push(format!("sources: committed {:?}, regenerated {:?}", committed.sources, fresh.sources));
    }
    if committed.generator != fresh.generator {
        notes.push(format!("generator: committed {:?}, regenerated {:?}", committed.generator, fresh.generator));
    }
    for (name, c) in &committed.structs {
        let Some(f) = fresh.structs.get(name) else {
            d.push(format!("struct {name}: only in committed file"));
            continue;
        };
        if c.size != f.size {
            d.push(format!("{name} size: committed {}, regenerated {}", c.size, f.size));
        }
        diff_maps(&mut d, name, &c.fields, &f.fields, |v| v.to_string());
        diff_maps(&mut d, name, &c.bitfields, &f.bitfields, |v| format!("{v:?}"));
    }
    for name in fresh.structs.keys() {
        if !committed.structs.contains_key(name) {
            d.push(format!("struct {name}: only in regenerated layout"));
        }
    }
    for (name, c) in &committed.enums {
        let Some(f) = fresh.enums.get(name) else {
            d.push(format!("enum {name}: only in committed file"));
            continue;
        };
        diff_maps(&mut d, &format!("enum {name}"), c, f, |v| v.to_string());
    }
    for name in fresh.enums.keys() {
        if !committed.enums.contains_key(name) {
            d.push(format!("enum {name}: only in regenerated layout"));
        }
    }
    (d, notes)
}

fn diff_maps<V: PartialEq>(
    out: &mut Vec<String>,
    owner: &str,
    committed: &BTreeMap<String, V>,
    fresh: &BTreeMap<String, V>,
    show: impl Fn(&V) -> String,
) {
    for (k, c) in committed {
        match fresh.get(k) {
            None => out.push(format!("{owner}.{k}: committed {}, absent when regenerated", show(c))),
            Some(f) if f != c => out.push(format!("{owner}.{k}: committed {}, regenerated {}", show(c), show(f))),
            Some(_) => {}
        }
    }
    for (k, f) in fresh {
        if !committed.contains_key(k) {
            out.push(format!("{owner}.{k}: absent in committed file, regenerated {}", show(f)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Layout {
        let mut fields = BTreeMap::new();
        fields.insert("next".to_string(), 8);
        let mut bitfields = BTreeMap::new();
        bitfields.insert("_status.active".to_string(), [32, 4, 1]);
        let mut structs = BTreeMap::new();
        structs.insert("PyThreadState".to_string(), StructLayout { size: 264, fields, bitfields });
        Layout {
            schema: SCHEMA.into(),
            label: "3.12".into(),
            python_version: "3.12.1".into(),
            free_threaded: false,
            generator: "layoutgen dwarf".into(),
            sources: vec!["libpython3.12.so.1.0".into()],
            structs,
            enums: BTreeMap::new(),
        }
    }

    #[test]
    fn json_round_trip_and_shape() {
        let l = sample();
        let text = l.to_json().unwrap();
        assert!(text.starts_with("{\n  \"schema\": \"taskspy-layout/1\",\n  \"label\": \"3.12\""));
        assert!(text.ends_with("}\n"));
        let back: Layout = serde_json::from_str(&text).unwrap();
        assert_eq!(back, l);
    }

    #[test]
    fn diff_reports_changes() {
        let a = sample();
        let mut b = sample();
        assert!(diff(&a, &b).0.is_empty());
        b.structs.get_mut("PyThreadState").unwrap().fields.insert("next".into(), 16);
        b.structs.get_mut("PyThreadState").unwrap().bitfields.clear();
        let (d, _) = diff(&a, &b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("PyThreadState.next: committed 8, regenerated 16"));
    }
}
