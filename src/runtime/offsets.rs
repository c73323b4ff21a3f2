//! Typed offsets for one target, resolved once from the target's `_Py_DebugOffsets` (3.13+) and
//! the version's layout file. Walkers read only this struct; version facts live in the data.

use super::debug_offsets::DebugOffsets;
use super::layout_file::LayoutFile;
use super::version::PyVersion;

/// How the frame chain is represented.
#[derive(Debug, Clone)]
pub enum FrameOffsets {
    /// 3.8–3.10: heap `PyFrameObject`s linked by `f_back`.
    Object { back: u64, code: u64, lasti: u64, size: u64 },
    /// 3.11+: `_PyInterpreterFrame`s linked by `previous`.
    Interp {
        code: u64,
        previous: u64,
        instr: u64,
        owner: u64,
        localsplus: u64,
        stack: Option<u64>,
        tlbc_index: Option<u64>,
        size: u64,
        /// owner values that mark C-stack/interpreter entry frames (skipped, not Python code)
        skip_owners: Vec<u8>,
        generator_owner: u8,
        /// 3.14+: code and stack slots are `_PyStackRef`s (low bits are tags).
        tagged: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Offsets {
    pub version: PyVersion,
    pub free_threaded: bool,
    // _PyRuntimeState
    pub rt_interpreters_head: u64,
    /// 3.8–3.11: `gilstate.tstate_current`
    pub rt_tstate_current: Option<u64>,
    /// 3.8–3.11: the GIL struct embedded in the runtime
    pub rt_gil: Option<u64>,
    // PyInterpreterState
    pub interp_next: u64,
    pub interp_threads_head: u64,
    pub interp_id: u64,
    pub interp_modules: u64,
    /// 3.12+: pointer to the GIL used by this interpreter
    pub interp_ceval_gil: Option<u64>,
    // struct _gil_runtime_state
    pub gil_locked: u64,
    pub gil_last_holder: u64,
    pub gil_switch_number: Option<u64>,
    pub gil_enabled: Option<u64>,
    pub gil_size: u64,
    // PyThreadState
    pub ts_next: u64,
    pub ts_interp: u64,
    pub ts_thread_id: u64,
    pub ts_native_thread_id: Option<u64>,
    pub ts_dict: Option<u64>,
    pub ts_frame: Option<u64>,
    pub ts_cframe: Option<u64>,
    pub cframe_current_frame: Option<u64>,
    pub ts_current_frame: Option<u64>,
    pub ts_status: Option<u64>,
    pub status_active_bit: Option<u8>,
    pub status_holds_gil_bit: Option<u8>,
    pub ts_holds_gil: Option<u64>,
    pub ts_gil_requested: Option<u64>,
    pub ts_state: Option<u64>,
    pub ts_read_size: u64,
    pub frame: FrameOffsets,
    // PyCodeObject
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: Option<u64>,
    pub code_firstlineno: u64,
    pub code_linetable: u64,
    pub code_code: Option<u64>,
    pub code_adaptive: Option<u64>,
    pub code_firsttraceable: Option<u64>,
    pub code_tlbc: Option<u64>,
    /// 3.11+: locals+cells+frees count (the value stack starts after them)
    pub code_nlocalsplus: Option<u64>,
    pub code_stacksize: Option<u64>,
    pub code_read_size: u64,
    // objects
    pub ob_type: u64,
    pub ob_size: u64,
    pub tp_name: u64,
    pub tp_flags: u64,
    pub tp_dictoffset: u64,
    pub tp_basicsize: u64,
    pub ht_cached_keys: Option<u64>,
    pub str_length: u64,
    pub str_state: u64,
    pub str_ascii_size: u64,
    pub str_compact_size: u64,
    /// (bit offset within the 32-bit state word, bit width)
    pub str_kind: (u32, u32),
    pub str_compact_bit: u32,
    pub str_ascii_bit: u32,
    pub long_digits: u64,
    pub long_lv_tag: Option<u64>,
    pub bytes_sval: u64,
    pub tuple_item: u64,
    pub list_item: u64,
    pub dict_keys: u64,
    pub dict_values: u64,
    pub dk: DictKeysOffsets,
    /// 3.13+: `PyDictValues` has an 8-byte header before `values[]`
    pub dict_values_header: u64,
    pub module_dict: u64,
    /// Extra bytes in every object header (16 in free-threaded builds, else 0).
    pub head: u64,
    // Callables: bound Python methods, builtin methods, functions.
    pub method_func: u64,
    pub method_self: u64,
    pub cfunction_ml: u64,
    pub cfunction_self: u64,
    pub func_name: u64,
    pub tp_dict: u64,
    /// Free-threaded builds (and the stop-the-world state every 3.13+ build has).
    pub ft: FtOffsets,
}

/// Offsets for what free-threaded builds add: why the GIL is on, stop-the-world pauses.
/// `None` where the version's layout data lacks the field (older versions, GIL builds).
#[derive(Debug, Clone, Default)]
pub struct FtOffsets {
    /// `PyInterpreterState.config.enable_gil` (-1 default, 0 off, 1 on: `PYTHON_GIL` / `-X gil`).
    pub config_enable_gil: Option<u64>,
    /// `PyInterpreterState.stoptheworld.{requested, world_stopped, requester}`.
    pub interp_stw: Option<StwOffsets>,
    /// `_PyRuntimeState.stoptheworld.*` (global pauses: fork, `sys._current_frames`...).
    pub runtime_stw: Option<StwOffsets>,
    /// `PyModuleObject.md_def` and `md_gil` (the module's `Py_mod_gil` setting).
    pub module_def: Option<u64>,
    pub module_gil: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct StwOffsets {
    pub requested: u64,
    pub world_stopped: u64,
    pub requester: u64,
}

#[derive(Debug, Clone)]
pub enum DictKeysOffsets {
    /// 3.8–3.10: `dk_size` slots, entries after the index table
    Sized { size: u64, nentries: u64, indices: u64 },
    /// 3.11+: log2 sizes, a kind byte, unicode entries without hash
    Log2 { log2_size: u64, log2_index_bytes: u64, kind: u64, nentries: u64, indices: u64 },
}

/// Lookup helper over both sources. Debug offsets win where they exist.
struct Src<'a> {
    file: Option<&'a LayoutFile>,
    dbg: Option<&'a DebugOffsets>,
    missing: Vec<String>,
}

impl<'a> Src<'a> {
    fn d(&self, key: &str) -> Option<u64> {
        self.dbg.and_then(|d| d.get(key))
    }
    fn f(&self, st: &str, fields: &[&str]) -> Option<u64> {
        let file = self.file?;
        fields.iter().find_map(|f| file.field(st, f))
    }
    /// Debug offset if present, else layout file.
    fn df(&self, key: &str, st: &str, fields: &[&str]) -> Option<u64> {
        self.d(key).or_else(|| self.f(st, fields))
    }
    fn req(&mut self, v: Option<u64>, what: &str) -> u64 {
        v.unwrap_or_else(|| {
            self.missing.push(what.to_string());
            0
        })
    }
    fn size(&self, st: &str) -> Option<u64> {
        self.file.and_then(|f| f.size(st))
    }
    fn bit(&self, st: &str, field: &str) -> Option<[u64; 3]> {
        self.file.and_then(|f| f.bitfield(st, field))
    }
    fn enum_value(&self, name: &str) -> Option<i64> {
        self.file.and_then(|f| f.enum_value(name))
    }
}

impl Offsets {
    /// Resolve every offset; `Err` lists what the data lacks (an unsupported or incomplete layout).
    pub fn resolve(
        version: PyVersion,
        free_threaded: bool,
        file: Option<&LayoutFile>,
        dbg: Option<&DebugOffsets>,
    ) -> Result<Offsets, Vec<String>> {
        let mut s = Src { file, dbg, missing: Vec::new() };
        let v = version;
        let head = if free_threaded { 16 } else { 0 }; // PyObject_HEAD grows by 16 in free-threaded builds

        let rt_interpreters_head = s.df("runtime_state.interpreters_head", "_PyRuntimeState", &["interpreters.head"]);
        let rt_interpreters_head = s.req(rt_interpreters_head, "_PyRuntimeState.interpreters.head");
        let (rt_tstate_current, rt_gil) = if v.at_least(3, 12) {
            (None, None)
        } else {
            let a = s.f("_PyRuntimeState", &["gilstate.tstate_current"]);
            let b = s.f("_PyRuntimeState", &["ceval.gil"]);
            (Some(s.req(a, "gilstate.tstate_current")), Some(s.req(b, "_PyRuntimeState.ceval.gil")))
        };

        let interp_next = s.df("interpreter_state.next", "PyInterpreterState", &["next"]);
        let interp_next = s.req(interp_next, "PyInterpreterState.next");
        let th = s.df("interpreter_state.threads_head", "PyInterpreterState", &["threads.head", "tstate_head"]);
        let interp_threads_head = s.req(th, "PyInterpreterState.threads.head");
        let id = s.df("interpreter_state.id", "PyInterpreterState", &["id"]);
        let interp_id = s.req(id, "PyInterpreterState.id");
        let m = s.df("interpreter_state.imports_modules", "PyInterpreterState", &["imports.modules", "modules"]);
        let interp_modules = s.req(m, "PyInterpreterState.modules");
        let interp_ceval_gil = if v.at_least(3, 12) {
            s.df("interpreter_state.ceval_gil", "PyInterpreterState", &["ceval.gil"])
        } else {
            None
        };
        if v.at_least(3, 12) && interp_ceval_gil.is_none() {
            s.missing.push("PyInterpreterState.ceval.gil".into());
        }

        // GIL struct fields: the debug table gives them relative to the interpreter; convert.
        let (gil_locked, gil_last_holder) = match (
            s.d("interpreter_state.gil_runtime_state"),
            s.d("interpreter_state.gil_runtime_state_locked"),
            s.d("interpreter_state.gil_runtime_state_holder"),
        ) {
            (Some(base), Some(l), Some(h)) if l >= base && h >= base => (Some(l - base), Some(h - base)),
            _ => (s.f("_gil_runtime_state", &["locked"]), s.f("_gil_runtime_state", &["last_holder"])),
        };
        let gil_locked = gil_locked.unwrap_or(16 + if free_threaded { 8 } else { 0 });
        let gil_last_holder = gil_last_holder.unwrap_or(8 + if free_threaded { 8 } else { 0 });
        let gil_switch_number =
            s.f("_gil_runtime_state", &["switch_number"]).or(Some(24 + if free_threaded { 8 } else { 0 }));
        let gil_enabled = if free_threaded {
            s.d("interpreter_state.gil_runtime_state_enabled").or(s.f("_gil_runtime_state", &["enabled"])).or(Some(0))
        } else {
            None
        };
        let gil_size = s.size("_gil_runtime_state").unwrap_or(208);

        let ts_next = s.df("thread_state.next", "PyThreadState", &["next"]);
        let ts_next = s.req(ts_next, "PyThreadState.next");
        let ts_interp = s.df("thread_state.interp", "PyThreadState", &["interp"]);
        let ts_interp = s.req(ts_interp, "PyThreadState.interp");
        let tid = s.df("thread_state.thread_id", "PyThreadState", &["thread_id"]);
        let ts_thread_id = s.req(tid, "PyThreadState.thread_id");
        let ts_native_thread_id = s.df("thread_state.native_thread_id", "PyThreadState", &["native_thread_id"]);
        let ts_dict = s.f("PyThreadState", &["dict"]);
        let (ts_frame, ts_cframe, cframe_current_frame, ts_current_frame) = if v.at_least(3, 13) {
            let c = s.df("thread_state.current_frame", "PyThreadState", &["current_frame"]);
            (None, None, None, Some(s.req(c, "PyThreadState.current_frame")))
        } else if v.at_least(3, 11) {
            let a = s.f("PyThreadState", &["cframe"]);
            let b = s.f("_PyCFrame", &["current_frame"]);
            (None, Some(s.req(a, "PyThreadState.cframe")), Some(s.req(b, "_PyCFrame.current_frame")), None)
        } else {
            let a = s.f("PyThreadState", &["frame"]);
            (Some(s.req(a, "PyThreadState.frame")), None, None, None)
        };
        let ts_status =
            if v.at_least(3, 12) { s.df("thread_state.status", "PyThreadState", &["_status"]) } else { None };
        let status_bit = |s: &Src, name: &str| -> Option<u8> {
            let b = s.bit("PyThreadState", &format!("_status.{name}"))?;
            let base = ts_status?;
            Some(((b[0].checked_sub(base)?) * 8 + b[1]) as u8)
        };
        // Bit positions from the data; defaults from CPython's headers when the data lacks bitfields.
        let status_active_bit = if v.at_least(3, 12) { status_bit(&s, "active").or(Some(4)) } else { None };
        let status_holds_gil_bit = if v.is(3, 13) { status_bit(&s, "holds_gil").or(Some(5)) } else { None };
        let ts_holds_gil = if v.at_least(3, 14) {
            s.d("thread_state.holds_gil").or(s.f("PyThreadState", &["holds_gil"])).or(ts_status.map(|x| x + 4))
        } else {
            None
        };
        let ts_gil_requested = s.df("thread_state.gil_requested", "PyThreadState", &["gil_requested"]);
        let ts_state = if v.at_least(3, 13) { s.f("PyThreadState", &["state"]) } else { None };

        let frame = if v.at_least(3, 11) {
            let code = s.df("interpreter_frame.executable", "_PyInterpreterFrame", &["f_executable", "f_code"]);
            let previous = s.df("interpreter_frame.previous", "_PyInterpreterFrame", &["previous"]);
            let instr = s.df("interpreter_frame.instr_ptr", "_PyInterpreterFrame", &["instr_ptr", "prev_instr"]);
            let owner = s.df("interpreter_frame.owner", "_PyInterpreterFrame", &["owner"]);
            let localsplus = s.df("interpreter_frame.localsplus", "_PyInterpreterFrame", &["localsplus"]);
            let stack = s.df("interpreter_frame.stackpointer", "_PyInterpreterFrame", &["stackpointer", "stacktop"]);
            let tlbc_index =
                s.d("interpreter_frame.tlbc_index").filter(|x| *x != 0).or(s.f("_PyInterpreterFrame", &["tlbc_index"]));
            let size = s.d("interpreter_frame.size").or(s.size("_PyInterpreterFrame")).unwrap_or(80);
            let cstack = s.enum_value("FRAME_OWNED_BY_CSTACK");
            let interp_owner = s.enum_value("FRAME_OWNED_BY_INTERPRETER");
            let gen_owner = s.enum_value("FRAME_OWNED_BY_GENERATOR").unwrap_or(1) as u8;
            let mut skip: Vec<u8> = [cstack, interp_owner].iter().flatten().map(|x| *x as u8).collect();
            if skip.is_empty() {
                // Defaults from CPython's headers: CSTACK 3 (3.12–3.13); INTERPRETER 3, CSTACK 4 (3.14);
                // INTERPRETER 3 (3.15+). 3.11 has no entry frames.
                skip = match (v.major, v.minor) {
                    (3, 11) => vec![],
                    (3, 12) | (3, 13) => vec![3],
                    (3, 14) => vec![3, 4],
                    _ => vec![3],
                };
            }
            FrameOffsets::Interp {
                code: s.req(code, "_PyInterpreterFrame.f_executable"),
                previous: s.req(previous, "_PyInterpreterFrame.previous"),
                instr: s.req(instr, "_PyInterpreterFrame.instr_ptr"),
                owner: s.req(owner, "_PyInterpreterFrame.owner"),
                localsplus: s.req(localsplus, "_PyInterpreterFrame.localsplus"),
                stack,
                tlbc_index: if free_threaded { tlbc_index } else { None },
                size,
                skip_owners: skip,
                generator_owner: gen_owner,
                tagged: v.at_least(3, 14) || free_threaded,
            }
        } else {
            let back = s.f("PyFrameObject", &["f_back"]);
            let code = s.f("PyFrameObject", &["f_code"]);
            let lasti = s.f("PyFrameObject", &["f_lasti"]);
            FrameOffsets::Object {
                back: s.req(back, "PyFrameObject.f_back"),
                code: s.req(code, "PyFrameObject.f_code"),
                lasti: s.req(lasti, "PyFrameObject.f_lasti"),
                size: s.size("PyFrameObject").unwrap_or(368),
            }
        };

        let cf = s.df("code_object.filename", "PyCodeObject", &["co_filename"]);
        let code_filename = s.req(cf, "PyCodeObject.co_filename");
        let cn = s.df("code_object.name", "PyCodeObject", &["co_name"]);
        let code_name = s.req(cn, "PyCodeObject.co_name");
        let code_qualname = s.df("code_object.qualname", "PyCodeObject", &["co_qualname"]);
        let fl = s.df("code_object.firstlineno", "PyCodeObject", &["co_firstlineno"]);
        let code_firstlineno = s.req(fl, "PyCodeObject.co_firstlineno");
        let lt = s.df("code_object.linetable", "PyCodeObject", &["co_linetable", "co_lnotab"]);
        // 3.10 has both co_linetable (new format) and a lazily built co_lnotab: prefer the table.
        let lt = if v.at_least(3, 10) { lt } else { s.f("PyCodeObject", &["co_lnotab"]).or(lt) };
        let code_linetable = s.req(lt, "PyCodeObject.co_linetable");
        let code_code = if v.at_least(3, 11) { None } else { s.f("PyCodeObject", &["co_code"]) };
        let code_adaptive = s.df("code_object.co_code_adaptive", "PyCodeObject", &["co_code_adaptive"]);
        if v.at_least(3, 11) && code_adaptive.is_none() {
            s.missing.push("PyCodeObject.co_code_adaptive".into());
        }
        let code_firsttraceable = s.f("PyCodeObject", &["_co_firsttraceable"]);
        let code_tlbc = if free_threaded {
            s.d("code_object.co_tlbc").filter(|x| *x != 0).or(s.f("PyCodeObject", &["co_tlbc"]))
        } else {
            None
        };
        let ft_code = if free_threaded { 16 } else { 0 };
        let code_nlocalsplus = if v.at_least(3, 11) {
            s.f("PyCodeObject", &["co_nlocalsplus"]).or(if v.at_least(3, 12) { Some(72 + ft_code) } else { None })
        } else {
            None
        };
        let code_stacksize =
            s.f("PyCodeObject", &["co_stacksize"]).or(if v.at_least(3, 12) { Some(64 + ft_code) } else { None });
        let code_read_size = [
            Some(code_filename),
            Some(code_name),
            code_qualname,
            Some(code_firstlineno),
            Some(code_linetable),
            code_code,
            code_firsttraceable,
            code_tlbc,
            code_nlocalsplus,
            code_stacksize,
        ]
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(0)
            + 8;

        let ob_type = s.df("pyobject.ob_type", "PyObject", &["ob_type"]).unwrap_or(8 + head);
        let ob_size = s.df("list_object.ob_size", "PyVarObject", &["ob_size"]).unwrap_or(16 + head);
        let tp_name = s.df("type_object.tp_name", "PyTypeObject", &["tp_name"]).unwrap_or(24 + head);
        let tp_flags = s.df("type_object.tp_flags", "PyTypeObject", &["tp_flags"]).unwrap_or(168 + head);
        let tp_dictoffset = s.df("type_object.tp_dictoffset", "PyTypeObject", &["tp_dictoffset"]).unwrap_or(288 + head);
        let tp_basicsize = s.df("type_object.tp_basicsize", "PyTypeObject", &["tp_basicsize"]).unwrap_or(32 + head);
        // Defaults measured on x86-64 release builds (CPython headers) when the data lacks the field.
        let ht_cached_keys = s.df("heap_type_object.ht_cached_keys", "PyHeapTypeObject", &["ht_cached_keys"]).or(
            match (v.minor, free_threaded) {
                (11, _) => Some(872),
                (12, _) => Some(880),
                (13 | 14, false) => Some(880),
                (13 | 14, true) => Some(896),
                (15, false) => Some(888),
                (15, true) => Some(904),
                _ => None,
            },
        );

        let str_length = s.df("unicode_object.length", "PyASCIIObject", &["length"]).unwrap_or(16 + head);
        let str_state = s.df("unicode_object.state", "PyASCIIObject", &["state"]).unwrap_or(32 + head);
        let ascii_default = if v.at_least(3, 12) { 40 } else { 48 } + head;
        let str_ascii_size =
            s.d("unicode_object.asciiobject_size").or(s.size("PyASCIIObject")).unwrap_or(ascii_default);
        let str_compact_size = s
            .d("unicode_object.compactunicodeobject_size")
            .or(s.size("PyCompactUnicodeObject"))
            .unwrap_or(if v.at_least(3, 12) { 56 } else { 72 } + head);
        let sbit = |name: &str| -> Option<[u64; 3]> { s.bit("PyASCIIObject", &format!("state.{name}")) };
        let rel = |b: [u64; 3]| ((b[0].saturating_sub(str_state)) * 8 + b[1]) as u32;
        // 3.14t/3.15t widened `interned` to a byte, shifting the other bits by 6.
        let shift = if free_threaded && v.at_least(3, 14) { 6 } else { 0 };
        let str_kind = sbit("kind").map(|b| (rel(b), b[2] as u32)).unwrap_or((2 + shift, 3));
        let str_compact_bit = sbit("compact").map(rel).unwrap_or(5 + shift);
        let str_ascii_bit = sbit("ascii").map(rel).unwrap_or(6 + shift);

        let long_lv_tag = if v.at_least(3, 12) {
            Some(s.df("long_object.lv_tag", "PyLongObject", &["long_value.lv_tag"]).unwrap_or(16 + head))
        } else {
            None
        };
        let long_digits = s
            .df("long_object.ob_digit", "PyLongObject", &["long_value.ob_digit", "ob_digit"])
            .unwrap_or(if v.at_least(3, 12) { 24 } else { 24 } + head);
        let bytes_sval = s.df("bytes_object.ob_sval", "PyBytesObject", &["ob_sval"]).unwrap_or(32 + head);
        let tuple_item = s
            .df("tuple_object.ob_item", "PyTupleObject", &["ob_item"])
            .unwrap_or(if v.at_least(3, 14) { 32 } else { 24 } + head);
        let list_item = s.df("list_object.ob_item", "PyListObject", &["ob_item"]).unwrap_or(24 + head);
        let dict_keys = s.df("dict_object.ma_keys", "PyDictObject", &["ma_keys"]).unwrap_or(32 + head);
        let dict_values = s.df("dict_object.ma_values", "PyDictObject", &["ma_values"]).unwrap_or(40 + head);
        let dk = if v.at_least(3, 11) {
            DictKeysOffsets::Log2 {
                log2_size: s.f("PyDictKeysObject", &["dk_log2_size"]).unwrap_or(8),
                log2_index_bytes: s.f("PyDictKeysObject", &["dk_log2_index_bytes"]).unwrap_or(9),
                kind: s.f("PyDictKeysObject", &["dk_kind"]).unwrap_or(10),
                nentries: s.f("PyDictKeysObject", &["dk_nentries"]).unwrap_or(24),
                indices: s.f("PyDictKeysObject", &["dk_indices"]).unwrap_or(32),
            }
        } else {
            DictKeysOffsets::Sized {
                size: s.f("PyDictKeysObject", &["dk_size"]).unwrap_or(8),
                nentries: s.f("PyDictKeysObject", &["dk_nentries"]).unwrap_or(32),
                indices: s.f("PyDictKeysObject", &["dk_indices"]).unwrap_or(40),
            }
        };
        let dict_values_header = if v.at_least(3, 13) { s.f("PyDictValues", &["values"]).unwrap_or(8) } else { 0 };
        let module_dict = s.f("PyModuleObject", &["md_dict"]).unwrap_or(16 + head);
        let method_func = s.f("PyMethodObject", &["im_func"]).unwrap_or(16 + head);
        let method_self = s.f("PyMethodObject", &["im_self"]).unwrap_or(24 + head);
        let cfunction_ml = s.f("PyCFunctionObject", &["m_ml"]).unwrap_or(16 + head);
        let cfunction_self = s.f("PyCFunctionObject", &["m_self"]).unwrap_or(24 + head);
        let func_name =
            s.f("PyFunctionObject", &["func_name"]).unwrap_or(if v.at_least(3, 10) { 32 } else { 64 } + head);
        let tp_dict = s.f("PyTypeObject", &["tp_dict"]).unwrap_or(264 + head);

        let stw = |st: &str| -> Option<StwOffsets> {
            Some(StwOffsets {
                requested: s.f(st, &["stoptheworld.requested"])?,
                world_stopped: s.f(st, &["stoptheworld.world_stopped"])?,
                requester: s.f(st, &["stoptheworld.requester"])?,
            })
        };
        let ft = FtOffsets {
            config_enable_gil: if free_threaded { s.f("PyInterpreterState", &["config.enable_gil"]) } else { None },
            interp_stw: stw("PyInterpreterState"),
            runtime_stw: stw("_PyRuntimeState"),
            module_def: s.f("PyModuleObject", &["md_def"]),
            module_gil: if free_threaded { s.f("PyModuleObject", &["md_gil"]) } else { None },
        };

        let ts_read_size = [
            Some(ts_next),
            Some(ts_interp),
            Some(ts_thread_id),
            ts_native_thread_id,
            ts_dict,
            ts_frame,
            ts_cframe,
            ts_current_frame,
            ts_status,
            ts_holds_gil,
            ts_gil_requested,
            ts_state,
        ]
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap_or(0)
            + 8;

        if !s.missing.is_empty() {
            return Err(s.missing);
        }
        Ok(Offsets {
            version,
            free_threaded,
            rt_interpreters_head,
            rt_tstate_current,
            rt_gil,
            interp_next,
            interp_threads_head,
            interp_id,
            interp_modules,
            interp_ceval_gil,
            gil_locked,
            gil_last_holder,
            gil_switch_number,
            gil_enabled,
            gil_size,
            ts_next,
            ts_interp,
            ts_thread_id,
            ts_native_thread_id,
            ts_dict,
            ts_frame,
            ts_cframe,
            cframe_current_frame,
            ts_current_frame,
            ts_status,
            status_active_bit,
            status_holds_gil_bit,
            ts_holds_gil,
            ts_gil_requested,
            ts_state,
            ts_read_size,
            frame,
            code_filename,
            code_name,
            code_qualname,
            code_firstlineno,
            code_linetable,
            code_code,
            code_adaptive,
            code_firsttraceable,
            code_tlbc,
            code_nlocalsplus,
            code_stacksize,
            code_read_size,
            ob_type,
            ob_size,
            tp_name,
            tp_flags,
            tp_dictoffset,
            tp_basicsize,
            ht_cached_keys,
            str_length,
            str_state,
            str_ascii_size,
            str_compact_size,
            str_kind,
            str_compact_bit,
            str_ascii_bit,
            long_digits,
            long_lv_tag,
            bytes_sval,
            tuple_item,
            list_item,
            dict_keys,
            dict_values,
            dk,
            dict_values_header,
            module_dict,
            head,
            method_func,
            method_self,
            cfunction_ml,
            cfunction_self,
            func_name,
            tp_dict,
            ft,
        })
    }
}
