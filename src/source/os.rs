//! What the operating system knows about the target's threads (kernel ids, scheduler state, the
//! futex a thread sleeps on, CPU time): from /proc for a live process, from a core's notes offline.

use std::collections::HashMap;

/// Kernel view of one thread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsThreadState {
    /// Scheduler state letter (`R`, `S`, `D`, `T`...) as /proc shows it; `None` offline.
    pub state: Option<char>,
    /// The thread is inside a system call (its number), or known not to be (`Some(None)`).
    pub syscall: Option<Option<i64>>,
    /// Address passed to futex(2) while the thread is blocked in it.
    pub futex_addr: Option<u64>,
    /// Kernel thread name (`comm`).
    pub comm: Option<String>,
}

/// futex(2) on x86-64.
pub const SYS_FUTEX: i64 = 202;

impl OsThreadState {
    /// Whether the thread was executing (or ready to execute) user code: running on a CPU, or
    /// stopped (SIGSTOP, ptrace, a core dump) outside any system call.
    pub fn on_cpu(&self) -> Option<bool> {
        match (self.state, self.syscall) {
            (Some('R'), _) => Some(true),
            (Some('T' | 't') | None, Some(sc)) => Some(sc.is_none()),
            (Some(_), _) => Some(false),
            (None, None) => None,
        }
    }

    /// Blocked in the kernel (sleeping or stopped inside a system call).
    pub fn blocked(&self) -> bool {
        matches!(self.state, Some('S' | 'D')) || (self.on_cpu() == Some(false))
    }
}

/// Thread facts of the target, whatever the memory source.
pub trait OsView: Send + Sync {
    /// Kernel thread ids, ascending.
    fn thread_ids(&self) -> Vec<i32>;
    fn thread_state(&self, tid: i32) -> OsThreadState;
    /// The command line, arguments joined by spaces (empty when unknown).
    fn cmdline(&self) -> String;
    /// Whether the target still exists (a core always does).
    fn alive(&self) -> bool {
        true
    }
    /// utime + stime of each thread, in clock ticks (empty offline).
    fn cpu_ticks(&self) -> HashMap<i32, u64> {
        HashMap::new()
    }
    /// "live" or "core".
    fn kind(&self) -> &'static str;
    /// One environment variable of the target, where it can be read (live processes).
    fn environ_var(&self, _name: &str) -> Option<String> {
        None
    }
    /// Thread ids as the target numbers them (its own PID namespace: what its memory holds) →
    /// as this reader numbers them (`thread_ids`). Empty when both numberings are the same.
    fn ns_tids(&self) -> HashMap<i32, i32> {
        HashMap::new()
    }
    /// The target's PID in its own namespace, when that differs from the reader's.
    fn ns_pid(&self) -> Option<i32> {
        None
    }
}

/// The thread facts of one moment (taken while the target is paused), answered after it resumes:
/// a copy-then-decode read must describe the threads as they were when memory was copied.
pub struct FrozenOs {
    live: std::sync::Arc<dyn OsView>,
    tids: Vec<i32>,
    states: HashMap<i32, OsThreadState>,
    ns_tids: HashMap<i32, i32>,
    ns_pid: Option<i32>,
}

impl FrozenOs {
    pub fn capture(live: std::sync::Arc<dyn OsView>) -> FrozenOs {
        let tids = live.thread_ids();
        let states = tids.iter().map(|t| (*t, live.thread_state(*t))).collect();
        let ns_tids = live.ns_tids();
        let ns_pid = live.ns_pid();
        FrozenOs { live, tids, states, ns_tids, ns_pid }
    }
}

impl std::fmt::Debug for FrozenOs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrozenOs").field("tids", &self.tids).field("states", &self.states).finish()
    }
}

impl OsView for FrozenOs {
    fn thread_ids(&self) -> Vec<i32> {
        self.tids.clone()
    }
    fn thread_state(&self, tid: i32) -> OsThreadState {
        self.states.get(&tid).cloned().unwrap_or_default()
    }
    fn cmdline(&self) -> String {
        self.live.cmdline()
    }
    fn alive(&self) -> bool {
        self.live.alive()
    }
    fn cpu_ticks(&self) -> HashMap<i32, u64> {
        self.live.cpu_ticks()
    }
    fn kind(&self) -> &'static str {
        self.live.kind()
    }
    fn environ_var(&self, name: &str) -> Option<String> {
        self.live.environ_var(name)
    }
    fn ns_tids(&self) -> HashMap<i32, i32> {
        self.ns_tids.clone()
    }
    fn ns_pid(&self) -> Option<i32> {
        self.ns_pid
    }
}

/// The innermost number of an `NSpid:` line of /proc/…/status ("NSpid:\t4242\t7" → 7): the id in
/// the process's own PID namespace. `None` when the line is missing or has one number only.
pub fn innermost_nspid(status: &str) -> Option<i32> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    let ids: Vec<i32> = line["NSpid:".len()..].split_whitespace().filter_map(|x| x.parse().ok()).collect();
    (ids.len() > 1).then(|| *ids.last().unwrap_or(&0)).filter(|i| *i > 0)
}

/// /proc of a live process.
pub struct LiveOs {
    pub pid: i32,
}

