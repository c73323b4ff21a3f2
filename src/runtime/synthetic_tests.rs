//! Tests over synthetic memory images: free-threaded layouts (no such interpreter can be installed
//! here), thread-local bytecode, and corrupt targets (cycles, absurd lengths, unmapped pointers).

use super::debug_offsets::DebugOffsets;
use super::offsets::Offsets;
use super::version::PyVersion;
use super::{PyProcess, TypeAddrs};
use crate::snapshot;
use crate::source::{MemError, SyntheticMemory};
use std::collections::HashMap;
use std::sync::Arc;

const CODE_TYPE: u64 = 0x5000_0000;
const STR_TYPE: u64 = 0x5000_1000;
const BYTES_TYPE: u64 = 0x5000_2000;
const NONE: u64 = 0x5000_3000;

/// Bump allocator writing objects into a synthetic image.
struct Image {
    mem: SyntheticMemory,
    next: u64,
}

impl Image {
    fn new() -> Image {
        Image { mem: SyntheticMemory::new(), next: 0x1000_0000 }
    }
    fn alloc(&mut self, size: usize) -> u64 {
        let addr = self.next + 64; // leave room for pre-headers
        self.mem.map(self.next, vec![0; size + 64]);
        self.next += ((size as u64 + 64 + 0xfff) & !0xfff) + 0x1000;
        addr
    }
    fn u64(&mut self, addr: u64, v: u64) {
        self.mem.write_u64(addr, v)
    }
    fn u32(&mut self, addr: u64, v: u32) {
        self.mem.write_u32(addr, v)
    }
}

/// Free-threaded 3.14 `_Py_DebugOffsets` values (from the 3.14t headers; object fields +16).
fn ft314_debug_offsets() -> DebugOffsets {
    let v: &[(&str, u64)] = &[
        ("runtime_state.interpreters_head", 808),
        ("interpreter_state.next", 7272),
        ("interpreter_state.id", 7280),
        ("interpreter_state.threads_head", 7344),
        ("interpreter_state.imports_modules", 7688),
        ("interpreter_state.ceval_gil", 16),
        ("interpreter_state.gil_runtime_state", 7784),
        ("interpreter_state.gil_runtime_state_enabled", 0),
        ("interpreter_state.gil_runtime_state_locked", 7784 + 24),
        ("interpreter_state.gil_runtime_state_holder", 7784 + 16),
        ("thread_state.prev", 0),
        ("thread_state.next", 8),
        ("thread_state.interp", 16),
        ("thread_state.current_frame", 72),
        ("thread_state.thread_id", 152),
        ("thread_state.native_thread_id", 160),
        ("thread_state.status", 32),
        ("interpreter_frame.size", 88),
        ("interpreter_frame.previous", 8),
        ("interpreter_frame.executable", 0),
        ("interpreter_frame.instr_ptr", 56),
        ("interpreter_frame.localsplus", 80),
        ("interpreter_frame.owner", 78),
        ("interpreter_frame.stackpointer", 64),
        ("interpreter_frame.tlbc_index", 72),
        ("code_object.filename", 128),
        ("code_object.name", 136),
        ("code_object.qualname", 144),
        ("code_object.linetable", 152),
        ("code_object.firstlineno", 84),
        ("code_object.co_code_adaptive", 232),
        ("code_object.co_tlbc", 224),
        ("pyobject.ob_type", 24),
        ("type_object.tp_name", 40),
        ("type_object.tp_flags", 184),
        ("tuple_object.ob_item", 48),
        ("list_object.ob_item", 40),
        ("list_object.ob_size", 32),
        ("dict_object.ma_keys", 48),
        ("dict_object.ma_values", 56),
        ("long_object.lv_tag", 32),
        ("long_object.ob_digit", 40),
        ("bytes_object.ob_size", 32),
        ("bytes_object.ob_sval", 48),
        ("unicode_object.state", 48),
        ("unicode_object.length", 32),
        ("unicode_object.asciiobject_size", 56),
    ];
    DebugOffsets {
        version_hex: 0x030e_00f0,
        free_threaded: true,
        values: v.iter().map(|(k, x)| (k.to_string(), *x)).collect::<HashMap<_, _>>(),
    }
}

