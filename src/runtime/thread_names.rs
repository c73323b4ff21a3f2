//! Python-level thread identity from the target's `threading` module: `_active[ident]` gives each
//! thread's name and, on 3.8–3.10 where the thread state has none, its native thread id.

use super::PyProcess;
use crate::source::MemResult;
use std::collections::HashMap;

#[derive(Debug, Clone, Default)]
pub struct PyThreadInfo {
    pub name: Option<String>,
    pub native_id: Option<i32>,
}

const MAX_THREAD_OBJECTS: usize = 100_000;

impl PyProcess {
    /// ident -> (name, native id) for every thread registered in `threading._active` of an interpreter.
    pub fn thread_names(&self, interp_addr: u64) -> MemResult<HashMap<u64, PyThreadInfo>> {
        let mut out = HashMap::new();
        let Some(module) = self.find_module(interp_addr, "threading")? else { return Ok(out) };
        let md = self.module_dict(module)?;
        if md == 0 {
            return Ok(out);
        }
        for table in ["_active", "_limbo"] {
            let Some(active) = self.dict_get(md, table)? else { continue };
            for (key, thread) in self.dict_items(active)?.into_iter().take(MAX_THREAD_OBJECTS) {
                // _active is keyed by ident (int); _limbo by the Thread itself.
                let ident = if table == "_active" {
                    match self.read_long(key) {
                        Ok(v) if v > 0 => v as u64,
                        _ => continue,
                    }
                } else {
                    match self.getattr(thread, "_ident").ok().flatten().and_then(|p| self.read_long(p).ok()) {
                        Some(v) if v > 0 => v as u64,
                        _ => continue,
                    }
                };
                let name = self.getattr(thread, "_name").ok().flatten().and_then(|p| self.read_str(p).ok());
                let native_id = self
                    .getattr(thread, "_native_id")
                    .ok()
                    .flatten()
                    .and_then(|p| self.read_long(p).ok())
                    .filter(|v| *v > 0 && *v < i32::MAX as i128)
                    .map(|v| v as i32);
                out.entry(ident).or_insert(PyThreadInfo { name, native_id });
            }
        }
        Ok(out)
    }
}
