//! Opening a core file for mapping: plain ELF cores are mapped as they are; systemd-coredump's
//! zstd- and lz4-compressed cores are first decompressed into an unlinked temporary file.

use crate::error::{Error, Result};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;

const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const LZ4: &[u8] = &[0x04, 0x22, 0x4d, 0x18];
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0];

fn bad(path: &Path, detail: impl Into<String>) -> Error {
    Error::BadInput { path: path.display().to_string(), detail: detail.into() }
}

/// An opened core: mapped (its headers and notes are parsed in place) and the file itself
/// (memory is read from it with `pread`: pages read through a mapping would count in taskspy's
/// resident set, a 35 MB core of a 10,101-task process added ~29 MB to it).
pub struct OpenedCore {
    pub map: Arc<memmap2::Mmap>,
    pub file: std::fs::File,
}

/// Map the core at `path`, decompressing it first when it is compressed.
pub fn map_core(path: &Path) -> Result<OpenedCore> {
    let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad(path, "no such file"),
        _ => bad(path, e.to_string()),
    })?;
    if f.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(bad(path, "is a directory"));
    }
    let mut magic = [0u8; 6];
    let n = f.read(&mut magic).map_err(|e| bad(path, e.to_string()))?;
    f.rewind().map_err(|e| bad(path, e.to_string()))?;
    let magic = &magic[..n];
    let file = if magic.starts_with(ZSTD) {
        let dec = ruzstd::decoding::StreamingDecoder::new(std::io::BufReader::new(f))
            .map_err(|e| bad(path, format!("zstd-compressed core cannot be read: {e}")))?;
        inflate(path, dec, "zstd")?
    } else if magic.starts_with(LZ4) {
        inflate(path, lz4_flex::frame::FrameDecoder::new(std::io::BufReader::new(f)), "lz4")?
    } else if magic.starts_with(XZ) {
        return Err(bad(path, "an xz-compressed core: decompress it first (xz -dk FILE)"));
    } else {
        f
    };
    // SAFETY: a read-only private mapping; a core is not modified while we read it.
    let m = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(path, format!("cannot map it: {e}")))?;
    Ok(OpenedCore { map: Arc::new(m), file })
}

/// Decompress into a temporary file that is unlinked at once (it vanishes when we exit).
fn inflate(path: &Path, mut r: impl Read, what: &str) -> Result<std::fs::File> {
    let dir = std::env::temp_dir();
    let tmp = dir.join(format!("taskspy-core-{}-{}", std::process::id(), path_tag(path)));
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::other(format!("cannot create {} to decompress the core: {e}", tmp.display())))?;
    let _ = std::fs::remove_file(&tmp);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut out);
    std::io::copy(&mut r, &mut w)
        .map_err(|e| bad(path, format!("{what}-compressed core is corrupt or cut short: {e}")))?;
    w.flush().map_err(|e| Error::other(format!("writing the decompressed core to {}: {e}", dir.display())))?;
    drop(w);
    Ok(out)
}

fn path_tag(p: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish()
}
