//! A snapshot-scoped page cache over target memory: one `process_vm_readv` fetches a 16 KiB
//! neighbourhood, so walking 100,000 densely allocated tasks costs thousands of calls, not millions.

use super::footprint::{Footprint, Recording};
use super::memory::{MemError, MemResult, Memory};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// The cache's unit, and so the unit of a recorded footprint.
pub const PAGE: u64 = 4096;
const SPAN_PAGES: u64 = 4;
/// Reads larger than this go straight to the target.
const DIRECT_READ: usize = 64 * 1024;
/// Pages kept at once (4 MiB). A walk moves through the heap in allocation order, so a small
/// window holds what the next objects need; when it is full the oldest page makes room (FIFO).
/// Slots are allocated once and reused: copying 20 MB of a 10,000-task heap into fresh pages
/// cost more in page faults than the reads themselves.
const MAX_PAGES: usize = 1024;
/// Most pages one prefetch brings in: a quarter of the window, so what a walk prefetches for its
/// next step cannot push out what it prefetched for the step before.
const MAX_PREFETCH: usize = MAX_PAGES / 4;
/// Remembered unreadable pages, forgotten all at once past this.
const MAX_HOLES: usize = 4096;

/// A cached page: the index of its slot, or `HOLE` when the page could not be read.
const HOLE: u32 = u32::MAX;

type PageMap = HashMap<u64, u32, rustc_hash::FxBuildHasher>;

#[derive(Default)]
struct Pages {
    map: PageMap,
    /// Page contents, `PAGE` bytes per slot, in one block allocated on first use (a fresh
    /// zero-filled mapping, see heap.rs: no thousand small zeroed allocations) and then recycled.
    store: Vec<u8>,
    /// The page each slot holds (to unlink it from `map` when the slot is reused).
    owner: Vec<u64>,
    /// Next slot to reuse once every slot is taken.
    hand: usize,
    holes: usize,
    /// Spans fetched since `begin` (reported with TASKSPY_TIMING).
    fetches: usize,
    /// Prefetches since `begin` and the pages they brought in (TASKSPY_TIMING).
    prefetches: usize,
    prefetched: usize,
    /// A copy of the target's writable memory taken while it was paused (`--blocking`): reads
    /// it covers are served from it, the rest (code, read-only data) from the target.
    /// Shared with the siblings (helper threads decode the same copy).
    image: Option<Arc<super::image::Image>>,
    /// The image's run this cache's last read started in (see `Image::read_near`).
    image_hint: usize,
    /// While set, every page a read touches is remembered with a hash of its bytes (repeated
    /// samples check later whether any of them changed).
    recording: Option<Recording>,
}

impl Pages {
    fn clear(&mut self) {
        self.map.clear();
        self.hand = 0;
        self.holes = 0;
        self.fetches = 0;
        self.prefetches = 0;
        self.prefetched = 0;
        self.owner.clear();
        self.recording = None;
    }

    /// A slot for `page`, evicting the oldest page when all are taken.
    fn slot_for(&mut self, page: u64) -> usize {
        let i = if self.owner.len() < MAX_PAGES {
            if self.store.is_empty() {
                self.store = vec![0u8; MAX_PAGES * PAGE as usize];
            }
            self.owner.push(page);
            self.owner.len() - 1
        } else {
            let i = self.hand;
            self.hand = (self.hand + 1) % MAX_PAGES;
            let old = self.owner[i];
            if self.map.get(&old) == Some(&(i as u32)) {
                self.map.remove(&old);
            }
            self.owner[i] = page;
            i
        };
        self.map.insert(page, i as u32);
        i
    }

    /// Past MAX_HOLES remembered unreadable pages, forget them all (they are asked again).
    fn forget_holes_if_many(&mut self) {
        if self.holes >= MAX_HOLES {
            self.map.retain(|_, s| *s != HOLE);
            self.holes = 0;
        }
    }

    /// The bytes of slot `i`.
    fn slot(&self, i: u32) -> &[u8] {
        &self.store[i as usize * PAGE as usize..][..PAGE as usize]
    }
}

pub struct CachedMemory {
    inner: Arc<dyn Memory>,
    pages: Mutex<Pages>,
    enabled: AtomicBool,
    /// Set from outside (a pause deadline): every read fails from then on. Shared with the
    /// siblings (`sibling`), so a deadline stops every thread's walk.
    cancel: Arc<AtomicU8>,
}

const CANCEL_NONE: u8 = 0;
const CANCEL_DEADLINE: u8 = 1;

