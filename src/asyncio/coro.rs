//! Await chains: from a task's coroutine follow each suspended coroutine's "yield from" target
//! (per-version rules) down to the future it ultimately waits on. Bounded in depth.

use super::offsets::{FrameRunning, YieldFrom};
use super::{Asyncio, ObjKind};
use crate::model::Frame;
use crate::source::{Buf, MemError, MemResult};

/// Distinct coroutine stacks shared per walk before the table starts over.
const MAX_SHARED_STACKS: usize = 4096;

/// Locals and stack slots copied with a coroutine object (more are read one by one).
const OBJECT_SLOTS: usize = 16;

/// Longest await chain followed.
pub const MAX_CHAIN: usize = 256;

/// The result of following a task's coroutine.
#[derive(Debug, Clone, Default)]
pub struct AwaitChain {
    /// Coroutine frames, innermost first. Shared from here on: made while the chain is read, so
    /// the buffer it was collected in is freed (and reused by the next chain) at once; made later,
    /// 100,000 such buffers would sit freed between the records (~19 MB more peak memory).
    pub frames: std::sync::Arc<[Frame]>,
    /// Per coroutine frame, innermost first: the coroutine object and the frame's first local
    /// (`self` for methods, 0 if none). One list, not two: one allocation per task.
    pub coroutines: Vec<(u64, u64)>,
    /// The object the innermost coroutine awaits (a Future/Task via FutureIter, or the object itself).
    pub awaited: Option<u64>,
    /// The coroutine is running right now (its frames are on a thread's stack).
    pub running: bool,
    /// A coroutine the chain reached through an await had already finished: it was read
    /// mid-step (a coroutine whose awaited one returns moves on in the same step).
    pub finished_link: bool,
    /// Innermost coroutine frame's code object and instruction offset: where the task is suspended.
    pub point: Option<(u64, i64)>,
}

/// One coroutine/generator decoded: its frame, what it awaits, whether it is executing, its first
/// local, and the code object and instruction offset it is at.
struct GenFrame {
    frame: Option<Frame>,
    awaited: Option<u64>,
    running: bool,
    /// The coroutine has returned (no frame left).
    finished: bool,
    first_local: u64,
    point: Option<(u64, i64)>,
}

impl GenFrame {
    fn finished() -> GenFrame {
        GenFrame { frame: None, awaited: None, running: false, finished: true, first_local: 0, point: None }
    }
}

/// One await chain being followed, link by link (see `Asyncio::chain_step`): many tasks' chains
/// advance together, one link each per step, so the objects of a step can be fetched at once.
pub(super) struct ChainWalk {
    /// The task's own coroutine.
    coro: u64,
    /// The object the next step reads.
    obj: u64,
    chain: AwaitChain,
    /// Coroutine frames so far, innermost last.
    frames: Vec<Frame>,
    steps: usize,
    done: bool,
}

/// 3.11+: one copy of each object serves its type, its state and its embedded frame. A link's
/// copy is used only while that link is decoded, so one buffer serves every walk of a reader
/// (zeroing one per link cost as much as copying into it; one per walk, 512 bytes more to zero
/// and move per task).
pub(super) type LinkBuf = [u8; 512];

impl ChainWalk {
    /// Whether the chain has ended (its last link read, or MAX_CHAIN reached).
    pub(super) fn done(&self) -> bool {
        self.done
    }
}

