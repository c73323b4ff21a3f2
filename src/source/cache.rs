//! A snapshot-scoped page cache over target memory: one `process_vm_readv` fetches a 16 KiB
//! neighbourhood, so walking 100,000 densely allocated tasks costs thousands of calls, not millions.

use super::memory::{MemError, MemResult, Memory};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

const PAGE: u64 = 4096;
const SPAN_PAGES: u64 = 4;
/// Reads larger than this go straight to the target.
const DIRECT_READ: usize = 64 * 1024;
/// Bound on cached bytes; the cache is simply emptied when full.
const MAX_PAGES: usize = 8192; // 32 MiB

type Page = Option<Box<[u8]>>;

type PageMap = HashMap<u64, Page, rustc_hash::FxBuildHasher>;

pub struct CachedMemory {
    inner: Arc<dyn Memory>,
    pages: Mutex<PageMap>,
    enabled: AtomicBool,
    /// Set from outside (a pause deadline): every read fails from then on.
    cancel: AtomicU8,
}

const CANCEL_NONE: u8 = 0;
const CANCEL_DEADLINE: u8 = 1;

impl CachedMemory {
    pub fn new(inner: Arc<dyn Memory>) -> CachedMemory {
        CachedMemory {
            inner,
            pages: Mutex::new(PageMap::default()),
            enabled: AtomicBool::new(false),
            cancel: AtomicU8::new(CANCEL_NONE),
        }
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

    /// Stop caching and free the pages.
    pub fn end(&self) {
        if std::env::var_os("TASKSPY_TIMING").is_some() {
            eprintln!("timing: page cache held {} pages", crate::sync::lock(&self.pages).len());
        }
        self.enabled.store(false, Ordering::SeqCst);
        let mut p = crate::sync::lock(&self.pages);
        p.clear();
        p.shrink_to_fit();
    }

    pub fn inner(&self) -> &dyn Memory {
        self.inner.as_ref()
    }

    fn fetch(&self, page: u64, map: &mut PageMap) {
        if map.len() >= MAX_PAGES {
            map.clear();
        }
        // Try the aligned span around the page first (one system call, one buffer per page, no
        // extra copy), then the page alone.
        let span_start = page & !(PAGE * SPAN_PAGES - 1);
        let mut bufs: Vec<Vec<u8>> = (0..SPAN_PAGES).map(|_| vec![0u8; PAGE as usize]).collect();
        let ok = {
            let mut reqs: Vec<(u64, &mut [u8])> =
                bufs.iter_mut().enumerate().map(|(i, b)| (span_start + i as u64 * PAGE, &mut b[..])).collect();
            let res = self.inner.read_many(&mut reqs);
            res.iter().map(|r| r.is_ok()).collect::<Vec<bool>>()
        };
        let mut got_page = false;
        for (i, b) in bufs.into_iter().enumerate() {
            let p = span_start + i as u64 * PAGE;
            if ok[i] {
                got_page |= p == page;
                map.entry(p).or_insert(Some(b.into_boxed_slice()));
            }
        }
        if !got_page {
            map.insert(page, None);
        }
    }
}

impl Memory for CachedMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> MemResult<()> {
        self.stopped()?;
        if !self.enabled.load(Ordering::Relaxed) || buf.len() > DIRECT_READ {
            return self.inner.read(addr, buf);
        }
        let mut map = crate::sync::lock(&self.pages);
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.checked_add(done as u64).ok_or(MemError::Unmapped(addr))?;
            let page = a & !(PAGE - 1);
            if !map.contains_key(&page) {
                self.fetch(page, &mut map);
            }
            match map.get(&page) {
                Some(Some(data)) => {
                    let off = (a - page) as usize;
                    let n = (PAGE as usize - off).min(buf.len() - done);
                    buf[done..done + n].copy_from_slice(&data[off..off + n]);
                    done += n;
                }
                _ => {
                    drop(map);
                    // Unmapped as far as the cache can tell: ask the target directly for the precise error.
                    return self.inner.read(addr, buf);
                }
            }
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
}
