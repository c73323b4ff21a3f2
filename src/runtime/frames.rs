//! Walking a thread's Python frame chain: `PyFrameObject.f_back` (3.8–3.10) or
//! `_PyInterpreterFrame.previous` (3.11+), skipping entry frames, with depth and cycle bounds.

use super::offsets::FrameOffsets;
use super::PyProcess;
pub use crate::model::Frame;
use crate::source::{Buf, MemError, MemResult};
use std::collections::HashSet;

/// Deepest stack we walk; deeper chains are cut and flagged (CPython's own default limit is 1000).
pub const MAX_DEPTH: usize = 10_000;

/// A decoded `_PyInterpreterFrame`: the Python frame (None for shims), its link, its code object
/// and the instruction offset (code units) it is at.
#[derive(Debug, Clone)]
pub struct InterpFrame {
    pub frame: Option<Frame>,
    pub previous: u64,
    pub code: u64,
    pub offset: i64,
}

/// Decoded frames by (code field, instruction pointer, owner | bytecode copy << 8).
pub type FrameMemo = rustc_hash::FxHashMap<(u64, u64, u64), (Option<Frame>, u64, i64)>;
/// Entries a frame memo holds before it starts over.
const FRAME_MEMO_MAX: usize = 65_536;

/// A decoded `PyFrameObject` with the raw copy it came from.
#[derive(Debug, Clone)]
pub struct FrameObject {
    pub frame: Frame,
    pub back: u64,
    pub code: u64,
    pub lasti: i64,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct Stack {
    pub frames: Vec<Frame>,
    /// Address of each frame (PyFrameObject or _PyInterpreterFrame) and its code object.
    pub raw: Vec<(u64, u64)>,
    /// The chain was longer than MAX_DEPTH.
    pub truncated: bool,
    /// The walk stopped at an unreadable or looping frame; `frames` holds what came before it.
    pub error: Option<MemError>,
}

impl Stack {
    /// Record why the walk stopped; fatal errors (target gone, Ctrl-C, deadline) end the whole read.
    fn stop(&mut self, e: MemError) -> MemResult<()> {
        if e.is_fatal() {
            return Err(e);
        }
        self.error = Some(e);
        Ok(())
    }
}

impl PyProcess {
    /// Python frames innermost first, starting from a thread's top frame pointer. A bad link ends
    /// the walk with `Stack::error` set and the frames read so far kept.
    pub fn walk_frames(&self, top: u64) -> MemResult<Stack> {
        self.walk_frames_upto(top, MAX_DEPTH)
    }

    /// The innermost `max` Python frames only (samplers that need where a thread is, not how it
    /// got there); `truncated` when the chain goes on.
    pub fn walk_frames_upto(&self, top: u64, max: usize) -> MemResult<Stack> {
        let max = max.min(MAX_DEPTH);
        match &self.off.frame {
            FrameOffsets::Object { .. } => self.walk_frame_objects(top, max),
            FrameOffsets::Interp { .. } => self.walk_interp_frames(top, max),
        }
    }

    /// One `PyFrameObject` (3.8–3.10) decoded from a single read of the whole struct; the copy is
    /// kept so callers (coroutine await chains) take more fields from it without reading again.
    pub fn frame_object(&self, addr: u64) -> MemResult<FrameObject> {
        let FrameOffsets::Object { back, code, lasti, size } = self.off.frame else {
            return Err(MemError::Other("not a PyFrameObject layout".into()));
        };
        let bytes = self.mem().read_vec(addr, size.max(back.max(code).max(lasti) + 8) as usize)?;
        let code_addr = bytes.u64_at(code);
        let info = self.code_info(code_addr)?;
        let lasti_v = bytes.i32_at(lasti) as i64;
        // 3.8/3.9: f_lasti is a byte offset; 3.10: an instruction index into a byte-based table.
        let byte_addr = if self.version.minor >= 10 && lasti_v >= 0 { lasti_v * 2 } else { lasti_v };
        let line = info.line(byte_addr).unwrap_or(0);
        Ok(FrameObject {
            frame: Frame { function: info.function_arc(), file: info.filename.clone(), line },
            back: bytes.u64_at(back),
            code: code_addr,
            lasti: lasti_v,
            bytes,
        })
    }

    fn walk_frame_objects(&self, top: u64, max: usize) -> MemResult<Stack> {
        let mut stack = Stack::default();
        let mut seen = HashSet::new();
        let mut addr = top;
        while addr != 0 {
            if stack.frames.len() >= max {
                stack.truncated = true;
                break;
            }
            if !seen.insert(addr) {
                stack.stop(MemError::Other(format!("frame chain loops at 0x{addr:x}")))?;
                break;
            }
            let f = match self.frame_object(addr) {
                Ok(f) => f,
                Err(e) => {
                    stack.stop(e)?;
                    break;
                }
            };
            stack.frames.push(f.frame);
            stack.raw.push((addr, f.code));
            addr = f.back;
        }
        Ok(stack)
    }

