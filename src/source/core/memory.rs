//! Memory of a core file: bytes the core holds come from the (mapped) core itself; file-backed
//! ranges the kernel or gdb left out (code, read-only data) come from the binaries on disk.

use super::files::DiskFiles;
use super::notes::{FileMapping, Segment};
use crate::source::memory::{MemError, MemResult, Memory};
use std::sync::Arc;

pub struct CoreMemory {
    core: Arc<memmap2::Mmap>,
    /// Sorted by `vaddr`.
    segments: Vec<Segment>,
    /// Sorted by `start`.
    files: Vec<FileMapping>,
    disk: Arc<DiskFiles>,
}

impl CoreMemory {
    pub fn new(
        core: Arc<memmap2::Mmap>,
        mut segments: Vec<Segment>,
        mut files: Vec<FileMapping>,
        disk: Arc<DiskFiles>,
    ) -> Self {
        segments.sort_by_key(|s| s.vaddr);
        files.sort_by_key(|f| f.start);
        CoreMemory { core, segments, files, disk }
    }

    fn segment(&self, a: u64) -> Option<&Segment> {
        let i = self.segments.partition_point(|s| s.vaddr <= a).checked_sub(1)?;
        let s = &self.segments[i];
        (a - s.vaddr < s.memsz).then_some(s)
    }

    fn file_mapping(&self, a: u64) -> Option<&FileMapping> {
        let i = self.files.partition_point(|f| f.start <= a).checked_sub(1)?;
        let f = &self.files[i];
        (a < f.end).then_some(f)
    }

    /// The bytes the core itself holds from `a` on (contiguous), if any.
    fn in_core(&self, a: u64) -> Option<&[u8]> {
        let s = self.segment(a)?;
        let rel = a - s.vaddr;
        if rel >= s.filesz {
            return None;
        }
        let start = usize::try_from(s.offset.checked_add(rel)?).ok()?;
        let end = usize::try_from(s.offset.checked_add(s.filesz)?).ok()?.min(self.core.len());
        self.core.get(start..end).filter(|b| !b.is_empty())
    }

    /// Read only what the core holds (no fallback to files): used to check build-ids.
    pub fn read_core_only(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        let src = self.in_core(addr).ok_or(MemError::Unmapped(addr))?;
        let src = src.get(..buf.len()).ok_or(MemError::Unmapped(addr))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    /// The bytes from `a` on, contiguous, from the core or else from the mapped file on disk.
    fn piece(&self, a: u64) -> Option<Piece<'_>> {
        if let Some(b) = self.in_core(a) {
            return Some(Piece::Core(b));
        }
        let f = self.file_mapping(a)?;
        let data = self.disk.get(&f.path)?;
        let rel = a - f.start;
        // Stop at the end of this segment: the next one may be in the core.
        let seg_end = self.segment(a).map(|s| s.vaddr.saturating_add(s.memsz)).unwrap_or(f.end).min(f.end);
        let len = seg_end - a;
        let start = usize::try_from(f.offset.checked_add(rel)?).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?.min(data.len());
        (start < end).then(|| Piece::File(data, start, end))
    }
}

enum Piece<'a> {
    Core(&'a [u8]),
    File(Arc<memmap2::Mmap>, usize, usize),
}

impl Memory for CoreMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(MemError::Unmapped(addr))?;
            let want = buf.len() - done;
            let n = match self.piece(a) {
                Some(Piece::Core(src)) => {
                    let n = src.len().min(want);
                    buf[done..done + n].copy_from_slice(&src[..n]);
                    n
                }
                Some(Piece::File(data, start, end)) => {
                    let n = (end - start).min(want);
                    buf[done..done + n].copy_from_slice(&data[start..start + n]);
                    n
                }
                None => return Err(MemError::Unmapped(a)),
            };
            done += n;
        }
        Ok(())
    }
}
