//! Deadlock candidates from the record's wait facts: await cycles between tasks, lock cycles
//! (tasks on asyncio locks, threads on threading locks) and lock waits whose holder is stuck.
//! Pure and linear in the number of threads, tasks and locks: it reads only the snapshot.

use crate::model::{Evidence, Finding, Frame, LockRef, Snapshot, TaskSnap};
use rustc_hash::FxHashMap as HashMap;
use std::collections::BTreeSet;

/// Most `lock-wait` findings reported one by one; the rest are summed up in one more finding.
pub const MAX_LOCK_WAITS: usize = 100;

/// Who can wait: a task or a thread.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActorId {
    Task(String),
    Thread(i32),
}

#[derive(Debug, Clone)]
pub struct Actor<'a> {
    pub id: ActorId,
    pub label: String,
    /// Lock (address) this actor is blocked acquiring.
    pub waits_for: Option<&'a str>,
    /// Locks (addresses) this actor holds.
    pub holds: Vec<&'a str>,
    /// Whether the actor is blocked on something other than a lock (sleeping, waiting on an event...).
    pub parked: Option<String>,
    pub frames: &'a [Frame],
}

/// Every deadlock candidate in one snapshot: await cycles, then per interpreter the tasks' lock
/// findings, then the threads'.
pub fn findings(s: &Snapshot) -> Vec<Finding> {
    let mut out = await_cycles(&s.tasks);
    let locks: HashMap<&str, LockRef> = s
        .locks
        .iter()
        .map(|l| {
            (l.address.as_str(), LockRef { kind: l.kind.clone(), address: l.address.clone(), name: l.name.clone() })
        })
        .collect();
    // Lock findings need a waiter: only then are actors built (labels cost an allocation each).
    let mut interps: Vec<i64> = s.tasks.iter().filter(|t| t.waits_for_lock.is_some()).map(|t| t.interpreter).collect();
    interps.sort_unstable();
    interps.dedup();
    for interp in interps {
        let actors: Vec<Actor> = s.tasks.iter().filter(|t| t.interpreter == interp).map(task_actor).collect();
        out.extend(lock_findings(&actors, &locks, "lock-cycle", false));
    }
    if s.threads.iter().all(|t| t.waits_for_lock.is_none()) {
        return out;
    }
    let actors: Vec<Actor> = s
        .threads
        .iter()
        .filter_map(|t| {
            let tid = t.tid?;
            let waits_for = t.waits_for_lock.as_deref();
            let blocked = t.native.as_ref().map(|n| n.blocked()).unwrap_or(false);
            Some(Actor {
                id: ActorId::Thread(tid),
                label: format!("thread {tid} ({})", t.name.as_deref().unwrap_or("?")),
                waits_for,
                holds: t.holds_locks.iter().map(|s| s.as_str()).collect(),
                parked: (blocked && waits_for.is_none()).then(|| match t.frames.first() {
                    Some(f) => format!("blocked in {} ({}:{})", f.function, f.file, f.line),
                    None => "blocked".into(),
                }),
                frames: &t.frames,
            })
        })
        .collect();
    out.extend(lock_findings(&actors, &locks, "thread-lock-cycle", true));
    out
}

fn task_actor(t: &TaskSnap) -> Actor<'_> {
    let waits_for = t.waits_for_lock.as_deref();
    Actor {
        id: ActorId::Task(t.id.to_string()),
        label: format!("task {} ({})", t.name, t.id),
        waits_for,
        holds: t.holds_locks.iter().map(|s| s.as_str()).collect(),
        parked: (waits_for.is_none() && t.waiting_on.future.is_some()).then(|| "awaiting".to_string()),
        frames: &t.coroutine_stack,
    }
}

/// Await cycles: tasks awaiting each other (directly or via gather/TaskGroup edges).
pub fn await_cycles(tasks: &[TaskSnap]) -> Vec<Finding> {
    let cycles = crate::analysis::tree::find_cycles(tasks);
    if cycles.is_empty() {
        return Vec::new(); // the usual case: no index of every task needed
    }
    let by_id: HashMap<&str, &TaskSnap> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    cycles
        .into_iter()
        .map(|cyc| {
            let members: Vec<&TaskSnap> =
                cyc.iter().take(cyc.len().saturating_sub(1)).filter_map(|id| by_id.get(id.as_str()).copied()).collect();
            let names: Vec<String> = cyc
                .iter()
                .map(|id| by_id.get(id.as_str()).map(|t| t.name.to_string()).unwrap_or_else(|| id.to_string()))
                .collect();
            Finding {
                kind: "await-cycle".into(),
                severity: "critical".into(),
                summary: format!("tasks await each other in a cycle and can never finish: {}", names.join(" → ")),
                threads: members.iter().filter_map(|t| t.thread).collect::<BTreeSet<_>>().into_iter().collect(),
                tasks: members.iter().map(|t| t.id.to_string()).collect(),
                locks: vec![],
                evidence: members
                    .iter()
                    .map(|t| Evidence {
                        actor: format!("task {} ({})", t.id, t.name),
                        note: format!("awaits {}", t.awaiting.join(", ")),
                        frames: t.coroutine_stack.to_vec(),
                    })
                    .collect(),
            }
        })
        .collect()
}