impl Asyncio<'_> {
    pub fn await_chain(&self, coro: u64) -> MemResult<AwaitChain> {
        // The walker's scratch list (taken, so nothing stays borrowed): no buffer per chain.
        let mut w = self.chain_start(coro, std::mem::take(&mut *self.chain_scratch.borrow_mut()));
        let mut buf: LinkBuf = [0u8; 512];
        while !w.done {
            self.chain_step(&mut w, &mut buf)?;
        }
        let (chain, frames) = self.chain_finish(w);
        *self.chain_scratch.borrow_mut() = frames;
        Ok(chain)
    }

    /// A walk from a task's coroutine, collecting frames into `frames` (emptied first).
    pub(super) fn chain_start(&self, coro: u64, mut frames: Vec<Frame>) -> ChainWalk {
        frames.clear();
        ChainWalk { coro, obj: coro, chain: AwaitChain::default(), frames, steps: 0, done: false }
    }

    /// What the next step of `w` reads: the object's first bytes (see `read_object`).
    pub(super) fn chain_next_range(&self, w: &ChainWalk) -> (u64, usize) {
        if self.off.gen_iframe.is_some() {
            (w.obj, self.object_read_len())
        } else {
            (w.obj, self.header_len())
        }
    }

    /// 3.8–3.10: the bytes of an object's head one link reads at once: its type, and for a
    /// coroutine its frame pointer and running flag, for a FutureIter its future.
    fn header_len(&self) -> usize {
        let o = &self.off;
        [self.py.off.ob_type, o.gen_frame.unwrap_or(16), o.gen_running.unwrap_or(0), o.futureiter_future]
            .into_iter()
            .fold(0, u64::max)
            .saturating_add(8)
            .min(std::mem::size_of::<LinkBuf>() as u64) as usize
    }

    /// Follow one link of `w`: read its current object and decode it (a coroutine's frame and
    /// what it awaits, or the future at the chain's end). An error ends the walk.
    pub(super) fn chain_step(&self, w: &mut ChainWalk, buf: &mut LinkBuf) -> MemResult<()> {
        if w.done {
            return Ok(());
        }
        if w.steps >= MAX_CHAIN {
            w.done = true;
            return Ok(());
        }
        w.steps += 1;
        let r = self.chain_link(w, buf);
        if r.is_err() {
            w.done = true;
        }
        r
    }

    /// The link at `w.obj`: its kind, then what it adds to the chain and where the chain goes.
    fn chain_link(&self, w: &mut ChainWalk, buf: &mut LinkBuf) -> MemResult<()> {
        let (coro, obj) = (w.coro, w.obj);
        let mut len = 0usize;
        let kind = if self.off.gen_iframe.is_some() {
            len = self.read_object(obj, buf)?;
            self.kind_of_type(buf[..len].u64_at(self.py.off.ob_type))
        } else {
            // The head in one read (an object too close to a mapping's end for it: its type
            // alone). The task's own coroutine must be readable; a later link that is not is
            // simply where the chain ends (an awaited object of unknown kind).
            let want = self.header_len();
            let ty = match self.py.mem().read(obj, &mut buf[..want]) {
                Ok(()) => {
                    len = want;
                    Ok(buf[..len].u64_at(self.py.off.ob_type))
                }
                Err(_) => self.py.ob_type(obj),
            };
            match ty {
                Ok(ty) => self.kind_of_type(ty),
                Err(e) if obj == coro => return Err(e),
                Err(_) => ObjKind::Other,
            }
        };
        let chain = &mut w.chain;
        match kind {
            ObjKind::Coroutine | ObjKind::Generator => {
                let g = match self.off.gen_iframe {
                    // 3.11+: the frame lives inside the coroutine: one read decodes it all.
                    Some(_) => self.embedded_gen_frame(obj, &buf[..len])?,
                    None => self.frame_object_gen(obj, &buf[..len])?,
                };
                if let Some(f) = g.frame {
                    w.frames.push(f);
                    chain.coroutines.push((obj, g.first_local));
                    chain.point = g.point;
                }
                chain.finished_link |= g.finished && obj != coro;
                chain.running |= g.running;
                match g.awaited {
                    Some(next) => w.obj = next,
                    None => w.done = true,
                }
            }
            ObjKind::FutureIter => {
                let fut = if (self.off.futureiter_future + 8) as usize <= len {
                    buf[..len].u64_at(self.off.futureiter_future)
                } else {
                    self.py.mem().read_u64(obj + self.off.futureiter_future)?
                };
                chain.awaited = (fut != 0).then_some(fut);
                w.done = true;
            }
            ObjKind::Task | ObjKind::Future | ObjKind::GatheringFuture | ObjKind::PyTask | ObjKind::PyFuture => {
                chain.awaited = Some(obj);
                w.done = true;
            }
            _ => {
                if obj != coro {
                    chain.awaited = Some(obj);
                }
                w.done = true;
            }
        }
        Ok(())
    }

    /// The chain a finished walk followed, and its frame list back (empty, for the next walk).
    pub(super) fn chain_finish(&self, w: ChainWalk) -> (AwaitChain, Vec<Frame>) {
        let ChainWalk { mut chain, mut frames, .. } = w;
        chain.frames = self.shared_stack(&mut frames);
        chain.coroutines.reverse();
        (chain, frames)
    }

    /// The coroutine stack of `frames` (collected innermost last) as a shared list, innermost first:
    /// tasks parked at the same awaits have equal stacks (same code, same lines), and 10,000 of
    /// them share one list instead of holding 10,000 copies (less memory to fault in, no
    /// allocation per task). Frames are compared by the identity of their shared strings and
    /// their line, so equal means equal. Empties `frames`.
    fn shared_stack(&self, frames: &mut Vec<Frame>) -> std::sync::Arc<[Frame]> {
        use std::hash::{Hash, Hasher};
        let mut h = rustc_hash::FxHasher::default();
        for f in frames.iter() {
            f.identity().hash(&mut h);
        }
        let key = h.finish();
        let mut stacks = self.stacks.borrow_mut();
        if let Some(s) = stacks.get(&key) {
            if s.len() == frames.len() && s.iter().zip(frames.iter().rev()).all(|(a, b)| a.identity() == b.identity()) {
                frames.clear();
                return s.clone();
            }
        }
        let s: std::sync::Arc<[Frame]> = frames.drain(..).rev().collect();
        if stacks.len() >= MAX_SHARED_STACKS {
            stacks.clear();
        }
        stacks.insert(key, s.clone());
        s
    }

    /// 3.8–3.10: a coroutine's heap frame object (NULL once finished), read once: its frame, the
    /// awaited object, and its first local (`self` for methods). `head`: the coroutine's first
    /// bytes as the link read them (`header_len`; fields past it are read on their own).
    fn frame_object_gen(&self, gen: u64, head: &[u8]) -> MemResult<GenFrame> {
        let py = self.py;
        let o = &self.off;
        let mem = py.mem();
        let field = |at: u64, size: u64| -> MemResult<u64> {
            if (at + size) as usize <= head.len() {
                Ok(if size == 1 { head.u8_at(at) as u64 } else { head.u64_at(at) })
            } else if size == 1 {
                mem.read_u8(gen + at).map(u64::from)
            } else {
                mem.read_u64(gen + at)
            }
        };
        let f = field(o.gen_frame.unwrap_or(16), 8)?;
        if f == 0 {
            return Ok(GenFrame::finished());
        }
        let fo = py.frame_object(f)?;
        let b = &fo.bytes[..];
        let code_bytes = o.code_code.map(|c| mem.read_u64(fo.code + c)).transpose()?.unwrap_or(0);
        let frame_running = match o.f_running {
            Some((at, FrameRunning::Executing)) => (at as usize) < b.len() && b.u8_at(at) != 0,
            Some((at, FrameRunning::State)) => (at as usize) < b.len() && b.i8_at(at) == 0,
            None => false,
        };
        let gen_running = match o.gen_running {
            Some(at) => field(at, 1)? != 0,
            None => false,
        };
        let yf = match o.yield_from {
            YieldFrom::StackTop => {
                let top = b.u64_at(o.f_stacktop.unwrap_or(72));
                if top != 0 && fo.lasti >= 0 && self.next_opcode(code_bytes, fo.lasti + 2)? == Some(72) {
                    Some(mem.read_u64(top.wrapping_sub(8))?)
                } else {
                    None
                }
            }
            _ => {
                let depth = b.i32_at(o.f_stackdepth.unwrap_or(80)) as i64;
                if fo.lasti >= 0
                    && depth > 0
                    && depth < 1 << 16
                    && self.next_opcode(code_bytes, (fo.lasti + 1) * 2)? == Some(72)
                {
                    let base = b.u64_at(o.f_valuestack);
                    Some(mem.read_u64(base.wrapping_add(8 * (depth as u64 - 1)))?)
                } else {
                    None
                }
            }
        };
        // Locals may live past the copied struct for frames with many slots.
        let first = if (o.f_localsplus + 8) as usize <= b.len() {
            b.u64_at(o.f_localsplus)
        } else {
            mem.read_u64(f + o.f_localsplus)?
        };
        // A receiver is never None: None on top is the value the coroutine is being resumed
        // with, pushed before the frame says it runs (3.8-3.10 push it, then enter the frame).
        let resuming = yf.is_some() && yf == py.types.none;
        Ok(GenFrame {
            frame: Some(fo.frame),
            awaited: yf.filter(|x| *x != 0 && !resuming),
            running: frame_running || gen_running || resuming,
            finished: false,
            first_local: first,
            point: Some((fo.code, fo.lasti)),
        })
    }

    /// Copy the first bytes of an object: a coroutine's header, its embedded frame and its first
    /// OBJECT_SLOTS locals and stack slots (a slot past them is read on its own, see
    /// `embedded_gen_frame`); near the end of a mapping, just the header and frame. Five of these
    /// per task: copying 512 bytes each showed in `perf` (2 % of the process at 10,101 tasks).
    fn read_object(&self, obj: u64, buf: &mut [u8; 512]) -> MemResult<usize> {
        let min = self.object_min_len().min(buf.len());
        let want = self.object_read_len().min(buf.len());
        if self.py.mem().read(obj, &mut buf[..want]).is_ok() {
            return Ok(want);
        }
        if self.py.mem().read(obj, &mut buf[..min]).is_ok() {
            return Ok(min);
        }
        self.py.mem().read(obj, &mut buf[..32])?;
        Ok(32)
    }

    /// The bytes `read_object` copies when it can: the object's header, its embedded frame and
    /// OBJECT_SLOTS slots past it.
    fn object_read_len(&self) -> usize {
        (self.object_min_len() + 8 * OBJECT_SLOTS).min(512)
    }

    /// The header and embedded frame alone (copied near the end of a mapping).
    fn object_min_len(&self) -> usize {
        (self.off.gen_iframe.unwrap_or(72) + self.interp_frame_size() + 8) as usize
    }

    /// 3.11+: decode a coroutine/generator and its embedded frame from one copy of the object:
    /// (frame, awaited object, executing, first local).
    fn embedded_gen_frame(&self, gen: u64, b: &[u8]) -> MemResult<GenFrame> {
        let py = self.py;
        let o = &self.off;
        let iframe_off = o.gen_iframe.unwrap_or(72);
        let frame_size = self.interp_frame_size();
        if b.len() < (iframe_off + frame_size) as usize {
            return Err(MemError::Unmapped(gen));
        }
        let len = b.len();
        let slot = |addr: u64| -> MemResult<u64> {
            if addr >= gen && addr + 8 <= gen + len as u64 {
                Ok(b.u64_at(addr - gen))
            } else {
                py.mem().read_u64(addr)
            }
        };
        let state = b.u8_at(o.gen_frame_state.unwrap_or(67)) as i8;
        if o.state_finished.contains(&state) || (o.state_finished.len() == 2 && state >= o.state_finished[0]) {
            return Ok(GenFrame::finished());
        }
        let iframe = gen + iframe_off;
        let fb = &b[iframe_off as usize..];
        let decoded =
            py.interp_frame_memo(&fb[..(frame_size as usize).min(fb.len())], &mut self.frames.borrow_mut())?;
        let executing = state == 0 && py.version.minor <= 14 || (py.version.minor >= 15 && state == 4);
        let tagged = py.version.at_least(3, 14) || py.free_threaded;
        let first = {
            let v = fb.u64_at(o.if_localsplus);
            if tagged && v & 3 == 3 {
                0
            } else if tagged {
                v & !3
            } else {
                v
            }
        };
        let yf = match o.yield_from {
            YieldFrom::Resume { opcodes } if state == o.state_suspended => {
                let ip = fb.u64_at(o.if_instr);
                let next = py.mem().read_u16(ip + 2)?;
                let (op, arg) = ((next & 0xff) as u8, (next >> 8) as u8);
                let top = fb.i32_at(o.if_stack) as i64;
                if opcodes.contains(&op) && arg >= 2 && (1..1 << 16).contains(&top) {
                    Some(slot(iframe + o.if_localsplus + 8 * (top as u64 - 1))? & !1)
                } else {
                    None
                }
            }
            YieldFrom::StateIndex if state == o.state_suspended => {
                let top = fb.i32_at(o.if_stack) as i64;
                if (1..1 << 16).contains(&top) {
                    Some(slot(iframe + o.if_localsplus + 8 * (top as u64 - 1))? & !1)
                } else {
                    None
                }
            }
            YieldFrom::StatePointer { depth } if state == o.state_suspended => {
                let sp = fb.u64_at(o.if_stack);
                if sp < iframe || sp - iframe > 1 << 20 {
                    return Err(MemError::Unmapped(sp));
                }
                let v = slot(sp - 8 * depth)?;
                if v & 3 == 3 {
                    None
                } else {
                    Some(v & !3)
                }
            }
            _ => None,
        };
        Ok(GenFrame {
            point: decoded.frame.as_ref().map(|_| (decoded.code, decoded.offset)),
            frame: decoded.frame,
            awaited: yf.filter(|x| *x != 0 && Some(*x) != py.types.none),
            running: executing,
            finished: false,
            first_local: first,
        })
    }

    fn next_opcode(&self, code_bytes: u64, at: i64) -> MemResult<Option<u8>> {
        if code_bytes == 0 || at < 0 {
            return Ok(None);
        }
        let size = self.py.mem().read_i64(code_bytes + self.py.off.ob_size)?;
        if at >= size {
            return Ok(None);
        }
        Ok(Some(self.py.mem().read_u8(code_bytes + self.py.off.bytes_sval + at as u64)?))
    }
}