impl CachedMemory {
    pub fn new(inner: Arc<dyn Memory>) -> CachedMemory {
        CachedMemory {
            inner,
            pages: Mutex::new(Pages::default()),
            enabled: AtomicBool::new(false),
            cancel: Arc::new(AtomicU8::new(CANCEL_NONE)),
        }
    }

    /// A second cache over the same memory for a helper thread: its own pages (no lock shared
    /// per read), the same stop flag and paused copy, caching now if this one is. `None` while
    /// this cache records a footprint: that describes one walk and stays with one cache.
    pub fn sibling(&self) -> Option<CachedMemory> {
        let p = crate::sync::lock(&self.pages);
        if p.recording.is_some() {
            return None;
        }
        Some(CachedMemory {
            inner: self.inner.clone(),
            pages: Mutex::new(Pages { image: p.image.clone(), ..Pages::default() }),
            enabled: AtomicBool::new(self.enabled.load(Ordering::SeqCst)),
            cancel: self.cancel.clone(),
        })
    }

    /// Make every further read fail with `Deadline` (`set_deadline_passed(false)` undoes it): a
    /// read budget that ran out stops the walk within one read.
    pub fn set_deadline_passed(&self, passed: bool) {
        self.cancel.store(if passed { CANCEL_DEADLINE } else { CANCEL_NONE }, Ordering::SeqCst);
    }

    /// Ctrl-C or a deadline: reads stop at once, so every walk (and `--blocking`'s pause) ends.
    fn stopped(&self) -> MemResult<()> {
        if self.cancel.load(Ordering::Relaxed) == CANCEL_DEADLINE {
            return Err(MemError::Deadline);
        }
        if super::pause::interrupted() {
            return Err(MemError::Interrupted);
        }
        Ok(())
    }

    /// Start a new consistent-ish view: forget every cached page and cache from now on.
    pub fn begin(&self) {
        crate::sync::lock(&self.pages).clear();
        self.enabled.store(true, Ordering::SeqCst);
    }

    /// Stop caching and forget the pages. The slots stay allocated (4 MiB at most) for the next
    /// snapshot: `top`, `watch` and `metrics` read again and again, and fresh buffers would be
    /// faulted in anew every time.
    pub fn end(&self) {
        let mut p = crate::sync::lock(&self.pages);
        if crate::timing::enabled() {
            eprintln!(
                "timing: page cache held {} pages ({} slots), {} spans fetched, {} pages in {} prefetches",
                p.map.len(),
                p.owner.len(),
                p.fetches,
                p.prefetched,
                p.prefetches
            );
        }
        self.enabled.store(false, Ordering::SeqCst);
        p.clear();
    }

    /// Serve reads from `image` where it has the bytes (`None`: from the target again); returns
    /// the image it replaces (`None` as well while a sibling still holds it: siblings live only
    /// as long as one read of the tasks).
    pub fn set_image(&self, image: Option<super::image::Image>) -> Option<super::image::Image> {
        let old = std::mem::replace(&mut crate::sync::lock(&self.pages).image, image.map(Arc::new));
        old.and_then(|img| Arc::try_unwrap(img).ok())
    }

    /// Remember every page read from now on (see `finish_recording`).
    pub fn start_recording(&self) {
        crate::sync::lock(&self.pages).recording = Some(Recording::default());
    }

    /// What was read since `start_recording`; `None` if it cannot be checked later.
    pub fn finish_recording(&self) -> Option<Footprint> {
        crate::sync::lock(&self.pages).recording.take().and_then(Recording::finish)
    }

    /// Whether the target still holds what `footprint` recorded, read past the cache (which
    /// holds this snapshot's pages, not fresh ones); stops like every read (Ctrl-C, deadline).
    pub fn still_holds(&self, footprint: &Footprint) -> MemResult<bool> {
        self.stopped()?;
        footprint.unchanged(self.inner.as_ref())
    }

