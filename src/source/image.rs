//! A copy of a stopped target's writable memory, taken while it is paused and decoded after it is
//! resumed: `--blocking` holds the target only as long as one bulk memory copy takes.

use super::maps::MapEntry;

const PAGE: u64 = 4096;
/// Largest writable footprint copied by default; a bigger one is walked while paused instead
/// (copying it would cost more pause and memory than reading the objects one by one).
/// `TASKSPY_COPY_LIMIT_MB` changes it (0: never copy).
pub const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// The copy limit in force: `TASKSPY_COPY_LIMIT_MB`, else `MAX_IMAGE_BYTES`.
pub fn copy_limit() -> u64 {
    std::env::var("TASKSPY_COPY_LIMIT_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|mb| mb.saturating_mul(1 << 20))
        .unwrap_or(MAX_IMAGE_BYTES)
}
/// Most virtual pages whose presence is looked up (/proc/PID/pagemap: 8 bytes each).
const MAX_PAGEMAP_PAGES: u64 = 8 << 20;
/// iovecs per `process_vm_readv` (the kernel's IOV_MAX).
const IOVECS: usize = 1024;

/// Where the bytes of one address range come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    /// Copied into the arena at this offset.
    Copied(usize),
    /// Never-touched anonymous memory: reads as zeros, nothing to copy.
    Zero,
}

#[derive(Debug, Clone, Copy)]
struct Run {
    start: u64,
    end: u64,
    fill: Fill,
}

/// The ranges to copy: what a pause will read.
#[derive(Debug, Default)]
pub struct Plan {
    runs: Vec<Run>,
    /// Bytes to copy.
    pub bytes: u64,
}

/// The copied memory: runs sorted by address over one arena.
pub struct Image {
    runs: Vec<Run>,
    arena: memmap2::MmapMut,
    /// Bytes copied.
    pub bytes: u64,
    /// Ranges that could not be copied (their reads go to the target).
    pub failed: usize,
}

/// Anonymous private memory: an untouched page of it holds zeros, so it need not be copied.
fn anonymous(m: &MapEntry) -> bool {
    let private = m.perms.as_bytes().get(3) == Some(&b'p');
    private
        && match m.path.as_deref() {
            None => true,
            Some(p) => p == "[heap]" || p.starts_with("[stack") || p.starts_with("[anon"),
        }
}

/// Mappings whose contents can change while the target runs and may hold Python objects (and so
/// are copied in the pause). Shared mappings are left out: CPython's heaps are private, and a
/// big shared buffer (shared memory, a writable file mapping) would only cost pause time.
fn copied_mapping(m: &MapEntry) -> bool {
    m.readable()
        && m.writable()
        && m.perms.as_bytes().get(3) == Some(&b'p')
        && m.end > m.start
        && !matches!(m.path.as_deref(), Some("[vvar]" | "[vsyscall]" | "[vdso]" | "[vvar_vclock]"))
}

/// Page frame number bits of a pagemap entry (zero unless the reader has CAP_SYS_ADMIN).
const PFN_MASK: u64 = (1 << 55) - 1;

/// The frame of the kernel's shared zero page, when pagemap shows frame numbers (root). Untouched
/// memory that something merely *read* (gdb's `gcore`, a debugger) maps that page: present, yet
/// all zeros, so there is nothing to copy. Learned from a page of our own that is only read.
#[cfg(target_os = "linux")]
fn zero_pfn() -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let map = memmap2::MmapOptions::new().len(PAGE as usize).map_anon().ok()?;
    std::hint::black_box(map[0]); // a read fault maps the zero page
    let mut e = [0u8; 8];
    let pagemap = std::fs::File::open("/proc/self/pagemap").ok()?;
    pagemap.read_exact_at(&mut e, map.as_ptr() as u64 / PAGE * 8).ok()?;
    let e = u64::from_le_bytes(e);
    (e >> 63 == 1 && e & PFN_MASK != 0).then_some(e & PFN_MASK)
}

