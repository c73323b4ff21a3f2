//! What to extract: the logical structs (with the C names to look for and the
//! member paths to record) and the enums.
//!
//! To record a new member, add its dotted path here and regenerate every file
//! (see python_layouts/README.md). Paths that a version does not have are simply
//! left out of that version's file.

/// One logical struct.
pub struct StructSpec {
    /// Key in the JSON `structs` map.
    pub logical: &'static str,
    /// C names tried in order: a typedef name or a struct/union tag.
    pub c_names: &'static [&'static str],
    /// Dotted member paths (plain members and bit-fields alike; bit-fields land
    /// in `bitfields`, everything else in `fields`).
    pub paths: &'static [&'static str],
    /// If set, the definition must come from a compile unit whose file name
    /// ends with this (for structs private to one extension module's .c file,
    /// whose names are too generic to trust from any other unit).
    pub unit_suffix: Option<&'static str>,
}

const fn s(logical: &'static str, c_names: &'static [&'static str], paths: &'static [&'static str]) -> StructSpec {
    StructSpec { logical, c_names, paths, unit_suffix: None }
}

const fn m(
    logical: &'static str,
    c_names: &'static [&'static str],
    unit_suffix: &'static str,
    paths: &'static [&'static str],
) -> StructSpec {
    StructSpec { logical, c_names, paths, unit_suffix: Some(unit_suffix) }
}

const ASYNCIO_C: &str = "_asynciomodule.c";
const THREAD_C: &str = "_threadmodule.c";
const COLLECTIONS_C: &str = "_collectionsmodule.c";

macro_rules! future_fields {
    ($($extra:literal),* $(,)?) => {
        &[
            "fut_loop", "fut_callback0", "fut_context0", "fut_callbacks", "fut_exception",
            "fut_exception_tb", "fut_result", "fut_source_tb", "fut_cancel_msg",
            "fut_cancelled_exc", "fut_cancelled_exc_state", "fut_state", "fut_log_tb",
            "fut_blocking", "dict", "fut_weakreflist", "fut_awaited_by", "fut_is_task",
            "fut_awaited_by_is_set",
            $($extra),*
        ]
    };
}