    /// Decode one interpreter frame; `frame` is `None` for entry/shim or incomplete frames.
    pub fn interp_frame_code(&self, addr: u64) -> MemResult<InterpFrame> {
        let FrameOffsets::Interp { size, .. } = self.off.frame else {
            return Err(MemError::Other("not an interpreter-frame layout".into()));
        };
        let mut buf = [0u8; 128];
        let n = (size as usize).min(128);
        self.mem().read(addr, &mut buf[..n])?;
        self.interp_frame_from_bytes(&buf[..n])
    }

    /// Decode an interpreter frame already copied from the target (e.g. embedded in a coroutine).
    /// `interp_frame_from_bytes` through `memo`: a frame suspended at the same code object,
    /// instruction, owner and bytecode copy decodes to the same result, so thousands of tasks
    /// parked at one `await` cost one decode (no code-cache lock, line lookup or Arc traffic
    /// per frame). The memo belongs to one walk of one snapshot.
    pub fn interp_frame_memo(&self, b: &[u8], memo: &mut FrameMemo) -> MemResult<InterpFrame> {
        let FrameOffsets::Interp { code, previous, instr, owner, tlbc_index, .. } = self.off.frame else {
            return self.interp_frame_from_bytes(b);
        };
        let key = (
            b.u64_at(code),
            b.u64_at(instr),
            b.u8_at(owner) as u64 | (tlbc_index.map(|o| b.i32_at(o) as u32 as u64).unwrap_or(0) << 8),
        );
        if let Some((frame, code, offset)) = memo.get(&key) {
            return Ok(InterpFrame {
                frame: frame.clone(),
                previous: b.u64_at(previous),
                code: *code,
                offset: *offset,
            });
        }
        let f = self.interp_frame_from_bytes(b)?;
        if memo.len() >= FRAME_MEMO_MAX {
            memo.clear();
        }
        memo.insert(key, (f.frame.clone(), f.code, f.offset));
        Ok(f)
    }

    pub fn interp_frame_from_bytes(&self, b: &[u8]) -> MemResult<InterpFrame> {
        let FrameOffsets::Interp {
            code,
            previous,
            instr,
            owner,
            tagged,
            ref skip_owners,
            generator_owner,
            tlbc_index,
            ..
        } = self.off.frame
        else {
            return Err(MemError::Other("not an interpreter-frame layout".into()));
        };
        let prev = b.u64_at(previous);
        let own = b.u8_at(owner);
        let none = InterpFrame { frame: None, previous: prev, code: 0, offset: 0 };
        if skip_owners.contains(&own) {
            return Ok(none);
        }
        let mut code_addr = b.u64_at(code);
        if tagged {
            code_addr &= !3;
        }
        if code_addr == 0 || Some(code_addr) == self.types.none {
            return Ok(none);
        }
        let info = self.code_info(code_addr)?;
        let base = self.bytecode_base(code_addr, tlbc_index.map(|o| b.i32_at(o)))?;
        let ip = b.u64_at(instr);
        let idx = (ip as i64).wrapping_sub(base as i64) / 2;
        if own != generator_owner {
            if let Some(ft) = info.firsttraceable {
                if idx < ft {
                    return Ok(none); // still being set up (before RESUME): CPython hides these too
                }
            }
        }
        let line = info.line(idx).unwrap_or(0);
        Ok(InterpFrame {
            frame: Some(Frame { function: info.function_arc(), file: info.filename.clone(), line }),
            previous: prev,
            code: code_addr,
            offset: idx,
        })
    }

    /// Start of the bytecode a frame executes: `co_code_adaptive`, or in free-threaded 3.14+ the
    /// thread-local copy `co_tlbc->entries[tlbc_index]`.
    fn bytecode_base(&self, code_addr: u64, tlbc_index: Option<i32>) -> MemResult<u64> {
        let adaptive = code_addr + self.off.code_adaptive.unwrap_or(0);
        match (tlbc_index, self.off.code_tlbc) {
            (Some(i), Some(tlbc_off)) if i > 0 => {
                let arr = self.mem().read_u64(code_addr + tlbc_off)?;
                let n = self.mem().read_i64(arr)?;
                if arr == 0 || (i as i64) >= n || n > 1 << 16 {
                    return Err(MemError::Unmapped(arr));
                }
                self.mem().read_u64(arr + 8 + 8 * i as u64)
            }
            _ => Ok(adaptive),
        }
    }

    fn walk_interp_frames(&self, top: u64, max: usize) -> MemResult<Stack> {
        let mut stack = Stack::default();
        let mut seen = HashSet::new();
        let mut addr = top;
        let mut visited = 0usize;
        while addr != 0 {
            visited += 1;
            if visited > max * 2 + 8 {
                stack.truncated = true;
                break;
            }
            if !seen.insert(addr) {
                stack.stop(MemError::Other(format!("frame chain loops at 0x{addr:x}")))?;
                break;
            }
            let (frame, prev, code) = match self.interp_frame_code(addr) {
                Ok(d) => (d.frame, d.previous, d.code),
                Err(e) => {
                    stack.stop(e)?;
                    break;
                }
            };
            if let Some(f) = frame {
                if stack.frames.len() >= max {
                    stack.truncated = true;
                    break;
                }
                stack.frames.push(f);
                stack.raw.push((addr, code));
            }
            addr = prev;
        }
        Ok(stack)
    }
}
