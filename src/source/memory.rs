//! Reading another process's memory: the `Memory` trait, the live-process implementation and
//! a synthetic image used by tests. Nothing here ever writes to the target.

use std::collections::BTreeMap;

/// Why a read failed. Mapped to user-facing errors at the attach boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemError {
    /// The address range is not mapped (or a stale pointer): treat as a torn/corrupt read.
    Unmapped(u64),
    /// The process is gone.
    Exited,
    /// The kernel refused (ptrace permission).
    Permission,
    /// Ctrl-C: the user asked to stop; every further read fails at once.
    Interrupted,
    /// The read's time budget (e.g. `--blocking`'s pause deadline) ran out.
    Deadline,
    Other(String),
}

impl MemError {
    /// Errors that end a snapshot at once instead of being retried or recorded per object.
    pub fn is_fatal(&self) -> bool {
        matches!(self, MemError::Exited | MemError::Permission | MemError::Interrupted | MemError::Deadline)
    }
}

impl std::fmt::Display for MemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemError::Unmapped(a) => write!(f, "cannot read target memory at 0x{a:x}"),
            MemError::Exited => write!(f, "target exited"),
            MemError::Permission => write!(f, "permission denied"),
            MemError::Interrupted => write!(f, "interrupted"),
            MemError::Deadline => write!(f, "read deadline reached"),
            MemError::Other(m) => write!(f, "{m}"),
        }
    }
}

pub type MemResult<T> = Result<T, MemError>;

/// Upper bound for any single read driven by target memory (a corrupt length must not make us
/// allocate gigabytes).
pub const MAX_READ: usize = 64 << 20;

pub trait Memory: Send + Sync {
    /// Fill `buf` from `addr`; all or nothing.
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()>;

    /// Advice: the ranges will be read soon. A cache fetches what it lacks of them at once (in as
    /// few system calls as it can); elsewhere nothing happens. Never an error: the reads that
    /// follow report what could not be read.
    fn prefetch(&self, _ranges: &[(u64, usize)]) {}

    /// Read several ranges at once; implementations may batch them into one system call.
    /// Each entry gets its own result.
    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<MemResult<()>> {
        reqs.iter_mut().map(|(a, b)| self.read(*a, b)).collect()
    }

    fn read_vec(&self, addr: u64, len: usize) -> MemResult<Vec<u8>> {
        if len > MAX_READ {
            return Err(MemError::Other(format!("refusing to read {len} bytes at 0x{addr:x}")));
        }
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }
    fn read_u64(&self, addr: u64) -> MemResult<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn read_i64(&self, addr: u64) -> MemResult<i64> {
        Ok(self.read_u64(addr)? as i64)
    }
    fn read_u32(&self, addr: u64) -> MemResult<u32> {
        let mut b = [0u8; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn read_i32(&self, addr: u64) -> MemResult<i32> {
        Ok(self.read_u32(addr)? as i32)
    }
    fn read_u16(&self, addr: u64) -> MemResult<u16> {
        let mut b = [0u8; 2];
        self.read(addr, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn read_u8(&self, addr: u64) -> MemResult<u8> {
        let mut b = [0u8; 1];
        self.read(addr, &mut b)?;
        Ok(b[0])
    }
}

/// Little-endian field access into a buffer copied from the target (one read per struct).
pub trait Buf {
    fn u64_at(&self, off: u64) -> u64;
    fn u32_at(&self, off: u64) -> u32;
    fn i32_at(&self, off: u64) -> i32 {
        self.u32_at(off) as i32
    }
    fn u16_at(&self, off: u64) -> u16;
    fn u8_at(&self, off: u64) -> u8;
    fn i8_at(&self, off: u64) -> i8 {
        self.u8_at(off) as i8
    }
}

/// Little-endian integer from up to N bytes at `off`; bytes past the end read as 0.
fn le_bytes<const N: usize>(b: &[u8], off: u64) -> [u8; N] {
    let mut out = [0u8; N];
    let start = (off as usize).min(b.len());
    let end = start.saturating_add(N).min(b.len());
    out[..end - start].copy_from_slice(&b[start..end]);
    out
}

/// The 64-bit words of a buffer copied from the target (a trailing partial word is dropped).
pub fn words(b: &[u8]) -> impl Iterator<Item = u64> + '_ {
    b.chunks_exact(8).map(|c| u64::from_le_bytes(le_bytes(c, 0)))
}

impl Buf for [u8] {
    // Out-of-range offsets read as 0: a layout bug must not panic on hostile data.
    fn u64_at(&self, off: u64) -> u64 {
        if (off as usize).saturating_add(8) > self.len() {
            return 0;
        }
        u64::from_le_bytes(le_bytes(self, off))
    }
    fn u32_at(&self, off: u64) -> u32 {
        if (off as usize).saturating_add(4) > self.len() {
            return 0;
        }
        u32::from_le_bytes(le_bytes(self, off))
    }
    fn u16_at(&self, off: u64) -> u16 {
        if (off as usize).saturating_add(2) > self.len() {
            return 0;
        }
        u16::from_le_bytes(le_bytes(self, off))
    }
    fn u8_at(&self, off: u64) -> u8 {
        self.get(off as usize).copied().unwrap_or(0)
    }
}

/// A live process read with `process_vm_readv` (Linux). macOS uses `mach_vm_read` (unverified).
pub struct ProcessMemory {
    pub pid: i32,
}

#[cfg(target_os = "linux")]
impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        let mut reqs = [(addr, buf)];
        self.read_many(&mut reqs).pop().unwrap_or(Ok(()))
    }

    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<MemResult<()>> {
        use nix::sys::uio::{process_vm_readv, RemoteIoVec};
        use std::io::IoSliceMut;
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let mut out = Vec::with_capacity(reqs.len());
        // The kernel takes at most IOV_MAX (1024) iovecs per call; on a partial transfer we fall
        // back to one call per request so each gets its precise result.
        for chunk in reqs.chunks_mut(512) {
            let total: usize = chunk.iter().map(|(_, b)| b.len()).sum();
            let remote: Vec<RemoteIoVec> =
                chunk.iter().map(|(a, b)| RemoteIoVec { base: *a as usize, len: b.len() }).collect();
            let n = {
                let mut local: Vec<IoSliceMut> = chunk.iter_mut().map(|(_, b)| IoSliceMut::new(b)).collect();
                process_vm_readv(pid, &mut local, &remote)
            };
            match n {
                Ok(n) if n == total => out.extend(chunk.iter().map(|_| Ok(()))),
                Ok(_) | Err(nix::errno::Errno::EFAULT) if chunk.len() > 1 => {
                    for (a, b) in chunk.iter_mut() {
                        out.push(read_one(pid, *a, b));
                    }
                }
                Ok(_) => out.push(Err(MemError::Unmapped(chunk[0].0))),
                Err(e) => {
                    let err = map_errno(e, chunk[0].0, self.pid);
                    out.extend(chunk.iter().map(|_| Err(err.clone())));
                }
            }
        }
        out
    }
}

#[cfg(target_os = "linux")]
fn read_one(pid: nix::unistd::Pid, addr: u64, buf: &mut [u8]) -> MemResult<()> {
    use nix::sys::uio::{process_vm_readv, RemoteIoVec};
    let len = buf.len();
    let remote = [RemoteIoVec { base: addr as usize, len }];
    let mut local = [std::io::IoSliceMut::new(buf)];
    match process_vm_readv(pid, &mut local, &remote) {
        Ok(n) if n == len => Ok(()),
        Ok(_) => Err(MemError::Unmapped(addr)),
        Err(e) => Err(map_errno(e, addr, pid.as_raw())),
    }
}

#[cfg(target_os = "linux")]
fn map_errno(e: nix::errno::Errno, addr: u64, pid: i32) -> MemError {
    use nix::errno::Errno;
    match e {
        Errno::ESRCH => MemError::Exited,
        Errno::EPERM | Errno::EACCES => MemError::Permission,
        Errno::EFAULT | Errno::EINVAL | Errno::ENOMEM => {
            if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                MemError::Unmapped(addr)
            } else {
                MemError::Exited
            }
        }
        other => MemError::Other(format!("process_vm_readv: {other}")),
    }
}