/// A free-threaded ASCII str: 32-byte object header, `interned` widened to a byte (kind at bit 8).
fn ft_str(img: &mut Image, s: &str) -> u64 {
    let a = img.alloc(56 + s.len() + 1);
    img.u64(a + 24, STR_TYPE);
    img.u64(a + 32, s.chars().count() as u64);
    img.u32(a + 48, (1 << 8) | (1 << 11) | (1 << 12)); // kind 1, compact, ascii
    img.mem.write(a + 56, s.as_bytes());
    a
}

fn ft_bytes(img: &mut Image, b: &[u8]) -> u64 {
    let a = img.alloc(48 + b.len() + 1);
    img.u64(a + 24, BYTES_TYPE);
    img.u64(a + 32, b.len() as u64);
    img.mem.write(a + 48, b);
    a
}

/// A code object whose location table maps unit k to line first+k (one "one-line" entry per unit).
fn ft_code(img: &mut Image, name: &str, file: &str, first: i32, units: usize) -> u64 {
    let c = img.alloc(232 + 2 * units);
    img.u64(c + 24, CODE_TYPE);
    let n = ft_str(img, name);
    let q = ft_str(img, &format!("Cls.{name}"));
    let f = ft_str(img, file);
    let mut table = vec![0x80 | (10 << 3), 0, 0]; // unit 0: line +0
    for _ in 1..units {
        table.extend([0x80 | (11 << 3), 0, 0]); // each further unit: line +1
    }
    let lt = ft_bytes(img, &table);
    img.u64(c + 136, n);
    img.u64(c + 144, q);
    img.u64(c + 128, f);
    img.u64(c + 152, lt);
    img.u32(c + 84, first as u32);
    c
}

struct Ft314 {
    img: Image,
    runtime: u64,
    interp: u64,
    tstate: u64,
    gil: u64,
}

fn ft314_base() -> Ft314 {
    let mut img = Image::new();
    let runtime = img.alloc(1024);
    let interp = img.alloc(8192);
    let tstate = img.alloc(1024);
    let gil = interp + 7784;
    img.u64(runtime + 808, interp);
    img.u64(interp + 7344, tstate);
    img.u64(interp + 16, gil);
    img.u32(gil, 0); // GIL disabled
    img.u64(tstate + 16, interp);
    img.u64(tstate + 152, 0x7f00_0000_1000);
    img.u32(tstate + 160, std::process::id());
    img.u32(tstate + 32, 1 << 4); // _status.active
    Ft314 { img, runtime, interp, tstate, gil }
}

fn reader(img: Image, runtime: u64) -> PyProcess {
    let v = PyVersion::from_hex(0x030e_00f0);
    let dbg = ft314_debug_offsets();
    let off = Offsets::resolve(v, true, None, Some(&dbg)).expect("offsets");
    let types = TypeAddrs { code: Some(CODE_TYPE), unicode: Some(STR_TYPE), none: Some(NONE), ..Default::default() };
    PyProcess::from_parts(
        std::process::id() as i32,
        Arc::new(img.mem),
        off,
        runtime,
        types,
        "/synthetic/python3.14t".into(),
        Arc::new(crate::source::os::StaticOs::sleeping(&[std::process::id() as i32])),
    )
}

#[test]
fn free_threaded_314_stack_with_tagged_refs_and_entry_frames() {
    let mut b = ft314_base();
    let code = ft_code(&mut b.img, "handler", "/srv/app.py", 40, 8);
    let outer = ft_code(&mut b.img, "main", "/srv/main.py", 10, 4);
    let f1 = b.img.alloc(88);
    let entry = b.img.alloc(88);
    let f2 = b.img.alloc(88);
    b.img.u64(b.tstate + 72, f1);
    // innermost: tagged executable (low bit set), at unit 5 => line 45
    b.img.u64(f1, code | 1);
    b.img.u64(f1 + 56, code + 232 + 2 * 5);
    b.img.u64(f1 + 8, entry);
    // entry frame (owner INTERPRETER = 3) with None|1 as executable: skipped
    b.img.mem.write(entry + 78, &[3]);
    b.img.u64(entry, NONE | 1);
    b.img.u64(entry + 8, f2);
    b.img.u64(f2, outer);
    b.img.u64(f2 + 56, outer + 232 + 2 * 2);
    let py = reader(b.img, b.runtime);
    let snap = snapshot::capture(&py).expect("snapshot");
    assert!(snap.python.free_threaded);
    assert!(!snap.python.gil_enabled, "GIL flag 0 means disabled");
    assert_eq!(snap.threads.len(), 1);
    let t = &snap.threads[0];
    assert!(t.error.is_none(), "{:?}", t.error);
    assert!(!t.holds_gil);
    assert_eq!(t.state, snapshot::ThreadState::Running, "attached thread on a GIL-less build");
    let got: Vec<(&str, &str, i64)> = t.frames.iter().map(|f| (&*f.function, &*f.file, f.line)).collect();
    assert_eq!(got, vec![("Cls.handler", "/srv/app.py", 45), ("Cls.main", "/srv/main.py", 12)]);
}