/// Present (or swapped) pages of `[start, end)` per /proc/PID/pagemap, as page-aligned ranges;
/// pages mapping the shared zero page (`zero`) are left out (they read as zeros).
#[cfg(target_os = "linux")]
fn present_ranges(
    pagemap: &std::fs::File,
    zero: Option<u64>,
    start: u64,
    end: u64,
    out: &mut Vec<(u64, u64)>,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let pages = (end - start) / PAGE;
    let mut buf = vec![0u8; (pages.min(64 * 1024) * 8) as usize];
    let mut page = 0u64;
    let mut open: Option<u64> = None;
    while page < pages {
        let n = (pages - page).min(buf.len() as u64 / 8);
        let bytes = &mut buf[..(n * 8) as usize];
        pagemap.read_exact_at(bytes, (start / PAGE + page) * 8)?;
        for (i, e) in bytes.chunks_exact(8).enumerate() {
            let e = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
            let at = start + (page + i as u64) * PAGE;
            // Bit 63: present in RAM; bit 62: swapped out. Either holds data (but the zero page).
            let has_data = e & (1 << 62) != 0 || (e >> 63 == 1 && (zero.is_none() || Some(e & PFN_MASK) != zero));
            match (has_data, open) {
                (true, None) => open = Some(at),
                (false, Some(s)) => {
                    out.push((s, at));
                    open = None;
                }
                _ => {}
            }
        }
        page += n;
    }
    if let Some(s) = open {
        out.push((s, end));
    }
    Ok(())
}

/// The same ranges as `present_ranges`, asked of the kernel in one PAGEMAP_SCAN ioctl per batch of
/// ranges (Linux 6.7+): it skips unpopulated page tables itself and says which pages map the zero
/// page without needing root, where reading 8 bytes per page of a mostly empty 1 GiB heap
/// reservation (free-threaded builds) took ~2 ms of the pause. An error (an older kernel:
/// ENOTTY or EINVAL) means: use `present_ranges`.
#[cfg(target_os = "linux")]
fn scanned_ranges(pagemap: &std::fs::File, start: u64, end: u64, out: &mut Vec<(u64, u64)>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `struct pm_scan_arg` (include/uapi/linux/fs.h).
    #[repr(C)]
    struct PmScanArg {
        size: u64,
        flags: u64,
        start: u64,
        end: u64,
        walk_end: u64,
        vec: u64,
        vec_len: u64,
        max_pages: u64,
        category_inverted: u64,
        category_mask: u64,
        category_anyof_mask: u64,
        return_mask: u64,
    }
    /// `struct page_region`.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct PageRegion {
        start: u64,
        end: u64,
        categories: u64,
    }
    const PAGE_IS_PRESENT: u64 = 1 << 3;
    const PAGE_IS_SWAPPED: u64 = 1 << 4;
    const PAGE_IS_PFNZERO: u64 = 1 << 5;
    // _IOWR('f', 16, struct pm_scan_arg)
    const PAGEMAP_SCAN: u64 = (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | (0x66 << 8) | 16;
    let mut regions = vec![PageRegion::default(); 512];
    let first = out.len();
    let mut at = start;
    // Each call fills up to 512 regions and says where it stopped; a heap has far fewer runs
    // than pages, and every call advances by at least one region (bounded by the range's pages).
    for _ in 0..=(end - start) / PAGE {
        if at >= end {
            return Ok(());
        }
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: 0,
            start: at,
            end,
            walk_end: 0,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            max_pages: 0,
            // Present or swapped, and not the shared zero page.
            category_inverted: PAGE_IS_PFNZERO,
            category_mask: PAGE_IS_PFNZERO,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED | PAGE_IS_PFNZERO,
        };
        // SAFETY: `arg` and `regions` outlive the call; the kernel writes at most `vec_len`
        // regions into `regions` and `walk_end` into `arg`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN as _, &mut arg as *mut PmScanArg) };
        if n < 0 {
            out.truncate(first);
            return Err(std::io::Error::last_os_error());
        }
        for r in &regions[..(n as usize).min(regions.len())] {
            let (s, e) = (r.start.max(at), r.end.min(end));
            if s >= e || s % PAGE != 0 || e % PAGE != 0 {
                continue;
            }
            // Adjacent regions (split by category bits we do not ask about) are one run.
            let ours = out.len() > first;
            match out.last_mut() {
                Some(last) if ours && last.1 == s => last.1 = e,
                _ => out.push((s, e)),
            }
        }
        if arg.walk_end <= at || arg.walk_end > end {
            out.truncate(first);
            return Err(std::io::Error::other("PAGEMAP_SCAN did not advance"));
        }
        at = arg.walk_end;
    }
    Ok(())
}