/// Most value-stack slots looked at per frame.
pub const MAX_STACK_SLOTS: u64 = 512;

impl Asyncio<'_> {
    /// The evaluation-stack values of a suspended coroutine's frame (what `async with` keeps alive:
    /// the bound `__aexit__` before 3.14, the context manager itself from 3.14).
    pub fn coro_stack_values(&self, gen: u64) -> MemResult<Vec<u64>> {
        let py = self.py;
        let o = &self.off;
        let mem = py.mem();
        let (base, top) = if let Some(fo) = o.gen_frame {
            let f = mem.read_u64(gen + fo)?;
            if f == 0 {
                return Ok(vec![]);
            }
            let base = mem.read_u64(f + o.f_valuestack)?;
            let top = match o.yield_from {
                YieldFrom::StackTop => mem.read_u64(f + o.f_stacktop.unwrap_or(72))?,
                _ => {
                    let d = mem.read_i32(f + o.f_stackdepth.unwrap_or(80))? as i64;
                    if !(0..MAX_STACK_SLOTS as i64).contains(&d) {
                        return Ok(vec![]);
                    }
                    base + 8 * d as u64
                }
            };
            (base, top)
        } else {
            let iframe = gen + o.gen_iframe.unwrap_or(72);
            let mut code = mem.read_u64(iframe + self.code_field())?;
            code &= !3;
            let info = py.code_info(code)?;
            let Some(nlp) = info.nlocalsplus else { return Ok(vec![]) };
            let base = iframe + o.if_localsplus + 8 * nlp as u64;
            let top = if matches!(o.yield_from, YieldFrom::StatePointer { .. }) {
                mem.read_u64(iframe + o.if_stack)?
            } else {
                let t = mem.read_i32(iframe + o.if_stack)? as i64;
                iframe + o.if_localsplus + 8 * t.max(0) as u64
            };
            (base, top)
        };
        if top <= base || (top - base) / 8 > MAX_STACK_SLOTS {
            return Ok(vec![]);
        }
        let raw = mem.read_vec(base, (top - base) as usize)?;
        Ok(crate::source::words(&raw).filter(|v| *v & 3 != 3 && *v > 0x1000).map(|v| v & !3).collect())
    }

    /// Size of the interpreter frame embedded in a 3.11+ coroutine (its header, before the locals).
    fn interp_frame_size(&self) -> u64 {
        match self.py.off.frame {
            crate::runtime::offsets::FrameOffsets::Interp { size, .. } => size,
            _ => 88,
        }
    }

    pub(crate) fn code_field(&self) -> u64 {
        match self.py.off.frame {
            crate::runtime::offsets::FrameOffsets::Interp { code, .. } => code,
            crate::runtime::offsets::FrameOffsets::Object { code, .. } => code,
        }
    }
}