#[test]
fn free_threaded_gil_reenabled_is_reported() {
    let mut b = ft314_base();
    b.img.u32(b.gil, 1); // an extension without free-threading support re-enabled the GIL
    b.img.u64(b.gil + 16, b.tstate); // last_holder
    b.img.u32(b.gil + 24, 1); // locked
    let py = reader(b.img, b.runtime);
    let snap = snapshot::capture(&py).unwrap();
    assert!(snap.python.gil_enabled);
    assert!(snap.interpreters[0].gil_held);
}

#[test]
fn thread_local_bytecode_index_is_used_for_lines() {
    let mut b = ft314_base();
    let code = ft_code(&mut b.img, "hot", "/srv/hot.py", 100, 8);
    // co_tlbc -> {size 2, entries[0] = adaptive, entries[1] = a private copy elsewhere}
    let copy = b.img.alloc(64);
    let arr = b.img.alloc(24);
    b.img.u64(arr, 2);
    b.img.u64(arr + 8, code + 232);
    b.img.u64(arr + 16, copy);
    b.img.u64(code + 224, arr);
    let f = b.img.alloc(88);
    b.img.u64(b.tstate + 72, f);
    b.img.u64(f, code);
    b.img.u32(f + 72, 1); // tlbc_index
    b.img.u64(f + 56, copy + 2 * 6); // unit 6 of the copy => line 106
    let py = reader(b.img, b.runtime);
    let snap = snapshot::capture(&py).unwrap();
    assert_eq!(snap.threads[0].frames[0].line, 106);
}

#[test]
fn cyclic_frame_chain_is_an_error_not_a_hang() {
    let mut b = ft314_base();
    let code = ft_code(&mut b.img, "loop", "/x.py", 1, 2);
    let f1 = b.img.alloc(88);
    let f2 = b.img.alloc(88);
    b.img.u64(b.tstate + 72, f1);
    for (f, next) in [(f1, f2), (f2, f1)] {
        b.img.u64(f, code);
        b.img.u64(f + 56, code + 232);
        b.img.u64(f + 8, next);
    }
    let py = reader(b.img, b.runtime);
    let st = py.walk_frames(f1).unwrap();
    assert!(matches!(st.error, Some(MemError::Other(ref m)) if m.contains("loops")), "{st:?}");
    // The readable part of the stack is kept: both frames before the loop closes.
    assert_eq!(st.frames.len(), 2);
    // The whole snapshot still completes, flagging the thread and keeping its frames.
    let snap = snapshot::capture(&py).unwrap();
    assert!(snap.threads[0].error.as_deref().unwrap_or("").contains("loops"));
    assert_eq!(snap.threads[0].frames.len(), 2);
    assert_eq!(snap.capture.as_ref().unwrap().unreadable, 1);
}

