//! Memory of a core file: bytes the core holds come from the core file itself (`pread`); file-backed
//! ranges the kernel or gdb left out (code, read-only data) come from the binaries on disk.

use super::decompress::OpenedCore;
use super::files::DiskFiles;
use super::notes::{FileMapping, Segment};
use crate::source::memory::{MemError, MemResult, Memory};
use std::sync::Arc;

pub struct CoreMemory {
    /// The core file, read with `pread` (see `OpenedCore`), and its length.
    core: std::fs::File,
    core_len: u64,
    /// Sorted by `vaddr`.
    segments: Vec<Segment>,
    /// Sorted by `start`.
    files: Vec<FileMapping>,
    disk: Arc<DiskFiles>,
}

impl CoreMemory {
    pub fn new(
        core: OpenedCore,
        mut segments: Vec<Segment>,
        mut files: Vec<FileMapping>,
        disk: Arc<DiskFiles>,
    ) -> Self {
        segments.sort_by_key(|s| s.vaddr);
        files.sort_by_key(|f| f.start);
        CoreMemory { core_len: core.map.len() as u64, core: core.file, segments, files, disk }
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

    /// Where in the core file the bytes it holds from `a` on lie (contiguous): (offset, length).
    fn in_core(&self, a: u64) -> Option<(u64, u64)> {
        let s = self.segment(a)?;
        let rel = a - s.vaddr;
        if rel >= s.filesz {
            return None;
        }
        let start = s.offset.checked_add(rel)?;
        let end = s.offset.checked_add(s.filesz)?.min(self.core_len);
        (start < end).then_some((start, end - start))
    }

    /// `buf.len()` bytes of the core file at `offset`.
    fn read_file(&self, offset: u64, buf: &mut [u8], addr: u64) -> MemResult<()> {
        use std::os::unix::fs::FileExt;
        self.core.read_exact_at(buf, offset).map_err(|_| MemError::Unmapped(addr))
    }

    /// Read only what the core holds (no fallback to files): used to check build-ids.
    pub fn read_core_only(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        let (offset, len) = self.in_core(addr).ok_or(MemError::Unmapped(addr))?;
        if (buf.len() as u64) > len {
            return Err(MemError::Unmapped(addr));
        }
        self.read_file(offset, buf, addr)
    }

    /// The bytes from `a` on, contiguous, from the core or else from the mapped file on disk.
    fn piece(&self, a: u64) -> Option<Piece> {
        if let Some((offset, len)) = self.in_core(a) {
            return Some(Piece::Core(offset, len));
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

enum Piece {
    /// Offset and length in the core file.
    Core(u64, u64),
    File(Arc<memmap2::Mmap>, usize, usize),
}

impl Memory for CoreMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(MemError::Unmapped(addr))?;
            let want = buf.len() - done;
            let n = match self.piece(a) {
                Some(Piece::Core(offset, len)) => {
                    let n = usize::try_from(len).unwrap_or(usize::MAX).min(want);
                    self.read_file(offset, &mut buf[done..done + n], a)?;
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
