//! What free-threaded builds (3.13t+) add to a look at the runtime: why the GIL is on (the
//! interpreter's configuration, or extension modules without `Py_mod_gil` support) and whether the
//! world is stopped (and by whom). Readers only; the policy of what to report lives above.

use super::objects::AttrStore;
use super::PyProcess;
use crate::source::MemResult;

/// `Py_MOD_GIL_USED`: the module needs the GIL (also what modules without the slot get).
const MOD_GIL_USED: u64 = 0;
/// Most modules looked at in `sys.modules`.
const MAX_MODULES: usize = 100_000;

/// An extension module loaded in the interpreter that needs the GIL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GilModule {
    pub name: String,
    pub file: Option<String>,
}

/// The interpreter's stop-the-world state (also the runtime-wide one, for global pauses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopTheWorld {
    pub requested: bool,
    pub stopped: bool,
    /// Thread state that asked for the pause (0: none or not recorded).
    pub requester: u64,
}

impl PyProcess {
    /// `PyConfig.enable_gil` of an interpreter: -1 default, 0 forced off, 1 forced on
    /// (`PYTHON_GIL=1`, `-X gil=1`). `None` where the build has no such setting.
    pub fn config_enable_gil(&self, interp: u64) -> MemResult<Option<i32>> {
        match self.off.ft.config_enable_gil {
            Some(off) => Ok(Some(self.mem().read_i32(interp.wrapping_add(off))?)),
            None => Ok(None),
        }
    }

    /// Extension modules in `sys.modules` whose `Py_mod_gil` says they need the GIL: importing one
    /// re-enables the GIL of a free-threaded interpreter. Empty on GIL builds.
    pub fn gil_modules(&self, interp: u64) -> MemResult<Vec<GilModule>> {
        let (Some(def_off), Some(gil_off), Some(module_type)) =
            (self.off.ft.module_def, self.off.ft.module_gil, self.types.module)
        else {
            return Ok(Vec::new());
        };
        let modules = self.mem().read_u64(interp.wrapping_add(self.off.interp_modules))?;
        if modules == 0 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (key, module) in self.dict_items(modules)?.into_iter().take(MAX_MODULES) {
            if self.ob_type(module).ok() != Some(module_type) {
                continue;
            }
            let def = self.mem().read_u64(module.wrapping_add(def_off)).unwrap_or(0);
            let gil = self.mem().read_u64(module.wrapping_add(gil_off)).unwrap_or(1);
            if def == 0 || gil != MOD_GIL_USED {
                continue;
            }
            let name = self.read_str_max(key, 256).unwrap_or_else(|_| "?".into());
            let file = self
                .module_dict(module)
                .ok()
                .filter(|d| *d != 0)
                .and_then(|d| self.store_get(AttrStore::Dict(d), "__file__").ok().flatten())
                .and_then(|f| self.read_str(f).ok());
            out.push(GilModule { name, file });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Stop-the-world state of an interpreter (`world`: its own) or of the runtime (`None`).
    pub fn stop_the_world(&self, interp: Option<u64>) -> MemResult<Option<StopTheWorld>> {
        let (base, off) = match interp {
            Some(i) => (i, self.off.ft.interp_stw),
            None => (self.runtime_addr, self.off.ft.runtime_stw),
        };
        let Some(o) = off else { return Ok(None) };
        let mut b = [0u8; 32];
        let start = o.requested.min(o.world_stopped).min(o.requester);
        let len = (o.requested.max(o.world_stopped).max(o.requester) + 8 - start) as usize;
        if len > b.len() {
            return Ok(None);
        }
        self.mem().read(base.wrapping_add(start), &mut b[..len])?;
        use crate::source::Buf;
        let at = |f: u64| f - start;
        Ok(Some(StopTheWorld {
            requested: b[..len].u8_at(at(o.requested)) != 0,
            stopped: b[..len].u8_at(at(o.world_stopped)) != 0,
            requester: b[..len].u64_at(at(o.requester)),
        }))
    }
}
