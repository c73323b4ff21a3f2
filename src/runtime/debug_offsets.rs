//! CPython 3.13+ `_Py_DebugOffsets`: the runtime's own table of struct offsets, read from the
//! start of `_PyRuntime`. The field order per minor version is data here; values come from the target.

use crate::source::{Buf, MemResult, Memory};
use std::collections::HashMap;

pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// Field names in declaration order, per section, for a minor version. Each is a u64.
fn sections(minor: u32) -> Option<Vec<(&'static str, &'static [&'static str])>> {
    let runtime: &[&str] = &["size", "finalizing", "interpreters_head"];
    let interp_313: &[&str] = &[
        "size",
        "id",
        "next",
        "threads_head",
        "gc",
        "imports_modules",
        "sysdict",
        "builtins",
        "ceval_gil",
        "gil_runtime_state",
        "gil_runtime_state_enabled",
        "gil_runtime_state_locked",
        "gil_runtime_state_holder",
    ];
    let interp_314: &[&str] = &[
        "size",
        "id",
        "next",
        "threads_head",
        "threads_main",
        "gc",
        "imports_modules",
        "sysdict",
        "builtins",
        "ceval_gil",
        "gil_runtime_state",
        "gil_runtime_state_enabled",
        "gil_runtime_state_locked",
        "gil_runtime_state_holder",
        "code_object_generation",
        "tlbc_generation",
    ];
    let thread_313: &[&str] = &[
        "size",
        "prev",
        "next",
        "interp",
        "current_frame",
        "thread_id",
        "native_thread_id",
        "datastack_chunk",
        "status",
    ];
    let thread_315: &[&str] = &[
        "size",
        "prev",
        "next",
        "interp",
        "current_frame",
        "base_frame",
        "last_profiled_frame",
        "last_profiled_frame_seq",
        "thread_id",
        "native_thread_id",
        "datastack_chunk",
        "status",
        "holds_gil",
        "gil_requested",
        "current_exception",
        "exc_state",
    ];
    let frame_313: &[&str] = &["size", "previous", "executable", "instr_ptr", "localsplus", "owner"];
    let frame_314: &[&str] =
        &["size", "previous", "executable", "instr_ptr", "localsplus", "owner", "stackpointer", "tlbc_index"];
    let code_313: &[&str] = &[
        "size",
        "filename",
        "name",
        "qualname",
        "linetable",
        "firstlineno",
        "argcount",
        "localsplusnames",
        "localspluskinds",
        "co_code_adaptive",
    ];
    let code_314: &[&str] = &[
        "size",
        "filename",
        "name",
        "qualname",
        "linetable",
        "firstlineno",
        "argcount",
        "localsplusnames",
        "localspluskinds",
        "co_code_adaptive",
        "co_tlbc",
    ];
    let pyobject: &[&str] = &["size", "ob_type"];
    let type_313: &[&str] = &["size", "tp_name", "tp_repr", "tp_flags"];
    let type_315: &[&str] = &["size", "tp_name", "tp_repr", "tp_flags", "tp_basicsize", "tp_dictoffset"];
    let seq: &[&str] = &["size", "ob_item", "ob_size"];
    let set: &[&str] = &["size", "used", "table", "mask"];
    let dict: &[&str] = &["size", "ma_keys", "ma_values"];
    let float: &[&str] = &["size", "ob_fval"];
    let long: &[&str] = &["size", "lv_tag", "ob_digit"];
    let bytes: &[&str] = &["size", "ob_size", "ob_sval"];
    let unicode_313: &[&str] = &["size", "state", "length", "asciiobject_size"];
    let unicode_315: &[&str] = &["size", "state", "length", "asciiobject_size", "compactunicodeobject_size"];
    let gc_313: &[&str] = &["size", "collecting"];
    let gc_315: &[&str] = &["size", "collecting", "frame", "generation_stats_size", "generation_stats"];
    let gen: &[&str] = &["size", "gi_name", "gi_iframe", "gi_frame_state"];
    let llist: &[&str] = &["next", "prev"];
    let debugger: &[&str] = &[
        "eval_breaker",
        "remote_debugger_support",
        "remote_debugging_enabled",
        "debugger_pending_call",
        "debugger_script_path",
        "debugger_script_path_size",
    ];
    Some(match minor {
        13 => vec![
            ("runtime_state", runtime),
            ("interpreter_state", interp_313),
            ("thread_state", thread_313),
            ("interpreter_frame", frame_313),
            ("code_object", code_313),
            ("pyobject", pyobject),
            ("type_object", type_313),
            ("tuple_object", seq),
            ("list_object", seq),
            ("dict_object", dict),
            ("float_object", float),
            ("long_object", long),
            ("bytes_object", bytes),
            ("unicode_object", unicode_313),
            ("gc", gc_313),
        ],
        14 => vec![
            ("runtime_state", runtime),
            ("interpreter_state", interp_314),
            ("thread_state", thread_313),
            ("interpreter_frame", frame_314),
            ("code_object", code_314),
            ("pyobject", pyobject),
            ("type_object", type_313),
            ("tuple_object", seq),
            ("list_object", seq),
            ("set_object", set),
            ("dict_object", dict),
            ("float_object", float),
            ("long_object", long),
            ("bytes_object", bytes),
            ("unicode_object", unicode_313),
            ("gc", gc_313),
            ("gen_object", gen),
            ("llist_node", llist),
            ("debugger_support", debugger),
        ],
        15 => vec![
            ("runtime_state", runtime),
            ("interpreter_state", interp_314),
            ("thread_state", thread_315),
            ("err_stackitem", &["exc_value"]),
            ("interpreter_frame", frame_314),
            ("code_object", code_314),
            ("pyobject", pyobject),
            ("type_object", type_315),
            ("heap_type_object", &["size", "ht_cached_keys"]),
            ("tuple_object", seq),
            ("list_object", seq),
            ("set_object", set),
            ("dict_object", dict),
            ("float_object", float),
            ("long_object", long),
            ("bytes_object", bytes),
            ("unicode_object", unicode_315),
            ("gc", gc_315),
            ("gen_object", gen),
            ("llist_node", llist),
            ("debugger_support", debugger),
        ],
        _ => return None,
    })
}

/// Parsed `_Py_DebugOffsets`.
#[derive(Debug, Clone)]
pub struct DebugOffsets {
    pub version_hex: u64,
    pub free_threaded: bool,
    pub values: HashMap<String, u64>,
}

impl DebugOffsets {
    pub fn get(&self, key: &str) -> Option<u64> {
        self.values.get(key).copied()
    }
}

/// Total size in bytes of the table for a minor version.
pub fn table_size(minor: u32) -> Option<usize> {
    sections(minor).map(|s| 24 + 8 * s.iter().map(|(_, f)| f.len()).sum::<usize>())
}

/// Read the cookie and version only. `None` when there is no debug table (before 3.13).
pub fn read_header(mem: &dyn Memory, runtime: u64) -> MemResult<Option<(u64, bool)>> {
    let mut head = [0u8; 24];
    mem.read(runtime, &mut head)?;
    if &head[..8] != COOKIE {
        return Ok(None);
    }
    let version = head[..].u64_at(8);
    let ft = head[..].u64_at(16) != 0;
    Ok(Some((version, ft)))
}

/// Parse the table from bytes already read from the target.
pub fn parse(bytes: &[u8], minor: u32) -> Option<DebugOffsets> {
    if bytes.len() < 24 || &bytes[..8] != COOKIE {
        return None;
    }
    let version_hex = u64::from_le_bytes(bytes[8..16].try_into().ok()?);
    let free_threaded = u64::from_le_bytes(bytes[16..24].try_into().ok()?) != 0;
    let mut values = HashMap::new();
    let mut off = 24;
    for (section, fields) in sections(minor)? {
        for f in fields {
            let v = u64::from_le_bytes(bytes.get(off..off + 8)?.try_into().ok()?);
            values.insert(format!("{section}.{f}"), v);
            off += 8;
        }
    }
    Some(DebugOffsets { version_hex, free_threaded, values })
}

pub fn read(mem: &dyn Memory, runtime: u64, minor: u32) -> MemResult<Option<DebugOffsets>> {
    let Some(size) = table_size(minor) else { return Ok(None) };
    let bytes = mem.read_vec(runtime, size)?;
    Ok(parse(&bytes, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sizes_match_cpython() {
        assert_eq!(table_size(13), Some(584));
        assert_eq!(table_size(14), Some(760));
        assert_eq!(table_size(15), Some(888));
        assert_eq!(table_size(12), None);
    }

    #[test]
    fn parse_places_sections_where_cpython_does() {
        // 3.15: thread_state starts at 176, code_object at 376, gen_object at 792 (measured on 3.15.2).
        let mut b = vec![0u8; 888];
        b[..8].copy_from_slice(COOKIE);
        b[8..16].copy_from_slice(&0x030f02f0u64.to_le_bytes());
        b[176 + 8 * 8..176 + 9 * 8].copy_from_slice(&176u64.to_le_bytes()); // thread_state.thread_id
        b[376 + 8..376 + 16].copy_from_slice(&112u64.to_le_bytes()); // code_object.filename
        b[792 + 16..792 + 24].copy_from_slice(&72u64.to_le_bytes()); // gen_object.gi_iframe
        let d = parse(&b, 15).unwrap();
        assert_eq!(d.get("thread_state.thread_id"), Some(176));
        assert_eq!(d.get("code_object.filename"), Some(112));
        assert_eq!(d.get("gen_object.gi_iframe"), Some(72));
        assert!(!d.free_threaded);
        assert!(parse(&b[..100], 15).is_none());
    }
}
