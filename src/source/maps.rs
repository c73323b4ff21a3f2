//! The target's memory map (`/proc/PID/maps`): which files are mapped where.
//! Used to find the python executable / libpython and to compute load biases.

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub path: Option<String>,
    /// Device ("major:minor", hex) and inode of the mapped file, as the kernel lists them (0 when
    /// unknown, e.g. from a core): used to tell the target's file from a namesake on this machine.
    pub dev: (u32, u32),
    pub inode: u64,
}

impl MapEntry {
    pub fn readable(&self) -> bool {
        self.perms.starts_with('r')
    }
    pub fn writable(&self) -> bool {
        self.perms.as_bytes().get(1) == Some(&b'w')
    }
}

/// Parse the text of a maps file. Lines that do not parse are skipped (kernel formats vary).
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.splitn(6, ' ');
        let (Some(range), Some(perms), Some(off), Some(dev), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let path = it.next().map(|s| s.trim_start()).filter(|s| !s.is_empty()).map(str::to_string);
        let Some((a, b)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end), Ok(offset)) =
            (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16), u64::from_str_radix(off, 16))
        else {
            continue;
        };
        let dev = dev
            .split_once(':')
            .and_then(|(a, b)| Some((u32::from_str_radix(a, 16).ok()?, u32::from_str_radix(b, 16).ok()?)))
            .unwrap_or((0, 0));
        let inode = inode.trim().parse().unwrap_or(0);
        out.push(MapEntry { start, end, perms: perms.to_string(), offset, path, dev, inode });
    }
    out
}

#[cfg(target_os = "linux")]
pub fn read_maps(pid: i32) -> Result<Vec<MapEntry>> {
    match std::fs::read_to_string(format!("/proc/{pid}/maps")) {
        Ok(t) => Ok(parse_maps(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NoSuchProcess(pid)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(Error::PermissionDenied { pid, detail: "cannot read /proc/PID/maps".into() })
        }
        Err(e) => Err(Error::Other(format!("reading /proc/{pid}/maps: {e}"))),
    }
}

/// Paths as the target sees them. A target chroot-ed into a directory of ours (a container
/// started with chroot rather than pivot_root) has its files listed with that directory in front
/// ("/var/ctr/usr/bin/python3"); `root` is that directory (readlink of /proc/PID/root).
pub fn strip_root(maps: &mut [MapEntry], root: &str) {
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        return;
    }
    for m in maps {
        if let Some(p) = &m.path {
            if let Some(rest) = p.strip_prefix(root).filter(|r| r.starts_with('/')) {
                m.path = Some(rest.to_string());
            }
        }
    }
}

/// Distinct file paths in mapping order.
pub fn mapped_files(maps: &[MapEntry]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for m in maps {
        if let Some(p) = &m.path {
            if p.starts_with('/') && seen.insert(p.clone()) {
                out.push(p.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_with_and_without_paths() {
        let t = "00400000-00401000 r--p 00000000 08:01 123   /usr/bin/python3.14\n\
                 7f00-7f10 rw-p 00001000 00:00 0 \n\
                 garbage\n\
                 7f20-7f30 r-xp 00002000 08:01 5 /lib/libpython3.8.so.1.0 (deleted)\n";
        let m = parse_maps(t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].path.as_deref(), Some("/usr/bin/python3.14"));
        assert_eq!(m[1].path, None);
        assert!(m[1].writable());
        assert_eq!(m[2].offset, 0x2000);
        assert_eq!((m[0].dev, m[0].inode), ((8, 1), 123));
    }
}
