//! Instruction offset → source line, for each line-table format CPython has used:
//! `co_lnotab` (3.8–3.9), the PEP 626 table (3.10) and the location table (3.11+).

/// Which decoder a code object's table needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineTableKind {
    Lnotab,
    Pep626,
    Locations,
}

impl LineTableKind {
    pub fn for_minor(minor: u32) -> LineTableKind {
        match minor {
            0..=9 => LineTableKind::Lnotab,
            10 => LineTableKind::Pep626,
            _ => LineTableKind::Locations,
        }
    }
}

/// `addr` is in bytes for Lnotab/Pep626 and in code units for Locations (the natural unit of each
/// format). Negative means "before the first instruction". Returns `None` for "no line".
pub fn line_for(kind: LineTableKind, table: &[u8], firstlineno: i64, addr: i64) -> Option<i64> {
    if addr < 0 {
        return Some(firstlineno);
    }
    match kind {
        LineTableKind::Lnotab => Some(lnotab(table, firstlineno, addr)),
        LineTableKind::Pep626 => pep626(table, firstlineno, addr),
        LineTableKind::Locations => locations(table, firstlineno, addr),
    }
}

/// 3.8–3.9: pairs (address increment, signed line increment).
fn lnotab(table: &[u8], firstlineno: i64, addrq: i64) -> i64 {
    let mut line = firstlineno;
    let mut addr: i64 = 0;
    for pair in table.chunks_exact(2) {
        addr += pair[0] as i64;
        if addr > addrq {
            break;
        }
        line = line.wrapping_add(pair[1] as i8 as i64);
    }
    line
}

/// 3.10: pairs (range length in bytes, signed line delta or -128 for "no line").
fn pep626(table: &[u8], firstlineno: i64, addrq: i64) -> Option<i64> {
    let mut line = firstlineno;
    let mut end: i64 = 0;
    for pair in table.chunks_exact(2) {
        let start = end;
        end += pair[0] as i64;
        let ldelta = pair[1] as i8;
        let this_line = if ldelta == -128 {
            None
        } else {
            line = line.wrapping_add(ldelta as i64);
            Some(line)
        };
        if start <= addrq && addrq < end {
            return this_line;
        }
    }
    None
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn varint(&mut self) -> Option<u64> {
        let mut b = self.byte()?;
        let mut val = (b & 63) as u64;
        let mut shift = 0;
        while b & 64 != 0 {
            b = self.byte()?;
            shift += 6;
            if shift > 60 {
                return None;
            }
            val |= ((b & 63) as u64) << shift;
        }
        Some(val)
    }
    fn svarint(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some(if v & 1 != 0 { -((v >> 1) as i64) } else { (v >> 1) as i64 })
    }
}

