//! Compact JSON of a snapshot, with the task records (the bulk of a 10,000-task document) written
//! by hand and everything else through serde: byte for byte what serde_json's compact form gives.

use super::WRITE_CHUNK;
use crate::model::{AwaitPoint, Snapshot, TaskSnap, Text, WaitingOn};
use std::io::{self, Write};

/// Why: through serde every key and value of every task is a separately escaped string (320,000
/// of them for 10,000 tasks, a third of `dump --json`'s instructions). Here keys are literals,
/// strings that need no escaping (hex ids, states, most names) are copied, and each task is built
/// in one reused buffer. The fields are destructured exhaustively so that a new field fails to
/// compile until it is written here too; tests compare with serde's output.
pub fn write_snapshot<W: Write>(w: &mut W, s: &Snapshot) -> io::Result<()> {
    let Snapshot {
        schema,
        pid,
        captured_at,
        python,
        threads,
        tasks,
        findings,
        interpreters,
        capture,
        cmdline,
        locks,
        loops,
        ns_pid,
    } = s;
    w.write_all(b"{")?;
    serde_field(w, b"\"schema\":", schema)?;
    serde_field(w, b",\"pid\":", pid)?;
    serde_field(w, b",\"captured_at\":", captured_at)?;
    serde_field(w, b",\"python\":", python)?;
    serde_field(w, b",\"threads\":", threads)?;
    w.write_all(b",\"tasks\":[")?;
    // Tasks are rendered into chunks of at least WRITE_CHUNK bytes: a write that large passes
    // through the callers' buffered writers without being copied into them (at 10,000 tasks
    // the per-task writes were a 7.7 MB copy on top of rendering).
    let mut buf = Vec::with_capacity(WRITE_CHUNK + (64 << 10));
    let mut stacks = StackJson::default();
    for (i, t) in tasks.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        task(&mut buf, t, &mut stacks);
        if buf.len() >= WRITE_CHUNK {
            w.write_all(&buf)?;
            buf.clear();
        }
    }
    w.write_all(&buf)?;
    w.write_all(b"]")?;
    serde_field(w, b",\"findings\":", findings)?;
    serde_field(w, b",\"interpreters\":", interpreters)?;
    if let Some(c) = capture {
        serde_field(w, b",\"capture\":", c)?;
    }
    if let Some(c) = cmdline {
        serde_field(w, b",\"cmdline\":", c)?;
    }
    if !locks.is_empty() {
        serde_field(w, b",\"locks\":", locks)?;
    }
    if !loops.is_empty() {
        serde_field(w, b",\"loops\":", loops)?;
    }
    if let Some(n) = ns_pid {
        serde_field(w, b",\"ns_pid\":", n)?;
    }
    w.write_all(b"}")
}

/// `key` (with its separator) and the value as serde_json writes it.
fn serde_field<W: Write, T: serde::Serialize + ?Sized>(w: &mut W, key: &[u8], v: &T) -> io::Result<()> {
    w.write_all(key)?;
    Ok(serde_json::to_writer(&mut *w, v)?)
}

/// Whether JSON needs any byte of `s` escaped (a control byte, `"` or `\\`), eight bytes at a
/// time: strings are most of a snapshot's JSON, and a test per byte was a tenth of `dump --json`'s
/// instructions.
fn needs_escape(s: &[u8]) -> bool {
    use super::{has_byte, has_less};
    super::any_word(s, b'a', |w| has_less(w, 0x20) || has_byte(w, b'"') || has_byte(w, b'\\'))
}

/// A JSON string as serde_json writes it: copied as is when nothing in it needs escaping.
fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Writing to a Vec cannot fail, and serde_json escapes exactly as the rest of the document.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// `key` and the string, for a field serde skips when it is `None`.
fn opt_string(out: &mut Vec<u8>, key: &[u8], v: Option<&str>) {
    if let Some(v) = v {
        out.extend_from_slice(key);
        string(out, v);
    }
}

