//! taskspy's own memory allocation: glibc malloc for small blocks on a heap that grows 64 MiB at a
//! time with transparent huge pages, and huge-page mmaps for big blocks. Never the target's memory.

use std::alloc::{GlobalAlloc, Layout, System};

/// Why: a 10,000-task snapshot allocates ~20 MB; on a VM each first touch of a 4-KiB page is a
/// fault costing microseconds (4,600 faults, a fifth of `dump --json`'s time). Blocks of 2 MiB and
/// more (task tables, output text) get their own mapping with huge pages and grow with `mremap`
/// (no copy, no second block alive at once, unlike realloc inside the heap); smaller blocks come
/// from a malloc heap advised the same way. Together: ~500 faults instead of ~4,600.
pub struct Allocator;

#[cfg(target_os = "linux")]
const BIG: usize = 2 << 20;
#[cfg(target_os = "linux")]
const PAGE: usize = 4096;

#[cfg(target_os = "linux")]
fn is_big(size: usize, align: usize) -> bool {
    size >= BIG && align <= PAGE
}

/// Big mappings are whole huge pages: the kernel places a mapping of that size on a huge-page
/// boundary, so every page of it can be huge (a touched huge page is resident in full anyway).
#[cfg(target_os = "linux")]
fn mapped_len(size: usize) -> usize {
    (size + BIG - 1) & !(BIG - 1)
}

/// A fresh private anonymous mapping of `size` bytes with huge pages advised, or null.
#[cfg(target_os = "linux")]
unsafe fn map_big(size: usize) -> *mut u8 {
    let len = mapped_len(size);
    // SAFETY: a new private anonymous mapping; nothing else refers to that range.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    // SAFETY: advice on the mapping just made; failure only means small pages.
    unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
    p as *mut u8
}

// SAFETY: every block is either System's (small) or a private mapping owned by exactly one block
// (big); which one is decided by the size and alignment Rust passes back on dealloc/realloc, which
// are the ones the block was (re)allocated with.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if is_big(l.size(), l.align()) {
            return unsafe { map_big(l.size()) };
        }
        unsafe { System.alloc(l) }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        #[cfg(target_os = "linux")]
        if is_big(l.size(), l.align()) {
            // Fresh anonymous mappings are zero-filled.
            return unsafe { map_big(l.size()) };
        }
        unsafe { System.alloc_zeroed(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        #[cfg(target_os = "linux")]
        if is_big(l.size(), l.align()) {
            // SAFETY: `p` is the start of a mapping of this length made by `map_big`/`mremap`.
            unsafe { libc::munmap(p as *mut libc::c_void, mapped_len(l.size())) };
            return;
        }
        unsafe { System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        #[cfg(target_os = "linux")]
        {
            let (was_big, will_be_big) = (is_big(l.size(), l.align()), is_big(new_size, l.align()));
            if was_big && will_be_big {
                // SAFETY: `p` is a whole mapping of the old length; mremap keeps its contents and advice.
                let q = unsafe {
                    libc::mremap(
                        p as *mut libc::c_void,
                        mapped_len(l.size()),
                        mapped_len(new_size),
                        libc::MREMAP_MAYMOVE,
                    )
                };
                return if q == libc::MAP_FAILED { std::ptr::null_mut() } else { q as *mut u8 };
            }
            if was_big || will_be_big {
                // SAFETY: the new layout is valid (same alignment, non-zero size checked by the caller).
                let new_l = unsafe { Layout::from_size_align_unchecked(new_size, l.align()) };
                let q = unsafe { self.alloc(new_l) };
                if !q.is_null() {
                    // SAFETY: both blocks are live and at least this long; they do not overlap.
                    unsafe { std::ptr::copy_nonoverlapping(p, q, l.size().min(new_size)) };
                    unsafe { self.dealloc(p, l) };
                }
                return q;
            }
        }
        unsafe { System.realloc(p, l, new_size) }
    }
}

/// Set up the small-block heap: grow it 64 MiB at a time, keep what was freed (a trimmed and
/// regrown heap would lose the advice), send nothing below 2 MiB to mmap, and advise huge pages on
/// the first growth. Best effort; call first thing in `main`.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt/sbrk(0)/malloc/free/madvise with valid arguments; sbrk(0) only reads the
    // break; MADV_HUGEPAGE is advice on our own heap that changes no contents; the probe block is
    // freed right away.
    unsafe {
        const GROWTH: usize = 64 << 20;
        libc::mallopt(libc::M_TOP_PAD, GROWTH as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, (4 * GROWTH) as libc::c_int);
        libc::mallopt(libc::M_MMAP_THRESHOLD, BIG as libc::c_int);
        let before = libc::sbrk(0) as usize;
        // A block bigger than the heap's free top forces the growth now, while we know where it
        // starts. black_box: the compiler may drop a malloc/free pair whose block is never used.
        let probe = std::hint::black_box(libc::malloc(1 << 20));
        let after = libc::sbrk(0) as usize;
        if !probe.is_null() {
            libc::free(probe);
        }
        let start = (before + BIG - 1) & !(BIG - 1);
        if before != usize::MAX && after > start + BIG {
            libc::madvise(start as *mut libc::c_void, (after - start) & !(BIG - 1), libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_and_small_blocks_keep_their_bytes_across_growth_and_shrink() {
        let a = Allocator;
        // SAFETY: layouts are non-zero; every block is written within its size and freed once with
        // the layout it has at that point.
        unsafe {
            for (from, to) in [(100, 3 << 20), (3 << 20, 9 << 20), (9 << 20, 1000), (1 << 20, 2 << 20)] {
                let l = Layout::from_size_align(from, 16).unwrap();
                let p = a.alloc(l);
                assert!(!p.is_null());
                for i in 0..from {
                    *p.add(i) = (i % 251) as u8;
                }
                let q = a.realloc(p, l, to);
                assert!(!q.is_null());
                for i in 0..from.min(to) {
                    assert_eq!(*q.add(i), (i % 251) as u8, "{from} -> {to} at {i}");
                }
                a.dealloc(q, Layout::from_size_align(to, 16).unwrap());
            }
            let z = Layout::from_size_align(4 << 20, 8).unwrap();
            let p = a.alloc_zeroed(z);
            assert!((0..4 << 20).step_by(4093).all(|i| *p.add(i) == 0));
            a.dealloc(p, z);
        }
    }
}