impl OsView for LiveOs {
    fn thread_ids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .map(|rd| rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    fn thread_state(&self, tid: i32) -> OsThreadState {
        let base = format!("/proc/{}/task/{tid}", self.pid);
        let state = std::fs::read_to_string(format!("{base}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()));
        // `syscall` is "NR arg1 ..." inside a system call, "-1 sp pc" when stopped outside one and
        // "running" on a CPU; reading it needs the same permission as reading memory.
        let (mut syscall, mut futex_addr) = (None, None);
        if let Ok(s) = std::fs::read_to_string(format!("{base}/syscall")) {
            let mut it = s.split_whitespace();
            if let Some(nr) = it.next().and_then(|n| n.parse::<i64>().ok()) {
                syscall = Some((nr >= 0).then_some(nr));
                if nr == SYS_FUTEX {
                    futex_addr = it.next().and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
                }
            }
        }
        let comm = std::fs::read_to_string(format!("{base}/comm")).ok().map(|s| s.trim_end_matches('\n').to_string());
        OsThreadState { state, syscall, futex_addr, comm }
    }

    fn cmdline(&self) -> String {
        super::proctree::cmdline_of(self.pid)
    }

    fn alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    fn cpu_ticks(&self) -> HashMap<i32, u64> {
        let mut out = HashMap::new();
        for tid in self.thread_ids() {
            if let Ok(s) = std::fs::read_to_string(format!("/proc/{}/task/{tid}/stat", self.pid)) {
                if let Some((_, rest)) = s.rsplit_once(')') {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    // Fields after ')' start at field 3 (state); utime is field 14, stime 15.
                    if let (Some(u), Some(st)) = (f.get(11), f.get(12)) {
                        out.insert(tid, u.parse::<u64>().unwrap_or(0) + st.parse::<u64>().unwrap_or(0));
                    }
                }
            }
        }
        out
    }

    fn kind(&self) -> &'static str {
        "live"
    }

    fn ns_tids(&self) -> HashMap<i32, i32> {
        // A process in a nested PID namespace (a container read from the host) stores its own
        // numbering in memory; /proc here shows ours. NSpid lists both, outermost first.
        let mut out = HashMap::new();
        for tid in self.thread_ids().into_iter().take(100_000) {
            let Ok(st) = std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", self.pid)) else { continue };
            match innermost_nspid(&st) {
                Some(inner) if inner != tid => {
                    out.insert(inner, tid);
                }
                _ => return HashMap::new(),
            }
        }
        out
    }

    fn ns_pid(&self) -> Option<i32> {
        let st = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        innermost_nspid(&st).filter(|p| *p != self.pid)
    }

    fn environ_var(&self, name: &str) -> Option<String> {
        let env = std::fs::read(format!("/proc/{}/environ", self.pid)).ok()?;
        env.split(|c| *c == 0).find_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            kv.strip_prefix(name).and_then(|r| r.strip_prefix('=')).map(str::to_string)
        })
    }
}

/// A fixed set of threads (synthetic memory images in tests): each sleeps in no particular call.
pub struct StaticOs {
    pub threads: Vec<(i32, OsThreadState)>,
    pub cmdline: String,
}

impl StaticOs {
    pub fn sleeping(tids: &[i32]) -> StaticOs {
        let st = OsThreadState { state: Some('S'), syscall: Some(Some(7)), futex_addr: None, comm: None };
        StaticOs { threads: tids.iter().map(|t| (*t, st.clone())).collect(), cmdline: String::new() }
    }
}

impl OsView for StaticOs {
    fn thread_ids(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self.threads.iter().map(|t| t.0).collect();
        v.sort();
        v
    }
    fn thread_state(&self, tid: i32) -> OsThreadState {
        self.threads.iter().find(|t| t.0 == tid).map(|t| t.1.clone()).unwrap_or_default()
    }
    fn cmdline(&self) -> String {
        self.cmdline.clone()
    }
    fn kind(&self) -> &'static str {
        "synthetic"
    }
}

/// Clock ticks per second, for turning `cpu_ticks` into seconds.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).max(1) as f64
}

/// Whether every thread of a live process is stopped (SIGSTOP or a debugger): it is already still,
/// so a `--blocking` read needs no pause and must leave it stopped as found.
pub fn all_stopped(pid: i32) -> bool {
    let os = LiveOs { pid };
    let tids = os.thread_ids();
    !tids.is_empty() && tids.iter().all(|t| matches!(os.thread_state(*t).state, Some('T' | 't')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_cpu_from_state_and_syscall() {
        let s = |state, syscall| OsThreadState { state, syscall, ..Default::default() };
        assert_eq!(s(Some('R'), None).on_cpu(), Some(true));
        assert_eq!(s(Some('S'), Some(Some(202))).on_cpu(), Some(false));
        assert_eq!(s(Some('T'), Some(None)).on_cpu(), Some(true));
        assert_eq!(s(Some('T'), Some(Some(7))).on_cpu(), Some(false));
        assert_eq!(s(None, Some(None)).on_cpu(), Some(true));
        assert_eq!(s(None, None).on_cpu(), None);
        assert!(s(Some('T'), Some(Some(202))).blocked());
        assert!(!s(Some('R'), None).blocked());
    }

    #[test]
    fn nspid_innermost() {
        assert_eq!(innermost_nspid("Name:\tx\nNSpid:\t4242\t7\nNStgid:\t1\n"), Some(7));
        assert_eq!(innermost_nspid("NSpid:\t4242\n"), None);
        assert_eq!(innermost_nspid("Name:\tx\n"), None);
        assert_eq!(innermost_nspid("NSpid:\t4242\t9\t1\n"), Some(1));
    }

    #[test]
    fn live_view_of_this_process() {
        let os = LiveOs { pid: std::process::id() as i32 };
        let tids = os.thread_ids();
        assert!(tids.contains(&(std::process::id() as i32)));
        assert!(os.alive());
        assert!(!os.cmdline().is_empty());
        assert!(os.thread_state(tids[0]).state.is_some());
    }
}
