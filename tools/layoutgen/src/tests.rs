//! Tests over tiny object files compiled by gcc (skipped when gcc is missing).
//! They pin the DWARF walking: nested paths, anonymous members, bitfields, enums.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::extract::Program;
use crate::{elf, spec};

fn have_gcc() -> bool {
    Command::new("gcc").arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("layoutgen-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compile `source` (saved as `dir/file_name`) with gcc and return the object path.
fn compile(dir: &Path, file_name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(file_name);
    std::fs::write(&src, source).unwrap();
    let obj = src.with_extension("o");
    let out = Command::new("gcc")
        .args(["-O0", "-c", "-fno-eliminate-unused-debug-types"])
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("running gcc");
    assert!(out.status.success(), "gcc failed: {}", String::from_utf8_lossy(&out.stderr));
    obj
}

const MAIN_C: &str = r#"
#include <stdint.h>
typedef struct _object {
    union { long ob_refcnt; uint32_t ob_refcnt_split[2]; };
    struct _typeobject *ob_type;
} PyObject;
typedef struct { PyObject ob_base; long ob_size; } PyVarObject;

typedef struct _is PyInterpreterState;
typedef struct _ts PyThreadState;
struct _ts {
    PyThreadState *prev;
    PyThreadState *next;
    PyInterpreterState *interp;
    struct {
        unsigned int initialized:1;
        unsigned int bound:1;
        unsigned int unbound:1;
        unsigned int bound_gilstate:1;
        unsigned int active:1;
        unsigned int finalizing:1;
        unsigned int cleared:1;
        unsigned int finalized:1;
        unsigned int :23;
    } _status;
    int holds_gil;
    unsigned long thread_id;
};

typedef struct {
    PyObject ob_base;
    long length;
    long hash;
    struct {
        unsigned int interned:2;
        unsigned int kind:3;
        unsigned int compact:1;
        unsigned int ascii:1;
        unsigned int statically_allocated:1;
        unsigned int :24;
    } state;
} PyASCIIObject;

struct _gil_runtime_state { unsigned long interval; void *last_holder; int locked; unsigned long switch_number; };
struct _ceval_runtime_state { int recursion_limit; struct _gil_runtime_state gil; };
typedef struct pyruntimestate {
    int initialized;
    struct pyinterpreters { void *mutex; PyInterpreterState *head; PyInterpreterState *main; long next_id; } interpreters;
    unsigned long main_thread;
    const volatile struct _ceval_runtime_state ceval;
} _PyRuntimeState;

typedef enum _framestate { FRAME_CREATED = -2, FRAME_SUSPENDED = -1, FRAME_EXECUTING = 0, FRAME_CLEARED = 4 } PyFrameState;
typedef enum { STATE_PENDING, STATE_CANCELLED, STATE_FINISHED } fut_state;
enum { FRAME_OWNED_BY_THREAD = 0, FRAME_OWNED_BY_GENERATOR = 1, FRAME_OWNED_BY_CSTACK = 3 };

/* A generic name that must not be taken from this unit (not _threadmodule.c). */
typedef struct { long wrong; void *lock_lock; } lockobject;

PyThreadState *tstate_ptr;
_PyRuntimeState runtime;
"#;

/// Declares PyInterpreterState without defining it; the definition lives in
/// another file and must be found through the struct tag.
const INTERP_C: &str = r#"
typedef struct _is PyInterpreterState;
struct _ts_list { PyInterpreterState *head; };
struct _is {
    PyInterpreterState *next;
    long id;
    struct { void *head; void *main; } threads;
    void *modules;
};
struct _is the_interp;
"#;

const THREAD_C: &str = r#"
typedef struct { long ob_refcnt; void *ob_type; } PyObject_;
typedef struct { PyObject_ ob_base; void *lock_lock; void *in_weakreflist; char locked; } lockobject;
lockobject the_lock;
"#;

fn program(flags: &[&str], tag: &str) -> Option<Program> {
    if !have_gcc() {
        eprintln!("skipping: gcc not found");
        return None;
    }
    let dir = scratch(tag);
    // The declaration-only unit comes first so the definition must be looked up by tag.
    let decl = compile(&dir, "decl.c", "typedef struct _is PyInterpreterState; PyInterpreterState *p;\n", flags);
    let main = compile(&dir, "main.c", MAIN_C, flags);
    let interp = compile(&dir, "interp.c", INTERP_C, flags);
    let thread = compile(&dir, "_threadmodule.c", THREAD_C, flags);
    let elfs = [decl, main, interp, thread].iter().map(|p| elf::load(p).unwrap()).collect();
    let prog = Program::new(elfs).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Some(prog)
}

fn check_program(prog: &Program) {
    let layout = prog.layout("3.x", "3.x.0", "layoutgen dwarf").unwrap();
    assert_eq!(layout.sources, vec!["decl.o", "main.o", "interp.o", "_threadmodule.o"]);
    assert!(!layout.free_threaded);

    let ts = &layout.structs["PyThreadState"];
    assert_eq!(ts.size, 40);
    assert_eq!(ts.fields["prev"], 0);
    assert_eq!(ts.fields["next"], 8);
    assert_eq!(ts.fields["interp"], 16);
    assert_eq!(ts.fields["_status"], 24);
    assert_eq!(ts.fields["holds_gil"], 28);
    assert_eq!(ts.fields["thread_id"], 32);
    assert!(!ts.fields.contains_key("frame"));
    assert_eq!(ts.bitfields["_status.initialized"], [24, 0, 1]);
    assert_eq!(ts.bitfields["_status.active"], [24, 4, 1]);
    assert_eq!(ts.bitfields["_status.finalized"], [24, 7, 1]);
    assert!(!ts.fields.contains_key("_status.active"));

    let a = &layout.structs["PyASCIIObject"];
    assert_eq!(a.fields["state"], 32);
    assert_eq!(a.bitfields["state.interned"], [32, 0, 2]);
    assert_eq!(a.bitfields["state.kind"], [32, 2, 3]);
    assert_eq!(a.bitfields["state.compact"], [32, 5, 1]);
    assert_eq!(a.bitfields["state.ascii"], [32, 6, 1]);
    assert_eq!(a.bitfields["state.statically_allocated"], [32, 7, 1]);

    // Anonymous union members are transparent.
    let o = &layout.structs["PyObject"];
    assert_eq!(o.fields["ob_refcnt"], 0);
    assert_eq!(o.fields["ob_type"], 8);
    assert_eq!(layout.structs["PyVarObject"].fields["ob_size"], 16);

    // Nested paths through const volatile qualified members.
    let rt = &layout.structs["_PyRuntimeState"];
    assert_eq!(rt.fields["interpreters.head"], 16);
    assert_eq!(rt.fields["interpreters.main"], 24);
    assert_eq!(rt.fields["main_thread"], 40);
    assert_eq!(rt.fields["ceval.gil"], 56);
    assert_eq!(rt.fields["ceval.gil.locked"], 72);
    assert_eq!(rt.fields["ceval.gil.last_holder"], 64);

    // Declaration in one file, definition in another.
    let is = &layout.structs["PyInterpreterState"];
    assert_eq!(is.size, 40);
    assert_eq!(is.fields["threads.head"], 16);
    assert_eq!(is.fields["threads.main"], 24);
    assert_eq!(is.fields["modules"], 32);

    // Module-private struct taken only from its own unit.
    let lock = &layout.structs["lockobject"];
    assert_eq!(lock.fields["lock_lock"], 16);
    assert_eq!(lock.fields["locked"], 32);

    assert_eq!(layout.enums["_framestate"]["FRAME_CREATED"], -2);
    assert_eq!(layout.enums["PyFrameState"]["FRAME_CLEARED"], 4);
    assert_eq!(layout.enums["fut_state"]["STATE_FINISHED"], 2);
    assert_eq!(layout.enums["anonymous"]["FRAME_OWNED_BY_CSTACK"], 3);
    assert!(!layout.enums.contains_key("_frameowner"));
}

#[test]
fn dwarf5_object_files() {
    if let Some(p) = program(&["-gdwarf-5"], "d5") {
        check_program(&p);
    }
}

#[test]
fn dwarf4_object_files() {
    // GCC emits old-style DW_AT_bit_offset for DWARF 4.
    if let Some(p) = program(&["-gdwarf-4"], "d4") {
        check_program(&p);
    }
}

#[test]
fn paths_that_do_not_resolve() {
    let Some(prog) = program(&["-g"], "miss") else {
        return;
    };
    let spec = spec::StructSpec {
        logical: "PyThreadState",
        c_names: &["PyThreadState"],
        // through a pointer, through a bit-field, a missing member, a plain one
        paths: &["interp.next", "_status.active.x", "nope", "_status.nope", "thread_id"],
        unit_suffix: None,
    };
    let l = prog.struct_layout(&spec).unwrap().unwrap();
    assert_eq!(l.fields.len(), 1, "{:?}", l.fields);
    assert_eq!(l.fields["thread_id"], 32);
    assert!(l.bitfields.is_empty());
    // A module-private name with no unit of that name is not found at all.
    let spec = spec::StructSpec { logical: "x", c_names: &["lockobject"], paths: &[], unit_suffix: Some("nothere.c") };
    assert!(prog.struct_layout(&spec).unwrap().is_none());
}

#[test]
fn json_is_stable() {
    let Some(prog) = program(&["-g"], "stable") else {
        return;
    };
    let a = prog.layout("3.x", "3.x.0", "layoutgen dwarf").unwrap().to_json().unwrap();
    let b = prog.layout("3.x", "3.x.0", "layoutgen dwarf").unwrap().to_json().unwrap();
    assert_eq!(a, b);
    assert!(a.contains("\"bitfields\": {}") || a.contains("\"bitfields\": {\n"));
}

#[test]
fn version_parsing() {
    assert_eq!(crate::major_minor("3.13.0").as_deref(), Some("3.13"));
    assert_eq!(crate::major_minor("3.14.0rc2").as_deref(), Some("3.14"));
    assert_eq!(crate::major_minor("3.13t").as_deref(), Some("3.13"));
    assert_eq!(crate::major_minor("x"), None);
}
