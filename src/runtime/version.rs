//! Which CPython the target runs: `Py_Version` (3.11+), the debug-offsets header (3.13+), or the
//! formatted `sys.version` string in the library's writable data (3.8–3.10), cross-checked with file names.

use crate::source::{target::version_from_name, Target};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PyVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    /// 0xA alpha, 0xB beta, 0xC release candidate, 0xF final
    pub level: u32,
    pub serial: u32,
}

impl PyVersion {
    pub fn from_hex(hex: u64) -> PyVersion {
        PyVersion {
            major: ((hex >> 24) & 0xff) as u32,
            minor: ((hex >> 16) & 0xff) as u32,
            micro: ((hex >> 8) & 0xff) as u32,
            level: ((hex >> 4) & 0xf) as u32,
            serial: (hex & 0xf) as u32,
        }
    }
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
    pub fn is(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) == (major, minor)
    }
}

impl std::fmt::Display for PyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)?;
        match self.level {
            0xA => write!(f, "a{}", self.serial),
            0xB => write!(f, "b{}", self.serial),
            0xC => write!(f, "rc{}", self.serial),
            _ => Ok(()),
        }
    }
}

/// Parse "3.8.18" / "3.15.0a7" at the start of `s`.
pub fn parse_version_prefix(s: &str) -> Option<PyVersion> {
    let mut nums = [0u32; 3];
    let mut rest = s;
    for (i, slot) in nums.iter_mut().enumerate() {
        let d: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        if d.is_empty() || d.len() > 3 {
            return None;
        }
        *slot = d.parse().ok()?;
        rest = &rest[d.len()..];
        if i < 2 {
            rest = rest.strip_prefix('.')?;
        }
    }
    let (level, serial) = ["a", "b", "rc"]
        .iter()
        .zip([0xA, 0xB, 0xC])
        .find_map(|(p, l)| {
            let r = rest.strip_prefix(p)?;
            let d: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
            Some((l, d.parse().ok()?))
        })
        .unwrap_or((0xF, 0));
    Some(PyVersion { major: nums[0], minor: nums[1], micro: nums[2], level, serial })
}

/// Scan bytes for the formatted `sys.version` ("3.8.18 (default, ...") of the expected minor version.
pub fn scan_version_string(data: &[u8], major: u32, minor: u32) -> Option<PyVersion> {
    let needle = format!("{major}.{minor}.");
    let nb = needle.as_bytes();
    let mut i = 0;
    while i + nb.len() < data.len() {
        if &data[i..i + nb.len()] == nb && (i == 0 || !data[i - 1].is_ascii_digit()) {
            let end = (i + 40).min(data.len());
            let s = String::from_utf8_lossy(&data[i..end]);
            if let Some(v) = parse_version_prefix(&s) {
                // The formatted sys.version is followed by " (" — that rules out paths like "3.8.18/lib".
                let vs = v.to_string();
                let rest = s.get(vs.len()..).unwrap_or("");
                if rest.starts_with(" (") || rest.starts_with("+ (") {
                    return Some(v);
                }
            }
        }
        i += 1;
    }
    None
}

/// Detect the version, best source first.
pub fn detect(target: &Target) -> Option<(PyVersion, bool)> {
    let mem = target.mem.as_ref();
    // 3.13+: the debug table header carries PY_VERSION_HEX and the free-threading flag.
    if let Ok(Some((hex, ft))) = super::debug_offsets::read_header(mem, target.runtime_addr) {
        return Some((PyVersion::from_hex(hex), ft));
    }
    let name_ft = version_from_name(&target.python.path).map(|v| v.2).unwrap_or(false);
    // 3.11+: exported constant.
    if let Some(addr) = target.symbol("Py_Version") {
        if let Ok(hex) = mem.read_u32(addr) {
            let v = PyVersion::from_hex(hex as u64);
            if v.major == 3 {
                return Some((v, name_ft));
            }
        }
    }
    // 3.8-3.10: the minor from the file name, the micro from Py_GetVersion's buffer in .bss/.data.
    let (maj, min) =
        version_from_name(&target.python.path).or_else(|| version_from_name(&target.exe)).map(|(a, b, _)| (a, b))?;
    for sec in [".bss", ".data"] {
        if let Some((addr, size)) = target.python.section(sec) {
            let size = size.min(8 << 20) as usize;
            if let Ok(bytes) = mem.read_vec(addr, size) {
                if let Some(v) = scan_version_string(&bytes, maj, min) {
                    return Some((v, name_ft));
                }
            }
        }
    }
    Some((PyVersion { major: maj, minor: min, micro: 0, level: 0xF, serial: 0 }, name_ft))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_display() {
        assert_eq!(PyVersion::from_hex(0x030e0af0).to_string(), "3.14.10");
        assert_eq!(PyVersion::from_hex(0x030f00a7).to_string(), "3.15.0a7");
        assert_eq!(PyVersion::from_hex(0x030d00c1).to_string(), "3.13.0rc1");
    }

    #[test]
    fn parse_prefix() {
        assert_eq!(parse_version_prefix("3.8.18 (default").unwrap().micro, 18);
        assert_eq!(parse_version_prefix("3.15.0a7 (x").unwrap().level, 0xA);
        assert!(parse_version_prefix("3.x").is_none());
    }

    #[test]
    fn scan_finds_sys_version_not_paths() {
        let mut data = b"/root/.pyenv/versions/3.8.18/lib\0\0".to_vec();
        data.extend_from_slice(b"3.8.18 (default, Jan  1 2024) [GCC 12]\0");
        assert_eq!(scan_version_string(&data, 3, 8).unwrap().to_string(), "3.8.18");
        assert!(scan_version_string(b"3.8.18/lib", 3, 8).is_none());
    }
}