impl Plan {
    /// Which ranges of `maps` hold data that may change: whole file-backed private writable
    /// mappings, and the touched pages of anonymous ones (the rest of those reads as zeros).
    /// `None` when the footprint is over `limit` bytes or cannot be told.
    #[cfg(target_os = "linux")]
    pub fn of(pid: i32, maps: &[MapEntry], limit: u64) -> Option<Plan> {
        let pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).ok();
        // Only the fallback (per-page pagemap entries) needs the zero page's frame.
        let zero = std::cell::OnceCell::new();
        let mut plan = Plan::default();
        let mut looked_up = 0u64;
        let mut present = Vec::new();
        for m in maps.iter().filter(|m| copied_mapping(m)) {
            let (start, end) = (m.start & !(PAGE - 1), (m.end + PAGE - 1) & !(PAGE - 1));
            present.clear();
            let sparse = anonymous(m) && pagemap.is_some() && {
                looked_up += (end - start) / PAGE;
                looked_up <= MAX_PAGEMAP_PAGES
                    && pagemap.as_ref().is_some_and(|f| {
                        scanned_ranges(f, start, end, &mut present).is_ok()
                            || present_ranges(f, *zero.get_or_init(zero_pfn), start, end, &mut present).is_ok()
                    })
            };
            if !sparse {
                present.clear();
                present.push((start, end));
            }
            let mut at = start;
            for &(s, e) in &present {
                if s > at {
                    plan.runs.push(Run { start: at, end: s, fill: Fill::Zero });
                }
                plan.runs.push(Run { start: s, end: e, fill: Fill::Copied(plan.bytes as usize) });
                plan.bytes += e - s;
                if plan.bytes > limit {
                    return None;
                }
                at = e;
            }
            if sparse && at < end {
                plan.runs.push(Run { start: at, end, fill: Fill::Zero });
            }
        }
        plan.runs.sort_by_key(|r| r.start);
        Some(plan)
    }
}