pub static STRUCTS: &[StructSpec] = &[
    s(
        "_PyRuntimeState",
        &["_PyRuntimeState", "pyruntimestate"],
        &[
            "interpreters.head",
            "interpreters.main",
            "main_thread",
            "finalizing",
            "_finalizing",
            "gilstate.tstate_current",
            "ceval.gil",
            "ceval.gil.locked",
            "ceval.gil.last_holder",
            "ceval.gil.switch_number",
            "_main_interpreter",
            "debug_offsets",
            "stoptheworld.requested",
            "stoptheworld.world_stopped",
            "stoptheworld.requester",
        ],
    ),
    s(
        "PyInterpreterState",
        &["PyInterpreterState", "_is"],
        &[
            "next",
            "tstate_head",
            "threads.head",
            "threads.main",
            "id",
            "modules",
            "imports.modules",
            "sysdict",
            "builtins",
            "ceval.gil",
            "_gil",
            "_gil.locked",
            "_gil.last_holder",
            "_gil.switch_number",
            "gc",
            "gc.collecting",
            "asyncio_tasks_head",
            "config.enable_gil",
            "stoptheworld.requested",
            "stoptheworld.world_stopped",
            "stoptheworld.requester",
        ],
    ),
    s(
        "PyThreadState",
        &["PyThreadState", "_ts"],
        &[
            "prev",
            "next",
            "interp",
            "frame",
            "cframe",
            "current_frame",
            "dict",
            "thread_id",
            "native_thread_id",
            "id",
            "datastack_chunk",
            "_status",
            "state",
            "holds_gil",
            "gil_requested",
            "eval_breaker",
            "_status.initialized",
            "_status.bound",
            "_status.unbound",
            "_status.bound_gilstate",
            "_status.active",
            "_status.holds_gil",
            "_status.finalizing",
            "_status.cleared",
            "_status.finalized",
        ],
    ),
    s(
        "_PyThreadStateImpl",
        &["_PyThreadStateImpl"],
        &["base", "asyncio_running_loop", "asyncio_running_task", "asyncio_tasks_head"],
    ),
    s("_PyCFrame", &["_PyCFrame", "CFrame"], &["use_tracing", "current_frame", "previous"]),
    s(
        "_gil_runtime_state",
        &["_gil_runtime_state"],
        &["enabled", "interval", "last_holder", "locked", "switch_number"],
    ),
    s(
        "PyFrameObject",
        &["PyFrameObject", "_frame"],
        &[
            "f_back",
            "f_code",
            "f_builtins",
            "f_globals",
            "f_locals",
            "f_valuestack",
            "f_stacktop",
            "f_stackdepth",
            "f_gen",
            "f_lasti",
            "f_lineno",
            "f_state",
            "f_executing",
            "f_localsplus",
            "f_frame",
        ],
    ),
    s(
        "_PyInterpreterFrame",
        &["_PyInterpreterFrame"],
        &[
            "f_code",
            "f_executable",
            "f_func",
            "f_funcobj",
            "f_globals",
            "f_builtins",
            "f_locals",
            "frame_obj",
            "previous",
            "prev_instr",
            "instr_ptr",
            "stacktop",
            "stackpointer",
            "is_entry",
            "return_offset",
            "owner",
            "localsplus",
            "tlbc_index",
        ],
    ),
    s(
        "PyCodeObject",
        &["PyCodeObject"],
        &[
            "co_argcount",
            "co_flags",
            "co_firstlineno",
            "co_nlocals",
            "co_nlocalsplus",
            "co_stacksize",
            "co_framesize",
            "co_code",
            "co_varnames",
            "co_cellvars",
            "co_freevars",
            "co_localsplusnames",
            "co_localspluskinds",
            "co_filename",
            "co_name",
            "co_qualname",
            "co_lnotab",
            "co_linetable",
            "co_code_adaptive",
            "_co_firsttraceable",
            "co_tlbc",
        ],
    ),
    s("PyObject", &["PyObject", "_object"], &["ob_refcnt", "ob_type", "ob_tid", "ob_ref_local", "ob_ref_shared"]),
    s("PyVarObject", &["PyVarObject"], &["ob_size"]),
    s(
        "PyTypeObject",
        &["PyTypeObject", "_typeobject"],
        &[
            "tp_name",
            "tp_basicsize",
            "tp_itemsize",
            "tp_flags",
            "tp_dictoffset",
            "tp_weaklistoffset",
            "tp_dict",
            "tp_mro",
        ],
    ),
    s(
        "PyHeapTypeObject",
        &["PyHeapTypeObject", "_heaptypeobject"],
        &["ht_cached_keys", "ht_module", "ht_qualname", "ht_name"],
    ),
    s(
        "PyASCIIObject",
        &["PyASCIIObject"],
        &[
            "length",
            "hash",
            "state",
            "wstr",
            "state.interned",
            "state.kind",
            "state.compact",
            "state.ascii",
            "state.ready",
            "state.statically_allocated",
        ],
    ),
    s("PyCompactUnicodeObject", &["PyCompactUnicodeObject"], &["utf8_length", "utf8", "wstr_length"]),
    s("PyUnicodeObject", &["PyUnicodeObject"], &["data"]),
    s("PyLongObject", &["PyLongObject", "_longobject"], &["ob_digit", "long_value.lv_tag", "long_value.ob_digit"]),
    s("PyBytesObject", &["PyBytesObject"], &["ob_shash", "ob_sval"]),
    s("PyTupleObject", &["PyTupleObject"], &["ob_item", "ob_hash"]),
    s("PyListObject", &["PyListObject"], &["ob_item", "allocated"]),
    s("PyFloatObject", &["PyFloatObject"], &["ob_fval"]),
    s("PyDictObject", &["PyDictObject"], &["ma_used", "ma_version_tag", "_ma_watcher_tag", "ma_keys", "ma_values"]),
    s(
        "PyDictKeysObject",
        &["PyDictKeysObject", "_dictkeysobject"],
        &[
            "dk_refcnt",
            "dk_size",
            "dk_lookup",
            "dk_log2_size",
            "dk_log2_index_bytes",
            "dk_kind",
            "dk_version",
            "dk_usable",
            "dk_nentries",
            "dk_indices",
        ],
    ),
    s("PyDictKeyEntry", &["PyDictKeyEntry"], &["me_hash", "me_key", "me_value"]),
    s("PyDictUnicodeEntry", &["PyDictUnicodeEntry"], &["me_key", "me_value"]),
    s("PyDictValues", &["PyDictValues", "_dictvalues"], &["capacity", "size", "embedded", "valid", "values"]),
    s(
        "PySetObject",
        &["PySetObject"],
        &["fill", "used", "mask", "table", "hash", "finger", "smalltable", "weakreflist"],
    ),
    s("setentry", &["setentry"], &["key", "hash"]),
    s(
        "PyWeakReference",
        &["PyWeakReference", "_PyWeakReference"],
        &["wr_object", "wr_callback", "hash", "wr_prev", "wr_next"],
    ),
    s(
        "PyGenObject",
        &["PyGenObject"],
        &[
            "gi_frame",
            "gi_code",
            "gi_running",
            "gi_weakreflist",
            "gi_name",
            "gi_qualname",
            "gi_exc_state",
            "gi_frame_state",
            "gi_iframe",
            "gi_origin_or_finalizer",
        ],
    ),
    s(
        "PyCoroObject",
        &["PyCoroObject"],
        &[
            "cr_frame",
            "cr_code",
            "cr_running",
            "cr_weakreflist",
            "cr_name",
            "cr_qualname",
            "cr_frame_state",
            "cr_iframe",
            "cr_origin",
            "cr_origin_or_finalizer",
        ],
    ),
    s(
        "PyFunctionObject",
        &["PyFunctionObject"],
        &["func_code", "func_globals", "func_name", "func_qualname", "func_closure", "func_module"],
    ),
    s("PyMethodObject", &["PyMethodObject"], &["im_func", "im_self"]),
    s("PyCFunctionObject", &["PyCFunctionObject"], &["m_ml", "m_self", "m_module"]),
    s("PyMethodDef", &["PyMethodDef"], &["ml_name"]),
    s("PyCellObject", &["PyCellObject"], &["ob_ref"]),
    s("PyModuleObject", &["PyModuleObject"], &["md_dict", "md_def", "md_state", "md_weaklist", "md_name", "md_gil"]),
    s("_PyStackChunk", &["_PyStackChunk"], &["previous", "size", "top", "data"]),
    s("_PyErr_StackItem", &["_PyErr_StackItem", "_err_stackitem"], &["exc_value", "exc_type", "previous_item"]),
    // Modules/_asynciomodule.c
    m("FutureObj", &["FutureObj"], ASYNCIO_C, future_fields!()),
    // TaskObj starts with FutureObj_HEAD(task): the same members as FutureObj
    // (same offsets), named task_* instead of fut_*. Both spellings are requested.
    m(
        "TaskObj",
        &["TaskObj"],
        ASYNCIO_C,
        future_fields!(
            "task_loop",
            "task_callback0",
            "task_context0",
            "task_callbacks",
            "task_exception",
            "task_exception_tb",
            "task_result",
            "task_source_tb",
            "task_cancel_msg",
            "task_cancelled_exc",
            "task_cancelled_exc_state",
            "task_state",
            "task_log_tb",
            "task_blocking",
            "task_weakreflist",
            "task_awaited_by",
            "task_is_task",
            "task_awaited_by_is_set",
            "task_fut_waiter",
            "task_coro",
            "task_name",
            "task_context",
            "task_must_cancel",
            "task_log_destroy_pending",
            "task_num_cancels_requested",
            "task_node",
        ),
    ),
    m("futureiterobject", &["futureiterobject"], ASYNCIO_C, &["future"]),
    m("TaskWakeupMethWrapper", &["TaskWakeupMethWrapper"], ASYNCIO_C, &["ww_task"]),
    m("PyRunningLoopHolder", &["PyRunningLoopHolder"], ASYNCIO_C, &["rl_loop", "rl_pid"]),
    m(
        "asyncio_state",
        &["asyncio_state"],
        ASYNCIO_C,
        &[
            "scheduled_tasks",
            "eager_tasks",
            "current_tasks",
            "non_asyncio_tasks",
            "non_asyncio_eager_tasks",
            "FutureIterType",
            "TaskStepMethWrapper_Type",
            "FutureType",
            "TaskType",
            "asyncio_mod",
        ],
    ),
    // Modules/_threadmodule.c
    m("lockobject", &["lockobject"], THREAD_C, &["lock_lock", "in_weakreflist", "locked", "lock"]),
    m(
        "rlockobject",
        &["rlockobject"],
        THREAD_C,
        &["rlock_lock", "rlock_owner", "rlock_count", "in_weakreflist", "lock"],
    ),
    s("_PyRecursiveMutex", &["_PyRecursiveMutex"], &["mutex", "thread", "level"]),
    // Modules/_collectionsmodule.c
    m(
        "dequeobject",
        &["dequeobject"],
        COLLECTIONS_C,
        &["leftblock", "rightblock", "leftindex", "rightindex", "state", "maxlen"],
    ),
    m("block", &["block", "BLOCK"], COLLECTIONS_C, &["leftlink", "data", "rightlink"]),
];

/// Enum types recorded by C name (enum tag or a typedef of an enum).
pub static ENUMS: &[&str] = &["_frameowner", "_framestate", "PyFrameState", "fut_state", "_thread_status"];

/// Enumerators of anonymous enums (not reachable through any name above) whose
/// name starts with one of these are recorded under `enums.anonymous`.
pub static ANONYMOUS_ENUMERATOR_PREFIXES: &[&str] = &["FRAME_OWNED_BY_", "FRAME_"];

pub const ANONYMOUS_KEY: &str = "anonymous";

/// Every C name that the index must remember all occurrences of.
pub fn wanted_names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = STRUCTS.iter().flat_map(|s| s.c_names.iter().copied()).collect();
    v.extend(ENUMS.iter().copied());
    v.sort_unstable();
    v.dedup();
    v
}