fn lock_ref(locks: &HashMap<&str, LockRef>, l: &str) -> LockRef {
    locks.get(l).cloned().unwrap_or(LockRef { kind: "lock".into(), address: l.to_string(), name: None })
}

/// Lock cycles and lock waits over actors. `cycle_kind` is "lock-cycle" (tasks) or "thread-lock-cycle".
/// Each actor waits for at most one lock, so the wait-for graph (waiter -> first holder) has at most
/// one edge per actor and its cycles are found in one linear pass.
pub fn lock_findings(
    actors: &[Actor],
    locks: &HashMap<&str, LockRef>,
    cycle_kind: &str,
    flag_parked_holders: bool,
) -> Vec<Finding> {
    if actors.iter().all(|a| a.waits_for.is_none()) {
        return Vec::new();
    }
    let mut holders: HashMap<&str, Vec<usize>> = HashMap::default();
    for (i, a) in actors.iter().enumerate() {
        for l in &a.holds {
            holders.entry(l).or_default().push(i);
        }
    }
    // wait-for graph between actors: a -> b when a waits for a lock b holds.
    let next: Vec<Option<usize>> = actors
        .iter()
        .enumerate()
        .map(|(i, a)| a.waits_for.and_then(|l| holders.get(l)).and_then(|v| v.iter().copied().find(|h| *h != i)))
        .collect();
    let mut findings = Vec::new();
    let mut in_cycle = vec![false; actors.len()];
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state = vec![0u8; actors.len()];
    let mut path: Vec<usize> = Vec::new();
    for start in 0..actors.len() {
        if state[start] != 0 {
            continue;
        }
        path.clear();
        let mut cur = Some(start);
        while let Some(c) = cur {
            match state[c] {
                0 => {
                    state[c] = 1;
                    path.push(c);
                    cur = next[c];
                }
                1 => {
                    // Back on the current path: the path from `c` on is a cycle.
                    let pos = path.iter().position(|p| *p == c).unwrap_or(0);
                    let mut cyc = path[pos..].to_vec();
                    for m in &cyc {
                        in_cycle[*m] = true;
                    }
                    cyc.push(c);
                    findings.push(cycle_finding(actors, &cyc, locks, cycle_kind));
                    break;
                }
                _ => break,
            }
        }
        for p in &path {
            state[*p] = 2;
        }
    }
    // Lock waits: waiter -> holder where the holder is itself stuck (not a cycle).
    let mut waits = 0usize;
    let mut more = 0usize;
    for (i, a) in actors.iter().enumerate() {
        if in_cycle[i] {
            continue;
        }
        let Some(l) = a.waits_for else { continue };
        for &h in holders.get(l).map(Vec::as_slice).unwrap_or(&[]) {
            let holder = &actors[h];
            if in_cycle[h] || h == i {
                continue;
            }
            let stuck = match (&holder.parked, holder.waits_for) {
                (_, Some(_)) => Some("waiting for another lock".to_string()),
                (Some(p), None) if flag_parked_holders => Some(p.clone()),
                _ => None,
            };
            let Some(what) = stuck else { continue };
            if waits >= MAX_LOCK_WAITS {
                more += 1;
                continue;
            }
            waits += 1;
            let lock = lock_ref(locks, l);
            findings.push(Finding {
                kind: "lock-wait".into(),
                severity: "warning".into(),
                summary: format!(
                    "{} waits for {} held by {}, which is {}",
                    a.label,
                    lock_label(&lock),
                    holder.label,
                    what
                ),
                threads: [&a.id, &holder.id]
                    .iter()
                    .filter_map(|x| if let ActorId::Thread(t) = x { Some(*t) } else { None })
                    .collect(),
                tasks: [&a.id, &holder.id]
                    .iter()
                    .filter_map(|x| if let ActorId::Task(t) = x { Some(t.clone()) } else { None })
                    .collect(),
                locks: vec![lock],
                evidence: vec![
                    Evidence { actor: a.label.clone(), note: "waiting to acquire".into(), frames: a.frames.to_vec() },
                    Evidence {
                        actor: holder.label.clone(),
                        note: format!("holds the lock, {what}"),
                        frames: holder.frames.to_vec(),
                    },
                ],
            });
        }
    }
    if more > 0 {
        findings.push(Finding {
            kind: "lock-wait".into(),
            severity: "warning".into(),
            summary: format!(
                "… and {more} more lock waits on stuck holders (only the first {MAX_LOCK_WAITS} are listed)"
            ),
            threads: vec![],
            tasks: vec![],
            locks: vec![],
            evidence: vec![],
        });
    }
    findings
}

fn lock_label(l: &LockRef) -> String {
    match &l.name {
        Some(n) => format!("{} '{}' ({})", l.kind, n, l.address),
        None => format!("{} {}", l.kind, l.address),
    }
}

