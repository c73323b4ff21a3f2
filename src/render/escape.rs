//! Making target-controlled text (thread/task names, file names) safe for a terminal: control
//! characters and bidi overrides are shown escaped, never emitted raw.

/// Escape control characters (C0, DEL, C1) and invisible bidi/format characters.
pub fn escape(s: &str) -> String {
    escaped(s).into_owned()
}

/// `escape`, borrowed when nothing needs escaping (almost every name and path): the hot paths
/// (`pstree`, `ps` of 100,000 tasks) print without a copy per frame.
pub fn escaped(s: &str) -> std::borrow::Cow<'_, str> {
    // Fast path: printable ASCII without backslashes needs no work.
    if plain(s.as_bytes()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // A literal backslash is doubled so "\\x1b" in a name cannot pass for an escaped ESC.
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() || is_invisible_format(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether every byte is printable ASCII other than a backslash, eight bytes at a time (a high
/// bit means non-ASCII).
fn plain(s: &[u8]) -> bool {
    use super::{has_byte, has_less};
    !super::any_word(s, b'a', |w| {
        w & 0x8080_8080_8080_8080 != 0 || has_less(w, 0x20) || has_byte(w, 0x7f) || has_byte(w, b'\\')
    })
}

fn is_invisible_format(c: char) -> bool {
    matches!(c as u32, 0x200b..=0x200f | 0x202a..=0x202e | 0x2066..=0x2069 | 0xfeff | 0x061c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_test_matches_the_byte_rule_at_every_position() {
        let rule = |b: &[u8]| b.iter().all(|&b| (0x20..0x7f).contains(&b) && b != b'\\');
        for len in [0usize, 1, 7, 8, 9, 16, 23] {
            let clean = vec![b'a'; len];
            assert!(plain(&clean));
            for at in 0..len {
                for v in 0..=255u8 {
                    let mut b = clean.clone();
                    b[at] = v;
                    assert_eq!(plain(&b), rule(&b), "{len} {at} {v}");
                }
            }
        }
    }

    #[test]
    fn escapes_terminal_sequences_and_keeps_unicode() {
        assert_eq!(escape("evil\x1b[31mred\nline"), "evil\\x1b[31mred\\nline");
        assert_eq!(escape("wörker-ü 名前"), "wörker-ü 名前");
        assert_eq!(escape("a\u{202e}b\u{9b}c\x7f"), "a\\u{202e}b\\u{9b}c\\x7f");
        assert!(!escape("\x07\x08\x00").chars().any(|c| c.is_control()));
        assert_eq!(escape("a\\x1b"), "a\\\\x1b");
        assert_ne!(escape("\\x1b"), escape("\x1b"));
        assert_eq!(escaped("plain/path.py"), "plain/path.py");
        assert_eq!(escaped("a\x1bb"), escape("a\x1bb"));
    }
}
