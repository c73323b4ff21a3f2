//! Deadlock candidates from wait facts: await cycles between tasks, lock cycles (tasks on asyncio
//! locks, threads on threading locks) and lock waits whose holder is itself stuck.

use crate::runtime::frames::Frame;
use crate::snapshot::TaskSnap;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockRef {
    /// e.g. "asyncio.Lock", "threading.RLock", "_thread.lock"
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
    /// A variable or attribute name that refers to the lock, where one could be found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evidence {
    /// "task 0x… (name)" or "thread 1234 (name)"
    pub actor: String,
    pub note: String,
    pub frames: Vec<Frame>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finding {
    pub kind: String,
    pub severity: String,
    pub summary: String,
    pub threads: Vec<i32>,
    pub tasks: Vec<String>,
    pub locks: Vec<LockRef>,
    pub evidence: Vec<Evidence>,
}

/// Who can wait: a task or a thread.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ActorId {
    Task(String),
    Thread(i32),
}

#[derive(Debug, Clone)]
pub struct Actor {
    pub id: ActorId,
    pub label: String,
    /// Lock (address) this actor is blocked acquiring.
    pub waits_for: Option<u64>,
    /// Locks (addresses) this actor holds.
    pub holds: Vec<u64>,
    /// Whether the actor is blocked on something other than a lock (sleeping, waiting on an event...).
    pub parked: Option<String>,
    pub frames: Vec<Frame>,
}

impl Actor {
    fn describe(&self) -> String {
        self.label.clone()
    }
}