    /// Run `f` with its reads going to the target, past the cached pages (which may hold an
    /// object as it was before its last change): what was read mid-change is read again as it
    /// is now. A footprint being recorded cannot describe those reads and is given up (the next
    /// sample records again). `None` while a paused copy is served: that cannot have changed.
    pub fn past_cache<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        {
            let mut p = crate::sync::lock(&self.pages);
            if p.image.is_some() {
                return None;
            }
            if let Some(r) = p.recording.as_mut() {
                r.spoil();
            }
        }
        let was = self.enabled.swap(false, Ordering::SeqCst);
        let r = f();
        self.enabled.store(was, Ordering::SeqCst);
        Some(r)
    }

    pub fn inner(&self) -> &dyn Memory {
        self.inner.as_ref()
    }

    /// Read the aligned span around `page` in one system call (each page of it on its own if
    /// part of the span is unmapped), each page straight into the slot that keeps it: no
    /// intermediate copy (that copy was a tenth of a one-shot read's time).
    fn fetch(&self, page: u64, p: &mut Pages) {
        p.forget_holes_if_many();
        p.fetches += 1;
        let span_start = page & !(PAGE * SPAN_PAGES - 1);
        let want: Vec<u64> =
            (0..SPAN_PAGES).map(|i| span_start + i * PAGE).filter(|at| !p.map.contains_key(at)).collect();
        self.bring_in(p, &want);
        if !p.map.contains_key(&page) {
            p.map.insert(page, HOLE);
            p.holes += 1;
        }
    }

    /// Read `pages` (distinct, not cached) in one batch, each straight into a slot of its own: one
    /// request per run of consecutive pages in consecutive slots (a request per page cost ~1.5 ms
    /// more at 10,101 tasks), a failed run again page by page; a page that cannot be read is
    /// left out of the cache. Returns how many were read.
    fn bring_in(&self, p: &mut Pages, pages: &[u64]) -> usize {
        let mut want: Vec<(usize, u64)> = pages.iter().map(|&at| (p.slot_for(at), at)).collect();
        want.sort_unstable();
        let mut runs: Vec<(usize, u64, usize)> = Vec::new(); // (first slot, first page, pages)
        for &(slot, at) in &want {
            match runs.last_mut() {
                Some((s0, p0, n)) if *s0 + *n == slot && *p0 + *n as u64 * PAGE == at => *n += 1,
                _ => runs.push((slot, at, 1)),
            }
        }
        let failed = self.read_runs(p, &runs);
        // A run that failed as a whole may hold readable pages: those are asked one by one.
        let singles: Vec<(usize, u64, usize)> = failed
            .iter()
            .filter(|r| r.2 > 1)
            .flat_map(|&(s0, p0, n)| (0..n).map(move |i| (s0 + i, p0 + i as u64 * PAGE, 1)))
            .collect();
        let mut lost: Vec<(usize, u64, usize)> = failed.into_iter().filter(|r| r.2 == 1).collect();
        if !singles.is_empty() {
            lost.extend(self.read_runs(p, &singles));
        }
        for &(_, at, n) in &lost {
            for i in 0..n as u64 {
                p.map.remove(&(at + i * PAGE));
            }
        }
        want.len() - lost.iter().map(|r| r.2).sum::<usize>()
    }

    /// Read each run (ascending, disjoint slots) into its slots; the runs that failed.
    fn read_runs(&self, p: &mut Pages, runs: &[(usize, u64, usize)]) -> Vec<(usize, u64, usize)> {
        let results = {
            let mut reqs: Vec<(u64, &mut [u8])> = Vec::with_capacity(runs.len());
            let mut rest: &mut [u8] = &mut p.store;
            let mut base = 0usize;
            for &(slot, at, n) in runs {
                let tail = std::mem::take(&mut rest);
                let (_, tail) = tail.split_at_mut((slot - base) * PAGE as usize);
                let (view, tail) = tail.split_at_mut(n * PAGE as usize);
                reqs.push((at, view));
                rest = tail;
                base = slot + n;
            }
            self.inner.read_many(&mut reqs)
        };
        runs.iter().zip(results).filter(|(_, r)| r.is_err()).map(|(r, _)| *r).collect()
    }
}

impl CachedMemory {
    /// Bring in every page of `ranges` the cache lacks, each straight into its slot, up to 512
    /// per system call. A walk that knows the next objects of many tasks at once so pays one call per step
    /// of the walk instead of one per 16 KiB span (a call cost ~1.5-3 µs here beyond its pages),
    /// and copies only the pages it reads. Pages that cannot be read are left out (the read that
    /// follows fetches them as usual and reports the precise error). Not while serving a paused
    /// copy (its pages are local already). A footprint being recorded is unaffected: it notes the
    /// pages reads touch, however they came into the cache.
    fn prefetch_pages(&self, ranges: &[(u64, usize)]) {
        if self.stopped().is_err() || !self.enabled.load(Ordering::Relaxed) {
            return;
        }
        let mut p = crate::sync::lock(&self.pages);
        if p.image.is_some() {
            return;
        }
        p.forget_holes_if_many();
        let mut pages: Vec<u64> = Vec::with_capacity(ranges.len() + 8);
        for &(addr, len) in ranges {
            if len == 0 || len > DIRECT_READ {
                continue;
            }
            let first = addr & !(PAGE - 1);
            let Some(last) = addr.checked_add(len as u64 - 1).map(|e| e & !(PAGE - 1)) else { continue };
            let mut at = first;
            while at <= last {
                pages.push(at);
                at += PAGE;
            }
        }
        pages.sort_unstable();
        pages.dedup();
        pages.retain(|pg| !p.map.contains_key(pg));
        pages.truncate(MAX_PREFETCH);
        if pages.is_empty() {
            return;
        }
        p.prefetches += 1;
        p.prefetched += self.bring_in(&mut p, &pages);
    }
}

