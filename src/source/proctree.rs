//! A process and its descendants, from /proc: who is whose child, how deep, with what command
//! line — the list `--subprocesses` walks. Read fresh each time; processes come and go under us.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashSet};

/// More descendants than this are not followed (a fork bomb must not make the reader one).
pub const MAX_PROCESSES: usize = 4096;

/// One process of the tree, as /proc showed it when listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: i32,
    pub ppid: i32,
    /// 0 for the root, 1 for its children, …
    pub depth: u32,
    /// Arguments joined by spaces (empty for kernel threads and zombies).
    pub cmdline: String,
    /// Kernel start time (clock ticks after boot): with the PID, names this process and no later one.
    pub start_time: u64,
    /// readlink of /proc/PID/exe (`None` when it cannot be read).
    pub exe: Option<String>,
}

/// PID, parent and start time from /proc/PID/stat.
fn stat_of(pid: i32) -> Option<(i32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after ')' start at field 3 (state): ppid is field 4, starttime field 22.
    Some((f.get(1)?.parse().ok()?, f.get(19)?.parse().ok()?))
}

/// A process's command line, arguments joined by spaces.
pub fn cmdline_of(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn entry(pid: i32, ppid: i32, depth: u32, start_time: u64) -> ProcEntry {
    ProcEntry {
        pid,
        ppid,
        depth,
        cmdline: cmdline_of(pid),
        start_time,
        exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok().map(|p| p.to_string_lossy().into_owned()),
    }
}

/// `root` and its descendants up to `max_depth` levels below it (all when `None`), parents before
/// children, siblings by PID. Fails only when `root` itself does not exist.
pub fn family(root: i32, max_depth: Option<u32>) -> Result<Vec<ProcEntry>> {
    let Some((root_ppid, root_start)) = stat_of(root).filter(|_| root > 0) else {
        return Err(Error::NoSuchProcess(root));
    };
    // One pass over /proc: parent → children. Threads are not listed in /proc's top level.
    let mut children: BTreeMap<i32, Vec<(i32, u64)>> = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if let Some((ppid, start)) = stat_of(pid) {
                children.entry(ppid).or_default().push((pid, start));
            }
        }
    }
    let mut out = vec![entry(root, root_ppid, 0, root_start)];
    let mut seen = HashSet::from([root]);
    let mut i = 0;
    while i < out.len() && out.len() < MAX_PROCESSES {
        let (pid, depth) = (out[i].pid, out[i].depth);
        i += 1;
        if max_depth.is_some_and(|m| depth >= m) {
            continue;
        }
        let mut kids = children.get(&pid).cloned().unwrap_or_default();
        kids.sort();
        for (kid, start) in kids {
            if out.len() >= MAX_PROCESSES || !seen.insert(kid) {
                continue;
            }
            out.push(entry(kid, pid, depth + 1, start));
        }
    }
    // Depth-first order reads best (a worker under its master), keeping siblings by PID.
    let mut ordered = Vec::with_capacity(out.len());
    fn visit(pid: i32, all: &[ProcEntry], out: &mut Vec<ProcEntry>) {
        if let Some(e) = all.iter().find(|e| e.pid == pid) {
            out.push(e.clone());
            let mut kids: Vec<&ProcEntry> = all.iter().filter(|c| c.ppid == pid && c.pid != pid).collect();
            kids.sort_by_key(|c| c.pid);
            for k in kids {
                if out.len() < all.len() {
                    visit(k.pid, all, out);
                }
            }
        }
    }
    visit(root, &out, &mut ordered);
    Ok(ordered)
}

/// Whether `e` is still the same process (not exited, PID not reused).
pub fn same_process(e: &ProcEntry) -> bool {
    stat_of(e.pid).is_some_and(|(_, start)| start == e.start_time)
}

/// Whether `e` replaced its program (exec) since it was listed.
pub fn execed(e: &ProcEntry) -> bool {
    let now = std::fs::read_link(format!("/proc/{}/exe", e.pid)).ok().map(|p| p.to_string_lossy().into_owned());
    same_process(e) && now.is_some() && e.exe.is_some() && now != e.exe
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn lists_children_and_grandchildren_with_depth() {
        // sh → (sleep, sh → sleep): depth 1 and 2 below the test's own child.
        let mut c = Command::new("sh")
            .args(["-c", "sleep 30 & sh -c 'sleep 30 & wait' & wait"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let root = c.id() as i32;
        let mut fam = vec![];
        // Wait until both sleeps have exec'd: a forked child shows its parent's command line
        // until then (under load that window was seen to outlast the first look).
        let sleeps_at = |fam: &[ProcEntry], d: u32| fam.iter().any(|e| e.depth == d && e.cmdline == "sleep 30");
        for _ in 0..250 {
            fam = family(root, None).unwrap();
            if sleeps_at(&fam, 1) && sleeps_at(&fam, 2) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = Command::new("pkill").args(["-P", &root.to_string()]).status();
        for e in &fam {
            let _ = Command::new("pkill").args(["-P", &e.pid.to_string()]).status();
        }
        let _ = c.kill();
        let _ = c.wait();
        assert_eq!(fam[0].pid, root);
        assert_eq!(fam[0].depth, 0);
        assert!(fam.iter().any(|e| e.depth == 2 && e.cmdline == "sleep 30"), "{fam:?}");
        assert!(fam.iter().any(|e| e.depth == 1 && e.cmdline == "sleep 30"), "{fam:?}");
        let shallow = family(std::process::id() as i32, Some(0)).unwrap();
        assert_eq!(shallow.len(), 1);
    }

    #[test]
    fn missing_root() {
        assert!(matches!(family(999_999_999, None), Err(Error::NoSuchProcess(_))));
        assert!(matches!(family(0, None), Err(Error::NoSuchProcess(_))));
    }
}