/// Await cycles: tasks awaiting each other (directly or via gather/TaskGroup edges).
pub fn await_cycles(tasks: &[TaskSnap]) -> Vec<Finding> {
    let by_id: HashMap<&str, &TaskSnap> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    crate::analysis::tree::find_cycles(tasks)
        .into_iter()
        .map(|cyc| {
            let members: Vec<&TaskSnap> =
                cyc.iter().take(cyc.len().saturating_sub(1)).filter_map(|id| by_id.get(id.as_str()).copied()).collect();
            let names: Vec<String> = cyc
                .iter()
                .map(|id| by_id.get(id.as_str()).map(|t| t.name.clone()).unwrap_or_else(|| id.clone()))
                .collect();
            Finding {
                kind: "await-cycle".into(),
                severity: "critical".into(),
                summary: format!("tasks await each other in a cycle and can never finish: {}", names.join(" → ")),
                threads: members.iter().filter_map(|t| t.thread).collect::<BTreeSet<_>>().into_iter().collect(),
                tasks: members.iter().map(|t| t.id.clone()).collect(),
                locks: vec![],
                evidence: members
                    .iter()
                    .map(|t| Evidence {
                        actor: format!("task {} ({})", t.id, t.name),
                        note: format!("awaits {}", t.awaiting.join(", ")),
                        frames: t.coroutine_stack.clone(),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// Lock cycles and lock waits over actors. `family` is "lock-cycle" (tasks) or "thread-lock-cycle".
pub fn lock_findings(
    actors: &[Actor],
    locks: &HashMap<u64, LockRef>,
    cycle_kind: &str,
    flag_parked_holders: bool,
) -> Vec<Finding> {
    let mut holders: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, a) in actors.iter().enumerate() {
        for l in &a.holds {
            holders.entry(*l).or_default().push(i);
        }
    }
    // wait-for graph between actors: a -> b when a waits for a lock b holds.
    let edges: Vec<Vec<usize>> = actors
        .iter()
        .enumerate()
        .map(|(i, a)| {
            a.waits_for
                .and_then(|l| holders.get(&l))
                .map(|v| v.iter().copied().filter(|h| *h != i).collect())
                .unwrap_or_default()
        })
        .collect();
    let mut findings = Vec::new();
    let mut in_cycle: BTreeSet<usize> = BTreeSet::new();
    let mut seen: BTreeSet<Vec<usize>> = BTreeSet::new();
    for start in 0..actors.len() {
        // Follow the (usually single) holder chain; bounded by the number of actors.
        let mut path = vec![start];
        let mut cur = start;
        for _ in 0..actors.len() {
            let Some(&next) = edges[cur].first() else { break };
            if let Some(pos) = path.iter().position(|p| *p == next) {
                let mut cyc = path[pos..].to_vec();
                let mut key = cyc.clone();
                key.sort();
                if seen.insert(key) {
                    in_cycle.extend(cyc.iter().copied());
                    cyc.push(next);
                    findings.push(cycle_finding(actors, &cyc, locks, cycle_kind));
                }
                break;
            }
            path.push(next);
            cur = next;
        }
    }
    // Lock waits: waiter -> holder where the holder is itself parked (not a cycle).
    for (i, a) in actors.iter().enumerate() {
        if in_cycle.contains(&i) {
            continue;
        }
        let Some(l) = a.waits_for else { continue };
        for h in holders.get(&l).cloned().unwrap_or_default() {
            let holder = &actors[h];
            if in_cycle.contains(&h) || h == i {
                continue;
            }
            let stuck = match (&holder.parked, holder.waits_for) {
                (_, Some(_)) => Some("waiting for another lock".to_string()),
                (Some(p), None) if flag_parked_holders => Some(p.clone()),
                _ => None,
            };
            let Some(what) = stuck else { continue };
            let lock = locks.get(&l).cloned().unwrap_or(LockRef {
                kind: "lock".into(),
                address: format!("0x{l:x}"),
                name: None,
            });
            findings.push(Finding {
                kind: "lock-wait".into(),
                severity: "warning".into(),
                summary: format!(
                    "{} waits for {} held by {}, which is {}",
                    a.describe(),
                    lock_label(&lock),
                    holder.describe(),
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
                    Evidence { actor: a.describe(), note: "waiting to acquire".into(), frames: a.frames.clone() },
                    Evidence {
                        actor: holder.describe(),
                        note: format!("holds the lock, {what}"),
                        frames: holder.frames.clone(),
                    },
                ],
            });
        }
    }
    findings
}

fn lock_label(l: &LockRef) -> String {
    match &l.name {
        Some(n) => format!("{} '{}' ({})", l.kind, n, l.address),
        None => format!("{} {}", l.kind, l.address),
    }
}

fn cycle_finding(actors: &[Actor], cyc: &[usize], locks: &HashMap<u64, LockRef>, kind: &str) -> Finding {
    let mut parts = Vec::new();
    let mut lock_refs = Vec::new();
    for w in cyc.windows(2) {
        let a = &actors[w[0]];
        let l = a.waits_for.unwrap_or(0);
        let lr =
            locks.get(&l).cloned().unwrap_or(LockRef { kind: "lock".into(), address: format!("0x{l:x}"), name: None });
        parts.push(format!("{} waits for {} held by {}", a.describe(), lock_label(&lr), actors[w[1]].describe()));
        if !lock_refs.contains(&lr) {
            lock_refs.push(lr);
        }
    }
    let members = &cyc[..cyc.len() - 1];
    Finding {
        kind: kind.into(),
        severity: "critical".into(),
        summary: format!("deadlock: {}", parts.join("; ")),
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
                let holds: Vec<String> = a
                    .holds
                    .iter()
                    .map(|l| locks.get(l).map(lock_label).unwrap_or_else(|| format!("0x{l:x}")))
                    .collect();
                Evidence {
                    actor: a.describe(),
                    note: format!(
                        "holds {}; waits for {}",
                        holds.join(", "),
                        a.waits_for.and_then(|l| locks.get(&l)).map(lock_label).unwrap_or_default()
                    ),
                    frames: a.frames.clone(),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(id: i32, waits: Option<u64>, holds: &[u64], parked: Option<&str>) -> Actor {
        Actor {
            id: ActorId::Thread(id),
            label: format!("thread {id}"),
            waits_for: waits,
            holds: holds.to_vec(),
            parked: parked.map(str::to_string),
            frames: vec![],
        }
    }

    #[test]
    fn abba_is_one_cycle() {
        let actors = vec![actor(1, Some(0xb), &[0xa], None), actor(2, Some(0xa), &[0xb], None)];
        let locks = HashMap::from([(
            0xa,
            LockRef { kind: "threading.RLock".into(), address: "0xa".into(), name: Some("lock_a".into()) },
        )]);
        let f = lock_findings(&actors, &locks, "thread-lock-cycle", true);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].kind, "thread-lock-cycle");
        assert_eq!(f[0].threads, vec![1, 2]);
        assert!(f[0].summary.contains("lock_a"));
    }

    #[test]
    fn wait_on_parked_holder_is_lock_wait_not_cycle() {
        let actors = vec![actor(1, Some(0xa), &[], None), actor(2, None, &[0xa], Some("sleeping in time.sleep"))];
        let f = lock_findings(&actors, &HashMap::new(), "thread-lock-cycle", true);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, "lock-wait");
        // For tasks, a holder that merely sleeps is healthy.
        assert!(lock_findings(&actors, &HashMap::new(), "lock-cycle", false).is_empty());
    }

    #[test]
    fn healthy_contention_has_no_finding() {
        let actors =
            vec![actor(1, Some(0xa), &[], None), actor(2, None, &[0xa], None), actor(3, None, &[], Some("idle"))];
        assert!(lock_findings(&actors, &HashMap::new(), "thread-lock-cycle", true).is_empty());
    }
}