/// An anonymous arena of `bytes`, its pages faulted in now (before any pause) and, where the
/// kernel allows, backed by huge pages: faulting 4 KiB pages one by one during the copy cost
/// more than the copy itself. The kernel zeroes every page it hands out (~9 ms of CPU for the
/// 41 MB arena of a 10,101-task target, a third of `dump --blocking`'s time), so with a second
/// CPU the two halves are faulted in side by side.
pub fn arena(bytes: u64) -> Option<memmap2::MmapMut> {
    let len = bytes.max(PAGE) as usize;
    let map = memmap2::MmapOptions::new().len(len).map_anon().ok()?;
    #[cfg(target_os = "linux")]
    {
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    let mut map = map;
    // Each half starts on a huge-page boundary of the mapping, so no huge page is faulted twice.
    let half = (len / 2) & !(HUGE_PAGE - 1);
    let two = half >= SPLIT_ARENA && crate::placement::cpus() >= 2;
    let (first, second) = map.split_at_mut(if two { half } else { len });
    let done = std::thread::scope(|s| {
        // (A helper that cannot be started leaves its half to be faulted in by the copy itself.)
        let helper = if two { std::thread::Builder::new().spawn_scoped(s, move || touch(second)).ok() } else { None };
        let first_done = touch(first);
        first_done && helper.is_none_or(|h| h.join().unwrap_or(false))
    });
    done.then_some(map)
}

/// Arenas at least twice this size are faulted in by two threads.
const SPLIT_ARENA: usize = 8 << 20;
const HUGE_PAGE: usize = 2 << 20;

/// Write one byte per page of `part` (MAP_POPULATE would not take the huge-page advice given
/// after mapping); false when Ctrl-C stopped it (a few hundred MB take a noticeable moment).
fn touch(part: &mut [u8]) -> bool {
    for (i, b) in part.iter_mut().step_by(PAGE as usize).enumerate() {
        if i % 4096 == 0 && super::pause::interrupted() {
            return false;
        }
        *b = 0;
    }
    true
}

impl Image {
    /// Copy `plan` from a stopped target into `arena` (grown if the plan outgrew it). Ranges that
    /// cannot be read are left out and counted.
    #[cfg(target_os = "linux")]
    pub fn copy(pid: i32, plan: Plan, arena: Option<memmap2::MmapMut>) -> Option<Image> {
        use nix::sys::uio::{process_vm_readv, RemoteIoVec};
        use std::io::IoSliceMut;
        let mut arena = match arena {
            Some(a) if a.len() as u64 >= plan.bytes => a,
            _ => self::arena(plan.bytes)?,
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        let mut runs = plan.runs;
        let copied: Vec<usize> =
            runs.iter().enumerate().filter(|(_, r)| matches!(r.fill, Fill::Copied(_))).map(|(i, _)| i).collect();
        let mut failed: Vec<usize> = Vec::new();
        for batch in copied.chunks(IOVECS) {
            let total: u64 = batch.iter().map(|&i| runs[i].end - runs[i].start).sum();
            let remote: Vec<RemoteIoVec> = batch
                .iter()
                .map(|&i| RemoteIoVec { base: runs[i].start as usize, len: (runs[i].end - runs[i].start) as usize })
                .collect();
            let ok = {
                // Copied runs sit in the arena in address order: carve their slices off one by one.
                let mut rest: &mut [u8] = &mut arena[..];
                let mut at = 0usize;
                let mut local: Vec<IoSliceMut> = Vec::with_capacity(batch.len());
                for &i in batch {
                    let Fill::Copied(off) = runs[i].fill else { continue };
                    let len = (runs[i].end - runs[i].start) as usize;
                    let tail = std::mem::take(&mut rest);
                    let Some(tail) = tail.get_mut(off.saturating_sub(at)..) else { break };
                    let (mine, tail) = tail.split_at_mut(len.min(tail.len()));
                    local.push(IoSliceMut::new(mine));
                    rest = tail;
                    at = off + len;
                }
                local.len() == batch.len()
                    && matches!(process_vm_readv(pid, &mut local, &remote), Ok(n) if n as u64 == total)
            };
            if !ok {
                // One range went away (or a page of it cannot be read): copy one by one.
                for &i in batch {
                    let Fill::Copied(off) = runs[i].fill else { continue };
                    let len = (runs[i].end - runs[i].start) as usize;
                    let remote = [RemoteIoVec { base: runs[i].start as usize, len }];
                    let Some(dst) = arena.get_mut(off..off + len) else {
                        failed.push(i);
                        continue;
                    };
                    let mut local = [IoSliceMut::new(dst)];
                    if !matches!(process_vm_readv(pid, &mut local, &remote), Ok(n) if n == len) {
                        failed.push(i);
                    }
                }
            }
        }
        // Uncopied runs leave the image (their reads go to the target): one pass, not one shift each.
        let nfailed = failed.len();
        let failed: std::collections::HashSet<usize> = failed.into_iter().collect();
        let mut i = 0;
        runs.retain(|_| {
            i += 1;
            !failed.contains(&(i - 1))
        });
        Some(Image { runs, arena, bytes: plan.bytes, failed: nfailed })
    }

    /// Fill `buf` from the copy, searching the runs from the start (the tests' reference for
    /// `read_near`).
    #[cfg(test)]
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.read_near(addr, buf, &mut 0)
    }

    /// Fill `buf` from the copy; `false` when part of it was not copied (read it from the
    /// target). The search starts at run `*hint` (where the reader's last read was: a walk reads
    /// near where it just read) and leaves there the run this read started in.
    pub fn read_near(&self, addr: u64, buf: &mut [u8], hint: &mut usize) -> bool {
        let mut done = 0usize;
        let mut i = match self.runs.get(*hint) {
            Some(r) if r.start <= addr && addr < r.end => *hint,
            _ => self.runs.partition_point(|r| r.end <= addr),
        };
        *hint = i;
        while done < buf.len() {
            let Some(r) = self.runs.get(i) else { return false };
            let a = addr + done as u64;
            if a < r.start || a >= r.end {
                return false;
            }
            let n = ((r.end - a) as usize).min(buf.len() - done);
            match r.fill {
                Fill::Copied(off) => {
                    let from = off + (a - r.start) as usize;
                    match self.arena.get(from..from + n) {
                        Some(src) => buf[done..done + n].copy_from_slice(src),
                        None => return false,
                    }
                }
                Fill::Zero => buf[done..done + n].fill(0),
            }
            done += n;
            i += 1;
        }
        true
    }

    /// Give the arena back for the next copy (repeated `--blocking` samples reuse its pages).
    pub fn into_arena(self) -> memmap2::MmapMut {
        self.arena
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(runs: Vec<Run>, data: &[u8]) -> Image {
        let mut arena = arena(data.len() as u64).unwrap();
        arena[..data.len()].copy_from_slice(data);
        Image { runs, arena, bytes: data.len() as u64, failed: 0 }
    }

    #[test]
    fn reads_span_copied_and_zero_runs_and_refuse_gaps() {
        let data: Vec<u8> = (0..2 * PAGE).map(|i| (i % 251) as u8 + 1).collect();
        let img = image(
            vec![
                Run { start: 0x10000, end: 0x11000, fill: Fill::Copied(0) },
                Run { start: 0x11000, end: 0x12000, fill: Fill::Zero },
                Run { start: 0x12000, end: 0x13000, fill: Fill::Copied(PAGE as usize) },
            ],
            &data,
        );
        let mut b = vec![0xffu8; 16];
        assert!(img.read(0x10ff8, &mut b));
        assert_eq!(&b[..8], &data[PAGE as usize - 8..PAGE as usize]);
        assert_eq!(&b[8..], &[0u8; 8]);
        let mut b = vec![0u8; 8];
        assert!(img.read(0x12000, &mut b));
        assert_eq!(&b[..], &data[PAGE as usize..PAGE as usize + 8]);
        // Past the last run, before the first, and across the end: not in the image.
        assert!(!img.read(0x12ffc, &mut b));
        assert!(!img.read(0x13000, &mut b));
        assert!(!img.read(0xfff8, &mut b));
        // From any hint, the same bytes and answers as a search from the start; the hint is
        // left at the run the read started in.
        let probes = [(0x10ff8u64, 16usize), (0x12000, 8), (0x11800, 8), (0x10010, 8), (0x12ffc, 8), (0xfff8, 8)];
        for hint0 in 0..5 {
            for &(at, n) in &probes {
                let (mut want, mut got) = (vec![0xeeu8; n], vec![0xeeu8; n]);
                let mut hint = hint0;
                assert_eq!(img.read_near(at, &mut got, &mut hint), img.read(at, &mut want), "{at:#x} from {hint0}");
                assert_eq!(got, want, "{at:#x} from {hint0}");
                if img.read(at, &mut want) {
                    assert!(img.runs[hint].start <= at && at < img.runs[hint].end);
                }
            }
        }
    }

    #[test]
    fn memory_only_read_is_not_copied() {
        // 64 pages this process only reads map the zero page: present, but nothing to copy
        // (told apart only where pagemap shows frame numbers, i.e. as root).
        let Some(_) = zero_pfn() else { return };
        let map = memmap2::MmapOptions::new().len(64 * PAGE as usize).map_anon().unwrap();
        for i in 0..64 {
            std::hint::black_box(map[i * PAGE as usize]);
        }
        let (start, end) = (map.as_ptr() as u64, map.as_ptr() as u64 + 64 * PAGE);
        let pid = std::process::id() as i32;
        let maps = crate::source::maps::read_maps(pid).unwrap();
        let plan = Plan::of(pid, &maps, MAX_IMAGE_BYTES).expect("plan");
        let copied = plan.runs.iter().any(|r| matches!(r.fill, Fill::Copied(_)) && r.start < end && r.end > start);
        assert!(!copied, "zero pages planned for copying");
    }

    #[test]
    fn a_live_process_copies_what_it_reads_itself() {
        // This very process: a heap value read through the image equals the value itself.
        let value: Box<[u64; 64]> = Box::new(std::array::from_fn(|i| 0x5eed_0000 + i as u64));
        let addr = value.as_ptr() as u64;
        let pid = std::process::id() as i32;
        let maps = crate::source::maps::read_maps(pid).unwrap();
        let plan = Plan::of(pid, &maps, MAX_IMAGE_BYTES).expect("plan");
        assert!(plan.bytes > 0);
        let img = Image::copy(pid, plan, None).expect("copy");
        let mut b = [0u8; 8 * 64];
        assert!(img.read(addr, &mut b));
        for (i, w) in b.chunks_exact(8).enumerate() {
            assert_eq!(u64::from_le_bytes(w.try_into().unwrap()), 0x5eed_0000 + i as u64);
        }
    }

    /// The kernel's scan and the per-page entries agree on this process's own memory: written
    /// pages are present, untouched ones are not, one that was only read maps the zero page.
    #[cfg(target_os = "linux")]
    #[test]
    fn pagemap_scan_agrees_with_pagemap_entries() {
        let mut map = memmap2::MmapOptions::new().len(64 * PAGE as usize).map_anon().unwrap();
        let _ = map.advise(memmap2::Advice::NoHugePage);
        for p in [1usize, 2, 3, 10, 40, 41, 63] {
            map[p * PAGE as usize] = 1;
        }
        std::hint::black_box(map[20 * PAGE as usize]);
        let base = map.as_ptr() as u64;
        let pagemap = std::fs::File::open("/proc/self/pagemap").unwrap();
        let mut scanned = Vec::new();
        if let Err(e) = scanned_ranges(&pagemap, base, base + 64 * PAGE, &mut scanned) {
            eprintln!("PAGEMAP_SCAN not available here ({e}): only the per-page path is used");
            return;
        }
        let rel: Vec<(u64, u64)> = scanned.iter().map(|(s, e)| ((s - base) / PAGE, (e - base) / PAGE)).collect();
        assert_eq!(rel, vec![(1, 4), (10, 11), (40, 42), (63, 64)]);
        // Frame numbers (and so the zero page) are visible to root only.
        if let Some(zero) = zero_pfn() {
            let mut entries = Vec::new();
            present_ranges(&pagemap, Some(zero), base, base + 64 * PAGE, &mut entries).unwrap();
            assert_eq!(entries, scanned);
        }
    }
}
