//! How many of taskspy's own threads may work at once (`cpus`), and where a helper runs: one woken
//! by the thread that hands it work is kept off that thread's CPU for the wake-up (Linux only).

/// The CPUs this process may use (its affinity mask and cgroup quota), or `TASKSPY_READERS=N`
/// (1: everything on the calling thread): how many threads any part of taskspy splits work over.
pub fn cpus() -> usize {
    std::env::var("TASKSPY_READERS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1))
}

/// A helper thread's identity and the CPUs it may use, taken on the helper itself.
pub struct Placement {
    #[cfg(target_os = "linux")]
    tid: libc::pid_t,
    #[cfg(target_os = "linux")]
    cpus: libc::cpu_set_t,
}

impl Placement {
    /// The calling thread's placement (`None` if the system does not say).
    pub fn of_this_thread() -> Option<Placement> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: cpu_set_t is plain data; sched_getaffinity fills at most its size.
            let mut cpus: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut cpus) } == 0;
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            ok.then_some(Placement { tid, cpus })
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Called by the thread about to wake this helper: the helper may not run on the caller's
    /// CPU until it restores itself (`restore`). Why: the scheduler puts a woken thread beside
    /// the one that woke it, and one of them then waited ~2 ms for the other (2 of 5 captures
    /// of 10,101 tasks here). Nothing changes when that would leave the helper no CPU.
    /// Returns the CPU the helper was kept off.
    pub fn keep_off_callers_cpu(&self) -> Option<usize> {
        #[cfg(target_os = "linux")]
        {
            // SAFETY: sched_getcpu has no preconditions; CPU_* read and write the local copy only.
            let cpu = unsafe { libc::sched_getcpu() };
            if cpu < 0 || cpu as usize >= libc::CPU_SETSIZE as usize {
                return None;
            }
            let mut others = self.cpus;
            unsafe {
                if !libc::CPU_ISSET(cpu as usize, &others) {
                    return None;
                }
                libc::CPU_CLR(cpu as usize, &mut others);
                if libc::CPU_COUNT(&others) == 0 {
                    return None;
                }
                // A failure (the thread is gone) only means the scheduler decides alone.
                let set = libc::sched_setaffinity(self.tid, std::mem::size_of::<libc::cpu_set_t>(), &others);
                (set == 0).then_some(cpu as usize)
            }
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// Called by the helper once it runs: every CPU it had before, so the scheduler may move it
    /// again as usual.
    pub fn restore(&self) {
        #[cfg(target_os = "linux")]
        // SAFETY: sets the calling thread's mask to the one it had (a copy owned by self).
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.cpus);
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The CPUs the calling thread may use.
    fn my_cpus() -> Vec<usize> {
        let p = Placement::of_this_thread().expect("affinity readable");
        (0..libc::CPU_SETSIZE as usize).filter(|c| unsafe { libc::CPU_ISSET(*c, &p.cpus) }).collect()
    }

    #[test]
    fn a_helper_is_kept_off_the_callers_cpu_until_it_restores_itself() {
        let all = my_cpus();
        let (to_main, from_helper) = std::sync::mpsc::channel();
        let (to_helper, from_main) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let placement = std::sync::Arc::new(Placement::of_this_thread().expect("helper placement"));
            to_main.send(placement.clone()).unwrap();
            from_main.recv().unwrap();
            let kept_off = my_cpus();
            placement.restore();
            (kept_off, my_cpus())
        });
        let placement = from_helper.recv().unwrap();
        let off = placement.keep_off_callers_cpu();
        to_helper.send(()).unwrap();
        let (kept_off, restored) = helper.join().unwrap();
        assert_eq!(restored, all, "restore gives every CPU back");
        match off {
            Some(cpu) => {
                assert!(!kept_off.contains(&cpu), "{kept_off:?} still has CPU {cpu}");
                assert_eq!(kept_off.len(), all.len() - 1);
            }
            None => assert_eq!(all.len(), 1, "with {all:?} the helper should have been kept off one"),
        }
    }
}