fn int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn strings(out: &mut Vec<u8>, v: &[Text]) {
    out.push(b'[');
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, s);
    }
    out.push(b']');
}

/// The JSON of coroutine-stack lists already written in this document, by list: tasks parked
/// at the same awaits share one list (see `asyncio::coro`), whose JSON is made once and copied.
/// Keyed by the list's address and length, valid while the snapshot being written is borrowed
/// (which keeps every list alive).
#[derive(Default)]
struct StackJson {
    done: rustc_hash::FxHashMap<(usize, usize), Vec<u8>>,
}

impl StackJson {
    /// Lists remembered at most (a document of distinct stacks gains nothing from more).
    const MAX: usize = 4096;

    fn write(&mut self, out: &mut Vec<u8>, stack: &std::sync::Arc<[crate::model::Frame]>) {
        let key = crate::model::Frame::list_identity(stack);
        if let Some(json) = self.done.get(&key) {
            out.extend_from_slice(json);
            return;
        }
        let mut json = Vec::new();
        for (i, f) in stack.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            f.with_json(|raw| match raw {
                Some(raw) => json.extend_from_slice(raw.get().as_bytes()),
                None => {
                    let _ = serde_json::to_writer(&mut json, f);
                }
            });
        }
        out.extend_from_slice(&json);
        if self.done.len() >= Self::MAX {
            self.done.clear();
        }
        self.done.insert(key, json);
    }
}

fn task(out: &mut Vec<u8>, t: &TaskSnap, stacks: &mut StackJson) {
    let TaskSnap {
        id,
        name,
        state,
        thread,
        interpreter,
        coroutine_stack,
        awaiting,
        awaited_by,
        waiting_on,
        await_point,
        event_loop,
        holds_locks,
        waits_for_lock,
        error,
        waiting_s,
    } = t;
    out.extend_from_slice(b"{\"id\":");
    string(out, id);
    out.extend_from_slice(b",\"name\":");
    string(out, name);
    out.extend_from_slice(b",\"state\":");
    string(out, state);
    out.extend_from_slice(b",\"thread\":");
    match thread {
        Some(tid) => int(out, *tid as i64),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"interpreter\":");
    int(out, *interpreter);
    out.extend_from_slice(b",\"coroutine_stack\":[");
    stacks.write(out, coroutine_stack);
    out.extend_from_slice(b"],\"awaiting\":");
    strings(out, awaiting);
    out.extend_from_slice(b",\"awaited_by\":");
    strings(out, awaited_by);
    out.extend_from_slice(b",\"waiting_on\":");
    waiting(out, waiting_on);
    if let Some(p) = await_point {
        out.extend_from_slice(b",\"await_point\":");
        point(out, p);
    }
    opt_string(out, b",\"event_loop\":", event_loop.as_deref());
    if !holds_locks.is_empty() {
        out.extend_from_slice(b",\"holds_locks\":");
        strings(out, holds_locks);
    }
    opt_string(out, b",\"waits_for_lock\":", waits_for_lock.as_deref());
    opt_string(out, b",\"error\":", error.as_deref());
    if let Some(s) = waiting_s {
        out.extend_from_slice(b",\"waiting_s\":");
        // Floats (and non-finite ones as null) exactly as serde_json formats them.
        let _ = serde_json::to_writer(&mut *out, s);
    }
    out.push(b'}');
}

fn waiting(out: &mut Vec<u8>, w: &WaitingOn) {
    let WaitingOn { kind, future, object, object_type, runnable } = w;
    out.extend_from_slice(b"{\"kind\":");
    string(out, kind);
    opt_string(out, b",\"future\":", future.as_deref());
    opt_string(out, b",\"object\":", object.as_deref());
    opt_string(out, b",\"object_type\":", object_type.as_deref());
    out.extend_from_slice(if *runnable { b",\"runnable\":true}" } else { b",\"runnable\":false}" });
}

