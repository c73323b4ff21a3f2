//! One Python frame as every layer names it: function (co_qualname on 3.11+), file and line.
//! Strings are shared with the code-object cache, so cloning a frame copies no text.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
pub struct Frame {
    pub function: std::sync::Arc<str>,
    pub file: std::sync::Arc<str>,
    /// 0 when the location has no line ("no location" entries).
    pub line: i64,
}

/// Whether a thread's innermost frames are the event loop's selector (waiting for I/O/timers).
pub fn in_selector(frames: &[Frame]) -> bool {
    frames.iter().take(3).any(|f| {
        let func = f.function.rsplit('.').next().unwrap_or("");
        f.file.ends_with("selectors.py") && matches!(func, "select" | "poll" | "_run_once")
    }) || frames.first().map(|f| f.file.contains("uvloop")).unwrap_or(false)
}

/// Distinct frames serialized so far, as JSON text. 10,000 tasks suspended at the same few places
/// repeat the same handful of frames: each is escaped once and then copied, instead of escaping
/// its file path again for every task (JSON string escaping was a fifth of `dump --json`'s work).
/// Keyed by the addresses of the shared strings, which the entry keeps alive so that no other
/// string can take their address while the entry exists.
type FrameJsonCache = rustc_hash::FxHashMap<FrameIdentity, (Arc<str>, Arc<str>, Box<serde_json::value::RawValue>)>;

thread_local! {
    static FRAME_JSON: RefCell<FrameJsonCache> = RefCell::new(FrameJsonCache::default());
}

/// Entries kept at most (the cache is emptied when full).
const FRAME_JSON_MAX: usize = 65_536;

/// The frame's fields as the derived form would write them.
#[derive(Serialize)]
struct FrameFields<'a> {
    function: &'a str,
    file: &'a str,
    line: i64,
}

/// Which shared strings and line a frame is made of: equal identities mean equal frames (the
/// strings are the code-object cache's, one per code object). Cheaper than comparing text.
pub type FrameIdentity = (usize, usize, i64);

impl Frame {
    pub fn identity(&self) -> FrameIdentity {
        (Arc::as_ptr(&self.function) as *const u8 as usize, Arc::as_ptr(&self.file) as *const u8 as usize, self.line)
    }

    /// Where a shared list of frames is (address, length): tasks parked at the same awaits hold
    /// one list, so per-document caches of rendered stacks are keyed by it.
    pub fn list_identity(frames: &Arc<[Frame]>) -> (usize, usize) {
        (frames.as_ptr() as usize, frames.len())
    }

    /// Hand the frame's compact JSON text (from the cache) to `f`; `None` if it could not be made.
    pub fn with_json<R>(&self, f: impl FnOnce(Option<&serde_json::value::RawValue>) -> R) -> R {
        let key = self.identity();
        FRAME_JSON.with(move |c| {
            let mut c = c.borrow_mut();
            if !c.contains_key(&key) {
                let fields = FrameFields { function: &self.function, file: &self.file, line: self.line };
                let Ok(raw) = serde_json::value::to_raw_value(&fields) else { return f(None) };
                if c.len() >= FRAME_JSON_MAX {
                    c.clear();
                }
                c.insert(key, (self.function.clone(), self.file.clone(), raw));
            }
            f(c.get(&key).map(|(_, _, raw)| raw.as_ref()))
        })
    }
}

impl Serialize for Frame {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        self.with_json(|raw| match raw {
            // serde_json's serializers (text and `to_value`) take a raw value as the JSON it holds.
            Some(raw) => raw.serialize(ser),
            None => FrameFields { function: &self.function, file: &self.file, line: self.line }.serialize(ser),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_frame_json_reads_back_the_same_everywhere() {
        let file: Arc<str> = Arc::from("/srv/app \"quoted\" \u{1b}.py");
        let f = Frame { function: Arc::from("Event.wait"), file: file.clone(), line: 213 };
        let g = Frame { function: f.function.clone(), file, line: 214 };
        for _ in 0..2 {
            // The second round is served from the cache.
            let v = vec![f.clone(), g.clone(), f.clone()];
            let compact: Vec<Frame> = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
            let pretty: Vec<Frame> = serde_json::from_str(&serde_json::to_string_pretty(&v).unwrap()).unwrap();
            let value: Vec<Frame> = serde_json::from_value(serde_json::to_value(&v).unwrap()).unwrap();
            assert_eq!(compact, v);
            assert_eq!(pretty, v);
            assert_eq!(value, v);
        }
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"function":"Event.wait","file":"/srv/app \"quoted\" \u001b.py","line":213}"#
        );
    }
}
