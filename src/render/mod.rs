//! render: turning snapshots into text and JSON for people and scripts.
//! Every string from the target passes through `escape` before it reaches a terminal.

pub mod escape;
pub mod json;
pub mod tasks;
pub mod text;

/// Rendered output is handed on in chunks of this size, and the writers it goes to buffer this
/// much: a chunk passes through them uncopied, and a 100,000-task document (~50–80 MB) never
/// exists in memory at once.
pub const WRITE_CHUNK: usize = 1 << 18;

/// Whether `bad` holds for some 8-byte word of `s` (the tail padded with `pad`): byte tests done
/// eight at a time with word tricks, for the escape checks every rendered string goes through.
pub(crate) fn any_word(s: &[u8], pad: u8, bad: impl Fn(u64) -> bool) -> bool {
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        if bad(u64::from_le_bytes(w)) {
            return true;
        }
    }
    let rest = chunks.remainder();
    let mut w = [pad; 8];
    w[..rest.len()].copy_from_slice(rest);
    bad(u64::from_le_bytes(w))
}

/// Whether some byte of the word `w` is less than `n` (n <= 128): the classic word trick.
pub(crate) fn has_less(w: u64, n: u8) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    w.wrapping_sub(ONES * n as u64) & !w & (ONES * 0x80) != 0
}

/// Whether some byte of the word `w` equals `b`.
pub(crate) fn has_byte(w: u64, b: u8) -> bool {
    has_less(w ^ (0x0101_0101_0101_0101 * b as u64), 1)
}