fn cycle_finding(actors: &[Actor], cyc: &[usize], locks: &HashMap<&str, LockRef>, kind: &str) -> Finding {
    let mut parts = Vec::new();
    let mut lock_refs = Vec::new();
    for w in cyc.windows(2) {
        let a = &actors[w[0]];
        let lr = lock_ref(locks, a.waits_for.unwrap_or("0x0"));
        parts.push(format!("{} waits for {} held by {}", a.label, lock_label(&lr), actors[w[1]].label));
        if !lock_refs.contains(&lr) {
            lock_refs.push(lr);
        }
    }
    let members = &cyc[..cyc.len() - 1];
    // Long cycles are summed up: the first links in the summary, every member in the lists.
    let summary = if parts.len() > 8 {
        format!("deadlock among {} actors: {}; …", members.len(), parts[..8].join("; "))
    } else {
        format!("deadlock: {}", parts.join("; "))
    };
    Finding {
        kind: kind.into(),
        severity: "critical".into(),
        summary,
        threads: members
            .iter()
            .filter_map(|i| if let ActorId::Thread(t) = actors[*i].id { Some(t) } else { None })
            .collect(),
        tasks: members
            .iter()
            .filter_map(|i| if let ActorId::Task(t) = &actors[*i].id { Some(t.clone()) } else { None })
            .collect(),
        locks: lock_refs,
        evidence: members
            .iter()
            .map(|i| {
                let a = &actors[*i];
                let holds: Vec<String> = a.holds.iter().map(|l| lock_label(&lock_ref(locks, l))).collect();
                Evidence {
                    actor: a.label.clone(),
                    note: format!(
                        "holds {}; waits for {}",
                        holds.join(", "),
                        a.waits_for.map(|l| lock_label(&lock_ref(locks, l))).unwrap_or_default()
                    ),
                    frames: a.frames.to_vec(),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor<'a>(id: i32, waits: Option<&'a str>, holds: &[&'a str], parked: Option<&str>) -> Actor<'a> {
        Actor {
            id: ActorId::Thread(id),
            label: format!("thread {id}"),
            waits_for: waits,
            holds: holds.to_vec(),
            parked: parked.map(str::to_string),
            frames: &[],
        }
    }

    #[test]
    fn abba_is_one_cycle() {
        let actors = vec![actor(1, Some("0xb"), &["0xa"], None), actor(2, Some("0xa"), &["0xb"], None)];
        let locks: HashMap<&str, LockRef> =
            [("0xa", LockRef { kind: "threading.RLock".into(), address: "0xa".into(), name: Some("lock_a".into()) })]
                .into_iter()
                .collect();
        let f = lock_findings(&actors, &locks, "thread-lock-cycle", true);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, "thread-lock-cycle");
        assert_eq!(f[0].threads, vec![1, 2]);
        assert!(f[0].summary.contains("lock_a"));
    }

    #[test]
    fn wait_on_parked_holder_is_lock_wait_not_cycle() {
        let actors = vec![actor(1, Some("0xa"), &[], None), actor(2, None, &["0xa"], Some("sleeping in time.sleep"))];
        let f = lock_findings(&actors, &HashMap::default(), "thread-lock-cycle", true);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, "lock-wait");
        // For tasks, a holder that merely sleeps is healthy.
        assert!(lock_findings(&actors, &HashMap::default(), "lock-cycle", false).is_empty());
    }

    #[test]
    fn healthy_contention_has_no_finding() {
        let actors =
            vec![actor(1, Some("0xa"), &[], None), actor(2, None, &["0xa"], None), actor(3, None, &[], Some("idle"))];
        assert!(lock_findings(&actors, &HashMap::default(), "thread-lock-cycle", true).is_empty());
    }

    #[test]
    fn long_chain_and_long_cycle_are_linear_and_bounded() {
        let n = 20_000;
        let names: Vec<String> = (0..=n).map(|i| format!("0x{i:x}")).collect();
        // Chain: i holds lock i, waits for lock i+1; the last holder is parked.
        let mut chain: Vec<Actor> =
            (0..n).map(|i| actor(i as i32, Some(names[i + 1].as_str()), &[names[i].as_str()], None)).collect();
        chain.push(actor(n as i32, None, &[names[n].as_str()], Some("sleeping")));
        let t = std::time::Instant::now();
        let f = lock_findings(&chain, &HashMap::default(), "thread-lock-cycle", true);
        assert!(f.iter().all(|x| x.kind == "lock-wait"));
        assert_eq!(f.len(), MAX_LOCK_WAITS + 1, "listed waits plus one summary");
        assert!(f.last().unwrap().summary.contains(&format!("{} more", n - MAX_LOCK_WAITS)));
        // Cycle: the last one waits for lock 0.
        chain[n] = actor(n as i32, Some(names[0].as_str()), &[names[n].as_str()], None);
        let f = lock_findings(&chain, &HashMap::default(), "thread-lock-cycle", true);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].threads.len(), n + 1);
        assert!(f[0].summary.len() < 2000);
        assert!(t.elapsed().as_secs_f64() < 5.0, "took {:?}", t.elapsed());
    }
}