fn point(out: &mut Vec<u8>, p: &AwaitPoint) {
    let AwaitPoint { code, offset, awaited } = p;
    out.extend_from_slice(b"{\"code\":");
    string(out, code);
    out.extend_from_slice(b",\"offset\":");
    int(out, *offset);
    opt_string(out, b",\"awaited\":", awaited.as_deref());
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Frame;
    use std::sync::Arc;

    #[test]
    fn escape_check_finds_every_position_and_length() {
        for len in [0usize, 1, 31, 32, 33, 64, 95] {
            let clean = "a".repeat(len);
            assert!(!needs_escape(clean.as_bytes()), "{len}");
            for at in 0..len {
                for bad in [b'"', b'\\', b'\n', 0u8, 0x1f] {
                    let mut b = clean.clone().into_bytes();
                    b[at] = bad;
                    assert!(needs_escape(&b), "{len} {at} {bad}");
                }
            }
        }
        assert!(!needs_escape("ü 0x7f\u{7f}".as_bytes()));
    }

    fn hand(s: &Snapshot) -> String {
        let mut out = Vec::new();
        write_snapshot(&mut out, s).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn full_task() -> TaskSnap {
        let f = Frame { function: Arc::from("Event.wait"), file: Arc::from("/srv/\"q\"\u{1b}.py"), line: 213 };
        TaskSnap {
            id: "0x7f00".into(),
            name: "evil\n\u{7}\"name\\ ü".into(),
            state: "pending".into(),
            thread: Some(-5),
            interpreter: 3,
            coroutine_stack: vec![f.clone(), Frame { line: 0, ..f }].into(),
            awaiting: vec!["0x1".into(), "0x\t2".into()].into(),
            awaited_by: vec!["0x3".into()].into(),
            waiting_on: WaitingOn {
                kind: "event".into(),
                future: Some("0x10".into()),
                object: Some("0x11".into()),
                object_type: Some("Ev\"ent".into()),
                runnable: true,
            },
            await_point: Some(AwaitPoint { code: "0x20".into(), offset: -1, awaited: Some("0x21".into()) }),
            event_loop: Some("0x30".into()),
            holds_locks: vec!["0x40".into()],
            waits_for_lock: Some("0x41".into()),
            error: Some("name unreadable: \u{0}".into()),
            waiting_s: Some(1.0 / 3.0),
        }
    }

    #[test]
    fn hand_written_json_is_what_serde_writes() {
        let mut s: Snapshot =
            serde_json::from_str(r#"{"schema":"x","pid":1,"captured_at":"t","python":{"version":"3.14.0","executable":"/p","free_threaded":false,"gil_enabled":true},"threads":[],"tasks":[],"findings":[]}"#)
                .unwrap();
        assert_eq!(hand(&s), serde_json::to_string(&s).unwrap());
        let sparse = TaskSnap {
            thread: None,
            await_point: Some(AwaitPoint { code: "0x1".into(), offset: i64::MAX, awaited: None }),
            waiting_on: WaitingOn { kind: "unknown".into(), ..Default::default() },
            event_loop: None,
            holds_locks: vec![],
            waits_for_lock: None,
            error: None,
            waiting_s: Some(f64::NAN),
            coroutine_stack: Default::default(),
            awaiting: Default::default(),
            awaited_by: Default::default(),
            ..full_task()
        };
        s.tasks = vec![full_task(), sparse.clone(), TaskSnap { await_point: None, waiting_s: None, ..sparse }];
        s.cmdline = Some("python\u{1b}[2J app.py".into());
        s.ns_pid = Some(7);
        s.capture = Some(Default::default());
        // Twice: the second time frames come from the frame cache.
        for _ in 0..2 {
            assert_eq!(hand(&s), serde_json::to_string(&s).unwrap());
        }
        let back: Snapshot = serde_json::from_str(&hand(&s)).unwrap();
        assert_eq!(back.tasks[0].name, s.tasks[0].name);
    }
}