impl Memory for CachedMemory {
    fn prefetch(&self, ranges: &[(u64, usize)]) {
        self.prefetch_pages(ranges);
    }

    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        self.stopped()?;
        if !self.enabled.load(Ordering::Relaxed) {
            return self.inner.read(addr, buf);
        }
        let mut p = crate::sync::lock(&self.pages);
        // The common case first: no image, not recording, the bytes inside one cached page.
        if p.image.is_none() && p.recording.is_none() {
            let page = addr & !(PAGE - 1);
            let off = (addr - page) as usize;
            if off + buf.len() <= PAGE as usize {
                if let Some(&slot) = p.map.get(&page) {
                    if slot != HOLE {
                        buf.copy_from_slice(&p.slot(slot)[off..off + buf.len()]);
                        return Ok(());
                    }
                }
            }
        }
        let pages = &mut *p;
        if pages.image.as_ref().is_some_and(|img| img.read_near(addr, buf, &mut pages.image_hint)) {
            if let Some(r) = p.recording.as_mut() {
                r.spoil();
            }
            return Ok(());
        }
        if buf.len() > DIRECT_READ {
            let recording = p.recording.is_some();
            drop(p);
            let r = self.inner.read(addr, buf);
            if recording {
                if let Some(rec) = crate::sync::lock(&self.pages).recording.as_mut() {
                    rec.range(addr, buf.len(), r.is_ok().then_some(&buf[..]));
                }
            }
            return r;
        }
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(MemError::Unmapped(addr))?;
            let page = a & !(PAGE - 1);
            let slot = match p.map.get(&page) {
                Some(s) => *s,
                None => {
                    self.fetch(page, &mut p);
                    p.map.get(&page).copied().unwrap_or(HOLE)
                }
            };
            let pages = &mut *p;
            if let Some(rec) = pages.recording.as_mut() {
                if rec.moved_to(page) {
                    rec.page(
                        page,
                        (slot != HOLE).then(|| &pages.store[slot as usize * PAGE as usize..][..PAGE as usize]),
                    );
                }
            }
            if slot == HOLE {
                drop(p);
                // Unmapped as far as the cache can tell: ask the target directly for the precise error.
                let r = self.inner.read(addr, buf);
                if r.is_ok() {
                    // Readable after all (mapped meanwhile): the recorded hole no longer describes it.
                    if let Some(rec) = crate::sync::lock(&self.pages).recording.as_mut() {
                        rec.spoil();
                    }
                }
                return r;
            }
            let data = p.slot(slot);
            let off = (a - page) as usize;
            let n = (PAGE as usize - off).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&data[off..off + n]);
            done += n;
        }
        Ok(())
    }

    fn read_many(&self, reqs: &mut [(u64, &mut [u8])]) -> Vec<MemResult<()>> {
        if let Err(e) = self.stopped() {
            return reqs.iter().map(|_| Err(e.clone())).collect();
        }
        if !self.enabled.load(Ordering::Relaxed) {
            return self.inner.read_many(reqs);
        }
        reqs.iter_mut().map(|(a, b)| self.read(*a, b)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SyntheticMemory;

    #[test]
    fn cached_reads_match_direct_reads_across_pages() {
        let mut m = SyntheticMemory::new();
        let data: Vec<u8> = (0..3 * 4096).map(|i| (i % 251) as u8).collect();
        m.map(0x10000, data.clone());
        let c = CachedMemory::new(Arc::new(m));
        c.begin();
        let mut b = vec![0u8; 5000];
        c.read(0x10000 + 4000, &mut b).unwrap();
        assert_eq!(&b[..], &data[4000..9000]);
        // Partly unmapped span: the neighbourhood read fails, single pages still work.
        assert_eq!(
            c.read_u64(0x10000 + 3 * 4096 - 8).unwrap(),
            u64::from_le_bytes(data[3 * 4096 - 8..].try_into().unwrap())
        );
        assert!(c.read_u64(0x10000 + 3 * 4096 - 4).is_err());
        assert!(c.read_u64(0x5).is_err());
        c.end();
        assert!(c.read_u64(0x10000).is_ok());
    }

    #[test]
    fn prefetched_pages_serve_reads_without_further_fetches() {
        let mut m = SyntheticMemory::new();
        let data: Vec<u8> = (0..64 * 4096).map(|i| ((i / 3) % 251) as u8).collect();
        m.map(0x100000, data.clone());
        let c = CachedMemory::new(Arc::new(m));
        c.begin();
        // Scattered objects, one across a page boundary, one in unmapped memory.
        let objects =
            [(0x100000 + 100, 200), (0x100000 + 9 * 4096 - 50, 100), (0x100000 + 40 * 4096, 8), (0x9000000, 64)];
        c.prefetch(&objects);
        {
            let p = crate::sync::lock(&c.pages);
            assert_eq!((p.prefetches, p.prefetched, p.fetches), (1, 4, 0), "pages 0, 8, 9 and 40");
            assert!(!p.map.contains_key(&0x9000000), "an unreadable page is left to the read");
        }
        for &(a, n) in &objects[..3] {
            let mut b = vec![0u8; n];
            c.read(a, &mut b).unwrap();
            let off = (a - 0x100000) as usize;
            assert_eq!(&b[..], &data[off..off + n]);
        }
        assert_eq!(crate::sync::lock(&c.pages).fetches, 0, "every read was served by the prefetch");
        assert!(c.read_u64(0x9000000).is_err());
        // A prefetch brings in at most a quarter of the window.
        let many: Vec<(u64, usize)> = (0..MAX_PAGES as u64).map(|i| (0x200000 + i * 4096, 8)).collect();
        let mut big = SyntheticMemory::new();
        big.map(0x200000, vec![1u8; MAX_PAGES * 4096]);
        let c = CachedMemory::new(Arc::new(big));
        c.begin();
        c.prefetch(&many);
        assert_eq!(crate::sync::lock(&c.pages).prefetched, MAX_PREFETCH);
        // While a footprint is recorded, prefetched pages are recorded when reads touch them
        // (and only then).
        c.begin();
        c.start_recording();
        c.prefetch(&many[..4]);
        c.read_u64(0x200000 + 4096).unwrap();
        let fp = c.finish_recording().expect("a footprint");
        assert_eq!(fp.pages(), 1);
        assert!(c.still_holds(&fp).unwrap());
    }

    /// One page whose first word changes between reads, as a live target's memory does.
    struct Changing(Mutex<u64>);

    impl Memory for Changing {
        fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
            if addr < 0x1000 || addr + buf.len() as u64 > 0x2000 {
                return Err(MemError::Unmapped(addr));
            }
            let mut page = [0u8; 4096];
            page[..8].copy_from_slice(&crate::sync::lock(&self.0).to_le_bytes());
            let off = (addr - 0x1000) as usize;
            buf.copy_from_slice(&page[off..off + buf.len()]);
            Ok(())
        }
    }

    #[test]
    fn past_cache_reads_what_the_target_holds_now() {
        let m = Arc::new(Changing(Mutex::new(1)));
        let c = CachedMemory::new(m.clone());
        c.begin();
        c.start_recording();
        assert_eq!(c.read_u64(0x1000).unwrap(), 1);
        *crate::sync::lock(&m.0) = 2;
        assert_eq!(c.read_u64(0x1000).unwrap(), 1, "the snapshot's page");
        assert_eq!(c.past_cache(|| c.read_u64(0x1000)).map(|r| r.unwrap()), Some(2), "read again past it");
        *crate::sync::lock(&m.0) = 3;
        assert_eq!(c.read_u64(0x1000).unwrap(), 1, "caching again afterwards");
        assert!(c.finish_recording().is_none(), "a footprint cannot describe reads past the cache");
        c.end();
    }

    #[test]
    fn pages_are_recycled_when_the_window_is_full() {
        let mut m = SyntheticMemory::new();
        let pages = MAX_PAGES as u64 * 3;
        let data: Vec<u8> = (0..pages * PAGE).map(|i| ((i / 8) % 253) as u8).collect();
        m.map(0x100000, data.clone());
        let c = CachedMemory::new(Arc::new(m));
        c.begin();
        // Two passes over three windows' worth of pages: every read sees the right bytes,
        // and the cache never holds more than its window.
        for _ in 0..2 {
            for p in (0..pages).step_by(3) {
                let at = 0x100000 + p * PAGE + 24;
                let want = u64::from_le_bytes(data[(p * PAGE + 24) as usize..][..8].try_into().unwrap());
                assert_eq!(c.read_u64(at).unwrap(), want);
            }
        }
        let held = crate::sync::lock(&c.pages).owner.len();
        assert!(held <= MAX_PAGES, "{held} slots");
        c.end();
    }
}