#[test]
fn absurd_lengths_and_unmapped_pointers_are_errors() {
    let mut b = ft314_base();
    let s = ft_str(&mut b.img, "ok");
    b.img.u64(s + 32, u64::MAX / 3); // absurd length
    let junk_kind = ft_str(&mut b.img, "x");
    b.img.u32(junk_kind + 48, 7 << 8); // kind 7 does not exist
    let code = ft_code(&mut b.img, "f", "/y.py", 1, 2);
    b.img.u64(code + 128, 0xdead_0000); // filename pointer into nothing
    let f = b.img.alloc(88);
    b.img.u64(f, code);
    let py = reader(b.img, b.runtime);
    assert!(py.read_str(s).is_err());
    assert!(py.read_str(junk_kind).is_err());
    assert!(py.read_str(0).is_err());
    assert!(py.walk_frames(f).unwrap().error.is_some());
    let bad = py.walk_frames(0x0bad_0000).unwrap();
    assert!(bad.error.is_some() && bad.frames.is_empty());
}

#[test]
fn cyclic_thread_list_is_an_error() {
    let mut b = ft314_base();
    b.img.u64(b.tstate + 8, b.tstate); // next points to itself
    let py = reader(b.img, b.runtime);
    let interps = py.interpreters().unwrap();
    assert!(py.threads_of(&interps[0], None).is_err());
    assert!(matches!(snapshot::capture(&py), Err(crate::error::Error::Inconsistent(_))));
    let _ = b.interp;
}

/// Garbage everywhere: random bytes behind every pointer must give errors, never a panic or hang.
#[test]
fn random_memory_never_panics() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..40 {
        let mut img = Image::new();
        let base = img.alloc(64 * 1024);
        let mut bytes = vec![0u8; 64 * 1024];
        for chunk in bytes.chunks_mut(8) {
            // Mix plausible pointers into the region with raw noise.
            let v = if next() % 3 == 0 { base + (next() % (64 * 1024 - 64)) } else { next() };
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        img.mem.write(base, &bytes);
        let py = reader(img, base + (round * 8) % 4096);
        let _ = snapshot::capture(&py);
        for _ in 0..200 {
            let a = base + next() % (64 * 1024);
            let _ = py.walk_frames(a);
            let _ = py.read_str(a);
            let _ = py.dict_items(a);
            let _ = py.read_long(a);
            let _ = py.instance_attrs(a);
            let aio = crate::asyncio::Asyncio::new(&py);
            let _ = aio.await_chain(a);
            let _ = aio.read_task(a);
            let _ = aio.set_members(a);
        }
    }
}

/// A free-threaded interpreter built from nothing but a version's layout data: the offsets the
/// reader resolves for it place every object, so the same image shape serves 3.13t, 3.14t and
/// 3.15t (no such interpreter exists here for 3.13t and 3.15t; 3.14t is also tested live).
mod layout_driven {
    use super::*;
    use crate::runtime::layout_file;
    use crate::runtime::offsets::FrameOffsets;

    struct Writer {
        img: Image,
        off: Offsets,
    }

    impl Writer {
        fn str_obj(&mut self, s: &str) -> u64 {
            let o = &self.off;
            let a = self.img.alloc(o.str_ascii_size as usize + s.len() + 1);
            self.img.u64(a + o.ob_type, STR_TYPE);
            self.img.u64(a + o.str_length, s.len() as u64);
            let state = (1 << o.str_kind.0) | (1 << o.str_compact_bit) | (1 << o.str_ascii_bit);
            self.img.u32(a + o.str_state, state);
            self.img.mem.write(a + o.str_ascii_size, s.as_bytes());
            a
        }
        fn bytes_obj(&mut self, b: &[u8]) -> u64 {
            let o = &self.off;
            let a = self.img.alloc(o.bytes_sval as usize + b.len() + 1);
            self.img.u64(a + o.ob_type, BYTES_TYPE);
            self.img.u64(a + o.ob_size, b.len() as u64);
            self.img.mem.write(a + o.bytes_sval, b);
            a
        }
        /// A code object whose unit k is on line first+k.
        fn code(&mut self, name: &str, file: &str, first: i32, units: usize) -> u64 {
            let adaptive = self.off.code_adaptive.unwrap_or(0);
            let c = self.img.alloc(adaptive as usize + 2 * units + 64);
            self.img.u64(c + self.off.ob_type, CODE_TYPE);
            let (n, q, f) = (self.str_obj(name), self.str_obj(&format!("Cls.{name}")), self.str_obj(file));
            let mut table = vec![0x80 | (10 << 3), 0, 0];
            for _ in 1..units {
                table.extend([0x80 | (11 << 3), 0, 0]);
            }
            let lt = self.bytes_obj(&table);
            let o = self.off.clone();
            self.img.u64(c + o.code_name, n);
            if let Some(qo) = o.code_qualname {
                self.img.u64(c + qo, q);
            }
            self.img.u64(c + o.code_filename, f);
            self.img.u64(c + o.code_linetable, lt);
            self.img.u32(c + o.code_firstlineno, first as u32);
            c
        }
        /// An interpreter frame executing unit `unit` of `code`, linked to `previous`.
        fn frame(&mut self, code: u64, unit: u64, previous: u64) -> u64 {
            let FrameOffsets::Interp { code: co, previous: pr, instr, size, tagged, .. } = self.off.frame.clone()
            else {
                panic!("3.13+ layouts use interpreter frames")
            };
            let f = self.img.alloc(size as usize + 64);
            self.img.u64(f + co, if tagged { code | 1 } else { code });
            self.img.u64(f + pr, previous);
            self.img.u64(f + instr, code + self.off.code_adaptive.unwrap_or(0) + 2 * unit);
            f
        }
    }