#[cfg(target_os = "macos")]
impl Memory for ProcessMemory {
    // Unverified: macOS cannot be built or run in this project's CI. Uses remoteprocess's
    // task_for_pid-based reader.
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        use remoteprocess::ProcessMemory as _;
        let p = remoteprocess::Process::new(self.pid).map_err(|e| MemError::Other(e.to_string()))?;
        p.read(addr as usize, buf).map_err(|_| MemError::Unmapped(addr))
    }
}

/// A synthetic memory image: a set of byte regions at fixed addresses. Used by unit tests to build
/// interpreter states (free-threaded headers, corrupt chains) that no installed Python has.
#[derive(Default, Clone)]
pub struct SyntheticMemory {
    regions: BTreeMap<u64, Vec<u8>>,
}

impl SyntheticMemory {
    pub fn new() -> Self {
        Self::default()
    }
    /// Map `bytes` at `addr` (regions must not overlap).
    pub fn map(&mut self, addr: u64, bytes: Vec<u8>) {
        self.regions.insert(addr, bytes);
    }
    #[cfg(test)]
    pub fn write(&mut self, addr: u64, bytes: &[u8]) {
        // Test-image construction: writing outside the image is a bug in the test itself.
        let Some((start, region)) = self.regions.range_mut(..=addr).next_back() else {
            panic!("synthetic write outside any region at 0x{addr:x}");
        };
        let off = (addr - *start) as usize;
        region[off..off + bytes.len()].copy_from_slice(bytes);
    }
    #[cfg(test)]
    pub fn write_u64(&mut self, addr: u64, v: u64) {
        self.write(addr, &v.to_le_bytes())
    }
    #[cfg(test)]
    pub fn write_u32(&mut self, addr: u64, v: u32) {
        self.write(addr, &v.to_le_bytes())
    }
}

impl Memory for SyntheticMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        let (start, region) = self.regions.range(..=addr).next_back().ok_or(MemError::Unmapped(addr))?;
        let off = (addr - start) as usize;
        let end = off.checked_add(buf.len()).ok_or(MemError::Unmapped(addr))?;
        let src = region.get(off..end).ok_or(MemError::Unmapped(addr))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_reads_and_faults() {
        let mut m = SyntheticMemory::new();
        m.map(0x1000, vec![0; 16]);
        m.write_u64(0x1008, 0xdead_beef);
        assert_eq!(m.read_u64(0x1008).unwrap(), 0xdead_beef);
        assert_eq!(m.read_u64(0x100c), Err(MemError::Unmapped(0x100c)));
        assert_eq!(m.read_u64(0x10), Err(MemError::Unmapped(0x10)));
        assert!(m.read_vec(0x1000, MAX_READ + 1).is_err());
    }

    #[test]
    fn buf_out_of_range_is_zero() {
        let b = [1u8, 2, 3];
        assert_eq!(b[..].u64_at(0), 0);
        assert_eq!(b[..].u8_at(2), 3);
        assert_eq!(b[..].u8_at(99), 0);
    }
}
