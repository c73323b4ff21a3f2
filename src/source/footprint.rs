//! What a walk read: every page (and every large range) it touched, with a hash of the bytes it
//! saw; checked against the target again later to tell whether anything the walk used changed.

use super::cache::PAGE;
use super::memory::{MemResult, Memory};
use rustc_hash::FxHashSet;

/// The hash recorded for a page or range that could not be read (it must stay unreadable).
const UNREADABLE: u64 = 0x5eed_dead_5eed_dead;
/// Pages compared per system call when checking.
const CHECK_BATCH: usize = 256;
/// Pages remembered at most: a walk that touches more is not worth checking (the check would
/// cost about what the walk does).
const MAX_PAGES: usize = 1 << 18;

/// A 64-bit hash of `bytes`, four independent lanes so it runs near memory speed; not
/// cryptographic: it only has to notice that a page the target wrote to is different.
pub fn hash(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut lanes = [K, K.rotate_left(17), K.rotate_left(31), K.rotate_left(47)];
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        for (i, lane) in lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            *lane = (*lane ^ w).wrapping_mul(K).rotate_left(29);
        }
    }
    let mut h = lanes.iter().fold(bytes.len() as u64, |h, l| (h ^ l).wrapping_mul(K).rotate_left(23));
    for &b in chunks.remainder() {
        h = (h ^ b as u64).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

/// Pages and ranges touched while recording.
#[derive(Debug, Default)]
pub struct Recording {
    seen: FxHashSet<u64>,
    /// In the order the walk first touched them: the registries and thread states come first,
    /// and they are what changes first in a busy process, so a check of one ends early.
    pages: Vec<(u64, u64)>,
    /// The last page touched (consecutive reads mostly stay on one page).
    last: Option<u64>,
    ranges: Vec<(u64, usize, u64)>,
    /// Something was read that a later check cannot repeat (a copy taken in a pause).
    spoiled: bool,
}

impl Recording {
    /// Whether a read moved off the page read last (consecutive reads mostly stay on one page,
    /// and those need no lookup at all).
    pub fn moved_to(&mut self, page: u64) -> bool {
        let moved = self.last != Some(page);
        self.last = Some(page);
        moved
    }

    /// The page's bytes as the walk saw them (`None`: it could not be read); hashed the first
    /// time the page is touched only.
    pub fn page(&mut self, page: u64, bytes: Option<&[u8]>) {
        if !self.seen.insert(page) {
            return;
        }
        if self.pages.len() >= MAX_PAGES {
            self.spoiled = true;
            return;
        }
        self.pages.push((page, bytes.map(hash).unwrap_or(UNREADABLE)));
    }

    /// A range read directly (too large for the page cache), and what it held.
    pub fn range(&mut self, addr: u64, len: usize, bytes: Option<&[u8]>) {
        self.ranges.push((addr, len, bytes.map(hash).unwrap_or(UNREADABLE)));
    }

    pub fn spoil(&mut self) {
        self.spoiled = true;
    }

    pub fn finish(self) -> Option<Footprint> {
        if self.spoiled {
            return None;
        }
        Some(Footprint { pages: self.pages, ranges: self.ranges })
    }
}

/// Everything one walk depended on, as hashes.
#[derive(Debug, Clone, Default)]
pub struct Footprint {
    pages: Vec<(u64, u64)>,
    ranges: Vec<(u64, usize, u64)>,
}

impl Footprint {
    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Whether `mem` still holds exactly what was recorded: pages are read in batches, and the
    /// first difference ends the check. Errors only for a read that must stop (target gone,
    /// Ctrl-C, deadline): anything else that differs is simply "changed". (Checking on two
    /// threads was tried: on this 2-vCPU VM waking the second CPU cost what it saved.)
    pub fn unchanged(&self, mem: &dyn Memory) -> MemResult<bool> {
        if !pages_unchanged(&self.pages, mem)? {
            return Ok(false);
        }
        for &(addr, len, want) in &self.ranges {
            let now = match mem.read_vec(addr, len) {
                Ok(b) => hash(&b),
                Err(e) if e.is_fatal() => return Err(e),
                Err(_) => UNREADABLE,
            };
            if now != want {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Check `pages` against `mem`, stopping at the first difference.
fn pages_unchanged(pages: &[(u64, u64)], mem: &dyn Memory) -> MemResult<bool> {
    let mut buf = vec![0u8; CHECK_BATCH * PAGE as usize];
    for batch in pages.chunks(CHECK_BATCH) {
        let results = {
            let mut reqs: Vec<(u64, &mut [u8])> =
                batch.iter().zip(buf.chunks_mut(PAGE as usize)).map(|((p, _), b)| (*p, b)).collect();
            mem.read_many(&mut reqs)
        };
        for (((_, want), r), bytes) in batch.iter().zip(results).zip(buf.chunks(PAGE as usize)) {
            let now = match r {
                Ok(()) => hash(bytes),
                Err(e) if e.is_fatal() => return Err(e),
                Err(_) => UNREADABLE,
            };
            if now != *want {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SyntheticMemory;

    #[test]
    fn a_changed_byte_or_mapping_is_noticed() {
        let data: Vec<u8> = (0..3 * PAGE).map(|i| (i % 241) as u8).collect();
        let mut m = SyntheticMemory::new();
        m.map(0x10000, data.clone());
        let mut r = Recording::default();
        for p in 0..3u64 {
            assert!(r.moved_to(0x10000 + p * PAGE));
            r.page(0x10000 + p * PAGE, Some(&data[(p * PAGE) as usize..((p + 1) * PAGE) as usize]));
        }
        assert!(!r.moved_to(0x10000 + 2 * PAGE), "the page just recorded");
        r.page(0x10000, Some(&[1u8; 16])); // seen before: the first bytes stay recorded
        r.page(0x20000, None);
        r.range(0x10000, 9000, Some(&data[..9000]));
        let fp = r.finish().unwrap();
        assert_eq!(fp.pages(), 4);
        assert!(fp.unchanged(&m).unwrap());

        let mut changed = data.clone();
        changed[2 * PAGE as usize + 100] ^= 1;
        let mut m2 = SyntheticMemory::new();
        m2.map(0x10000, changed);
        assert!(!fp.unchanged(&m2).unwrap(), "one flipped bit");

        let mut m3 = SyntheticMemory::new();
        m3.map(0x10000, data.clone());
        m3.map(0x20000, vec![0u8; PAGE as usize]);
        assert!(!fp.unchanged(&m3).unwrap(), "a page that became readable");

        let mut spoiled = Recording::default();
        spoiled.spoil();
        assert!(spoiled.finish().is_none());
    }

    #[test]
    fn hash_tells_neighbouring_pages_apart() {
        let a = vec![0u8; PAGE as usize];
        let mut b = a.clone();
        b[4095] = 1;
        assert_ne!(hash(&a), hash(&b));
        assert_ne!(hash(&a[..32]), hash(&a[..33]));
    }
}