    fn check(minor: u32) {
        let layout = layout_file::embedded(minor, true).expect("free-threaded layout data");
        let version = PyVersion::from_hex(0x0300_00f0 | ((minor as u64) << 16));
        let off = Offsets::resolve(version, true, Some(&layout), None).expect("offsets from layout data alone");
        let mut w = Writer { img: Image::new(), off: off.clone() };
        let runtime = w.img.alloc(2048);
        let interp = w.img.alloc(layout.size("PyInterpreterState").unwrap_or(1 << 16) as usize);
        let tstate = w.img.alloc(off.ts_read_size as usize + 64);
        let gil = w.img.alloc(off.gil_size as usize);
        w.img.u64(runtime + off.rt_interpreters_head, interp);
        w.img.u64(interp + off.interp_threads_head, tstate);
        w.img.u64(interp + off.interp_ceval_gil.expect("3.13+: ceval.gil"), gil);
        w.img.u32(gil + off.gil_enabled.unwrap_or(0), 0); // GIL disabled
        w.img.u64(tstate + off.ts_interp, interp);
        w.img.u64(tstate + off.ts_thread_id, 0x7f00_0000_1000);
        w.img.u32(tstate + off.ts_native_thread_id.expect("native thread id"), std::process::id());
        if let Some(st) = off.ts_state {
            w.img.u32(tstate + st, 1); // attached
        }
        let (outer, inner) = (w.code("main", "/srv/main.py", 10, 4), w.code("handler", "/srv/app.py", 40, 8));
        let f2 = w.frame(outer, 2, 0);
        let f1 = w.frame(inner, 5, f2);
        w.img.u64(tstate + off.ts_current_frame.expect("current_frame"), f1);
        let types =
            TypeAddrs { code: Some(CODE_TYPE), unicode: Some(STR_TYPE), none: Some(NONE), ..Default::default() };
        let pid = std::process::id() as i32;
        let py = PyProcess::from_parts(
            pid,
            Arc::new(w.img.mem),
            off,
            runtime,
            types,
            format!("/synthetic/python3.{minor}t"),
            Arc::new(crate::source::os::StaticOs::sleeping(&[pid])),
        );
        let snap = snapshot::capture(&py).unwrap_or_else(|e| panic!("3.{minor}t: {e}"));
        assert!(snap.python.free_threaded && !snap.python.gil_enabled, "3.{minor}t: {:?}", snap.python);
        let t = &snap.threads[0];
        let frames: Vec<(String, i64)> = t.frames.iter().map(|f| (f.function.to_string(), f.line)).collect();
        assert_eq!(frames, vec![("Cls.handler".into(), 45), ("Cls.main".into(), 12)], "3.{minor}t");
        assert_eq!(t.attached, if py.off.ts_state.is_some() { Some(true) } else { None }, "3.{minor}t");
    }

    #[test]
    fn free_threaded_313_from_layout_data() {
        check(13);
    }

    #[test]
    fn free_threaded_314_from_layout_data() {
        check(14);
    }

    #[test]
    fn free_threaded_315_from_layout_data() {
        check(15);
    }
}