/// 3.11+: entries of (code, length in code units) with a line delta each; see CPython's
/// Objects/locations.md. The running line must be updated for every entry passed.
fn locations(table: &[u8], firstlineno: i64, idx: i64) -> Option<i64> {
    let mut c = Cursor { data: table, pos: 0 };
    let mut line = firstlineno;
    let mut addr: i64 = 0;
    while let Some(first) = c.byte() {
        if first & 0x80 == 0 {
            return None; // not at an entry start: corrupt table
        }
        let code = (first >> 3) & 15;
        let len = (first & 7) as i64 + 1;
        let entry_line = match code {
            15 => None,
            14 => {
                line = line.wrapping_add(c.svarint()?);
                c.varint()?;
                c.varint()?;
                c.varint()?;
                Some(line)
            }
            13 => {
                line = line.wrapping_add(c.svarint()?);
                Some(line)
            }
            10..=12 => {
                line = line.wrapping_add((code - 10) as i64);
                c.byte()?;
                c.byte()?;
                Some(line)
            }
            _ => {
                c.byte()?;
                Some(line)
            }
        };
        if addr <= idx && idx < addr + len {
            return entry_line;
        }
        addr += len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lnotab_basic_and_negative_deltas() {
        // firstlineno 10: addr 0..6 line 10, at 6 -> 11, at 12 -> 13, at 20 -> 12 (negative)
        let t = [6u8, 1, 6, 2, 8, 0xff];
        assert_eq!(line_for(LineTableKind::Lnotab, &t, 10, 0), Some(10));
        assert_eq!(line_for(LineTableKind::Lnotab, &t, 10, 6), Some(11));
        assert_eq!(line_for(LineTableKind::Lnotab, &t, 10, 13), Some(13));
        assert_eq!(line_for(LineTableKind::Lnotab, &t, 10, 25), Some(12));
        assert_eq!(line_for(LineTableKind::Lnotab, &t, 10, -1), Some(10));
    }

    #[test]
    fn lnotab_large_jump_split_into_pairs() {
        // +300 bytes before the line advances: (255,0) (45,1)
        let t = [255u8, 0, 45, 1];
        assert_eq!(line_for(LineTableKind::Lnotab, &t, 1, 299), Some(1));
        assert_eq!(line_for(LineTableKind::Lnotab, &t, 1, 300), Some(2));
    }

    #[test]
    fn pep626_ranges_and_no_line() {
        // [0,4) line 5 (+0 from first 5), [4,4) empty +1 -> 6, [4,10) +1 -> 7, [10,12) no line, [12,20) -2 -> 5
        let t = [4u8, 0, 0, 1, 6, 1, 2, 0x80, 8, (-2i8) as u8];
        assert_eq!(line_for(LineTableKind::Pep626, &t, 5, 2), Some(5));
        assert_eq!(line_for(LineTableKind::Pep626, &t, 5, 4), Some(7));
        assert_eq!(line_for(LineTableKind::Pep626, &t, 5, 10), None);
        assert_eq!(line_for(LineTableKind::Pep626, &t, 5, 12), Some(5));
        assert_eq!(line_for(LineTableKind::Pep626, &t, 5, 99), None);
    }

    #[test]
    fn locations_all_entry_codes() {
        let mut t = Vec::new();
        t.extend([0x80 | (0 << 3) | 1, 0x00]); // short form, 2 units, line +0 => 100
        t.extend([0x80 | (11 << 3), 3, 9]); // one-line form, +1 => 101, 1 unit
        t.extend([0x80 | (13 << 3) | 2, 0x0a]); // no-column form, svarint 10 => +5 => 106, 3 units
        t.extend([0x80 | (15 << 3)]); // no location, 1 unit
        t.extend([0x80 | (14 << 3), 0x07, 0, 1, 1]); // long form, svarint 7 => -3 => 103, 1 unit
        t.extend([0x80 | (13 << 3), 0x40 | 0x00, 0x01]); // varint continuation: 64 => +32 => 135
        let l = |i| line_for(LineTableKind::Locations, &t, 100, i);
        assert_eq!(l(0), Some(100));
        assert_eq!(l(1), Some(100));
        assert_eq!(l(2), Some(101));
        assert_eq!(l(3), Some(106));
        assert_eq!(l(5), Some(106));
        assert_eq!(l(6), None);
        assert_eq!(l(7), Some(103));
        assert_eq!(l(8), Some(135));
        assert_eq!(l(9), None);
        assert_eq!(l(-1), Some(100));
    }

    #[test]
    fn corrupt_tables_never_panic() {
        for kind in [LineTableKind::Lnotab, LineTableKind::Pep626, LineTableKind::Locations] {
            for t in [
                &[][..],
                &[0xff][..],
                &[0x7f, 0x80][..],
                &[0xf8, 0x7f, 0x7f][..],
                &[0xe8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..],
            ] {
                let _ = line_for(kind, t, 1, 3);
                let _ = line_for(kind, t, i64::MAX / 2, i64::MAX / 4);
            }
        }
    }
}
