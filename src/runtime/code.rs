//! Code objects: name, qualified name, file, first line and line table, read once per address and
//! cached (code objects are immutable while alive).

use super::linetable::{self, LineTableKind};
use super::PyProcess;
use crate::source::{Buf, MemError, MemResult};
use std::sync::Arc;

/// Largest line table we accept (CPython's biggest stdlib functions need a few KiB).
const MAX_LINETABLE: u64 = 1 << 20;

#[derive(Debug)]
pub struct CodeInfo {
    pub name: Arc<str>,
    pub qualname: Option<Arc<str>>,
    pub filename: Arc<str>,
    pub firstlineno: i64,
    /// Shared between code objects that share the bytes object (read once per address).
    pub linetable: Arc<[u8]>,
    pub kind: LineTableKind,
    pub firsttraceable: Option<i64>,
    /// 3.11+: number of locals+cells+frees; the value stack starts right after them.
    pub nlocalsplus: Option<i64>,
    pub stacksize: Option<i64>,
    /// Names of the locals, read on first use (lock naming).
    pub local_names: std::sync::OnceLock<Arc<[String]>>,
    /// Recently asked (address, line) pairs: thousands of tasks suspend at the same few places.
    memo: std::sync::Mutex<Vec<(i64, Option<i64>)>>,
}

impl CodeInfo {
    /// The name py-spy users expect: `co_qualname` (3.11+), else `co_name`.
    pub fn function(&self) -> &str {
        self.qualname.as_deref().unwrap_or(&self.name)
    }

    pub fn function_arc(&self) -> Arc<str> {
        self.qualname.clone().unwrap_or_else(|| self.name.clone())
    }

    /// Line for a byte offset (3.8–3.10) or code-unit index (3.11+).
    pub fn line(&self, addr: i64) -> Option<i64> {
        if let Ok(m) = self.memo.lock() {
            if let Some((_, l)) = m.iter().find(|(a, _)| *a == addr) {
                return *l;
            }
        }
        let l = linetable::line_for(self.kind, &self.linetable, self.firstlineno, addr);
        if let Ok(mut m) = self.memo.lock() {
            if m.len() >= 8 {
                m.remove(0);
            }
            m.push((addr, l));
        }
        l
    }
}

impl PyProcess {
    pub fn is_code(&self, addr: u64) -> MemResult<bool> {
        match self.types.code {
            Some(t) => Ok(self.ob_type(addr)? == t),
            None => Ok(true),
        }
    }

    pub fn code_info(&self, addr: u64) -> MemResult<Arc<CodeInfo>> {
        if let Some(c) = crate::sync::lock(&self.caches.code).get(&addr) {
            return Ok(c.clone());
        }
        let info = Arc::new(self.read_code(addr)?);
        let mut cache = crate::sync::lock(&self.caches.code);
        if cache.len() > 200_000 {
            cache.clear(); // bound memory in long-running sessions
        }
        cache.insert(addr, info.clone());
        Ok(info)
    }

    /// A line table `bytes` object, read once per address: code objects made with
    /// `code.replace()` share one, and a 1 MiB table must not be copied per code object.
    fn linetable(&self, addr: u64) -> MemResult<Arc<[u8]>> {
        if let Some(t) = crate::sync::lock(&self.caches.linetables).get(&addr) {
            return Ok(t.clone());
        }
        let t: Arc<[u8]> = self.read_bytes_obj(addr, MAX_LINETABLE)?.into();
        let mut cache = crate::sync::lock(&self.caches.linetables);
        if cache.len() > 200_000 {
            cache.clear();
        }
        cache.insert(addr, t.clone());
        Ok(t)
    }

    fn read_code(&self, addr: u64) -> MemResult<CodeInfo> {
        if addr == 0 || addr % 8 != 0 {
            return Err(MemError::Unmapped(addr));
        }
        if !self.is_code(addr)? {
            return Err(MemError::Unmapped(addr));
        }
        let o = &self.off;
        let b = self.mem().read_vec(addr, o.code_read_size as usize)?;
        let name: Arc<str> = self.read_str(b.u64_at(o.code_name))?.into();
        let qualname = match o.code_qualname {
            Some(q) => self.read_str(b.u64_at(q)).ok().map(Arc::from),
            None => None,
        };
        let filename: Arc<str> = self.read_str(b.u64_at(o.code_filename))?.into();
        let firstlineno = b.i32_at(o.code_firstlineno) as i64;
        let linetable = self.linetable(b.u64_at(o.code_linetable))?;
        let firsttraceable = o.code_firsttraceable.map(|f| b.i32_at(f) as i64);
        Ok(CodeInfo {
            name,
            qualname,
            filename,
            firstlineno,
            linetable,
            kind: LineTableKind::for_minor(self.version.minor),
            firsttraceable,
            nlocalsplus: o.code_nlocalsplus.map(|f| b.i32_at(f) as i64).filter(|n| (0..1 << 16).contains(n)),
            stacksize: o.code_stacksize.map(|f| b.i32_at(f) as i64).filter(|n| (0..1 << 16).contains(n)),
            local_names: std::sync::OnceLock::new(),
            memo: std::sync::Mutex::new(Vec::new()),
        })
    }
}
