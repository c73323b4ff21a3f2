//! The task tree by awaited-by: roots are tasks nobody awaits; children are the tasks a task
//! awaits. Cycles never stop the drawing: every task appears, cycles are cut and listed.

use crate::model::{TaskSnap, Text};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Clone, Serialize)]
pub struct TreeNode {
    pub id: Text,
    pub name: Text,
    pub thread: Option<i32>,
    pub state: Text,
    pub waiting_on: Text,
    pub coroutine_stack: std::sync::Arc<[crate::model::Frame]>,
    pub children: Vec<TreeNode>,
    /// This task is already drawn higher up on this path (the edge closes a cycle).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cycle: bool,
    /// This task was drawn in full elsewhere (it has several parents); not expanded again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub shown_elsewhere: bool,
    /// The tree was cut here at MAX_TREE_DEPTH; the children are drawn as separate roots.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub continued_below: bool,
    /// Why the task could not be read in full.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds at its current await point (several samples taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_s: Option<f64>,
}

/// Deepest nesting drawn in one tree (keeps rendering and JSON bounded).
pub const MAX_TREE_DEPTH: usize = 256;

impl Drop for TreeNode {
    // Iterative drop: a very deep tree must not overflow the stack.
    fn drop(&mut self) {
        let mut pending: Vec<TreeNode> = std::mem::take(&mut self.children);
        while let Some(mut n) = pending.pop() {
            pending.extend(std::mem::take(&mut n.children));
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskTree {
    pub roots: Vec<TreeNode>,
    /// Each cycle as task ids, first id repeated at the end.
    pub cycles: Vec<Vec<String>>,
}

/// Elementary cycles found by DFS back edges (like CPython's tools), deduplicated by rotation.
///
/// Only tasks that await something can be on a cycle, and most tasks of a big snapshot await
/// nothing (10,000 leaves under 101 parents): the graph of those few is searched first, and no
/// cycle there means none at all (each record on a cycle awaits something, so it is among them
/// and is the last record of its id there as it is among all). Only when it has one does the
/// whole graph decide, which alone knows which record of an id listed twice counts. Indexing
/// every task's id cost ~1 ms at 10,000 tasks, on every pstree and dump.
pub fn find_cycles(tasks: &[TaskSnap]) -> Vec<Vec<String>> {
    let awaiting: Vec<usize> = (0..tasks.len()).filter(|&i| !tasks[i].awaiting.is_empty()).collect();
    if awaiting.len() < tasks.len() && cycles_among(tasks, &awaiting).is_empty() {
        return Vec::new();
    }
    cycles_among(tasks, &(0..tasks.len()).collect::<Vec<_>>())
}

/// The cycles among the tasks at positions `members` (ascending; edges to other tasks ignored).
/// The graph is indexed once (node k is task members[k], awaiting nodes adj[k]) so the walk
/// compares integers, not ids.
fn cycles_among(tasks: &[TaskSnap], members: &[usize]) -> Vec<Vec<String>> {
    let index: HashMap<&str, usize> = members.iter().enumerate().map(|(k, &i)| (tasks[i].id.as_str(), k)).collect();
    // Compressed adjacency: the children of k are targets[starts[k]..starts[k + 1]]. A task id
    // listed twice keeps one record (the last, as a map keyed by id would).
    let mut starts = Vec::with_capacity(members.len() + 1);
    let mut targets: Vec<usize> = Vec::new();
    for (k, &i) in members.iter().enumerate() {
        starts.push(targets.len());
        if index.get(tasks[i].id.as_str()) == Some(&k) {
            targets.extend(tasks[i].awaiting.iter().filter_map(|a| index.get(a.as_str()).copied()));
        }
    }
    starts.push(targets.len());
    const WHITE: u8 = 0;
    const GREY: u8 = 1;
    const BLACK: u8 = 2;
    let mut color = vec![WHITE; members.len()];
    let mut cycles = Vec::new();
    let mut seen_sets: HashSet<Vec<usize>> = HashSet::default();
    let id = |k: usize| tasks[members[k]].id.to_string();
    for start in 0..members.len() {
        if color[start] != WHITE || index.get(tasks[members[start]].id.as_str()) != Some(&start) {
            continue;
        }
        // Iterative DFS (no recursion: 100,000-task chains must not overflow the stack).
        // Each entry: a task on the current path and the index of its next child to visit.
        let mut path: Vec<(usize, usize)> = vec![(start, starts[start])];
        color[start] = GREY;
        while let Some((v, next)) = path.last_mut() {
            let v = *v;
            if *next < starts[v + 1] {
                let w = targets[*next];
                *next += 1;
                match color[w] {
                    WHITE => {
                        color[w] = GREY;
                        path.push((w, starts[w]));
                    }
                    GREY => {
                        if let Some(pos) = path.iter().position(|(x, _)| *x == w) {
                            let cycle: Vec<usize> = path[pos..].iter().map(|(x, _)| *x).collect();
                            let mut key = cycle.clone();
                            key.sort_unstable();
                            if seen_sets.insert(key) {
                                let mut cyc: Vec<String> = cycle.iter().map(|m| id(*m)).collect();
                                cyc.push(id(w));
                                cycles.push(cyc);
                            }
                        }
                    }
                    _ => {}
                }
            } else {
                color[v] = BLACK;
                path.pop();
            }
        }
    }
    cycles
}

/// Tasks by id, for the drawing: an id maps to the position of its last record (as a map
/// from id to record would), and marks (drawn, on the current path) are kept per such position
/// in flat lists instead of sets of id strings (hashing ids was most of `pstree`'s own work).
struct Ids<'a> {
    tasks: &'a [TaskSnap],
    pos: HashMap<&'a str, usize>,
    /// Per record, the position its marks are kept under (its id's last record).
    keys: Vec<usize>,
}

impl<'a> Ids<'a> {
    fn new(tasks: &'a [TaskSnap]) -> Ids<'a> {
        let pos: HashMap<&str, usize> = tasks.iter().enumerate().map(|(i, t)| (t.id.as_str(), i)).collect();
        // Every id once (any live capture): each record keeps its own marks, no second lookup
        // per record.
        let keys = if pos.len() == tasks.len() {
            Vec::new()
        } else {
            tasks.iter().enumerate().map(|(i, t)| pos.get(t.id.as_str()).copied().unwrap_or(i)).collect()
        };
        Ids { tasks, pos, keys }
    }
    fn get(&self, id: &str) -> Option<usize> {
        self.pos.get(id).copied()
    }
    /// The position marks of record `i` are kept under (its id's last record; itself when
    /// every id is listed once).
    fn key(&self, i: usize) -> usize {
        self.keys.get(i).copied().unwrap_or(i)
    }
}

pub fn build(tasks: &[TaskSnap]) -> TaskTree {
    let ids = Ids::new(tasks);
    let cycles = find_cycles(tasks);
    let mut has_parent = vec![false; tasks.len()];
    for (i, t) in tasks.iter().enumerate() {
        if t.awaited_by.iter().any(|p| ids.get(p.as_str()).is_some()) {
            has_parent[ids.key(i)] = true;
        }
    }
    let mut drawn = vec![false; tasks.len()];
    let mut roots = Vec::new();
    let mut deferred: Vec<usize> = Vec::new();
    // Roots in a stable, readable order (task registries are hash sets: their order means nothing).
    let mut root_tasks: Vec<usize> = (0..tasks.len()).filter(|&i| !has_parent[ids.key(i)]).collect();
    root_tasks.sort_by(|&a, &b| {
        let (a, b) = (&tasks[a], &tasks[b]);
        (a.thread, &a.name, &a.id).cmp(&(b.thread, &b.name, &b.id))
    });
    let mut on_path = vec![false; tasks.len()];
    let mut draw_all = |root: usize, drawn: &mut Vec<bool>, roots: &mut Vec<TreeNode>| {
        roots.push(draw(root, &ids, drawn, &mut on_path, &mut deferred));
        while let Some(d) = deferred.pop() {
            // A deferred subtree root was marked drawn by its cut parent.
            drawn[ids.key(d)] = false;
            roots.push(draw(d, &ids, drawn, &mut on_path, &mut deferred));
        }
    };
    for t in root_tasks {
        draw_all(t, &mut drawn, &mut roots);
    }
    // Tasks only reachable through a cycle: start from the first member of each undrawn cycle.
    let undrawn = |drawn: &[bool]| -> BTreeSet<&str> {
        (0..tasks.len()).filter(|&i| !drawn[ids.key(i)]).map(|i| tasks[i].id.as_str()).collect()
    };
    let mut leftovers = undrawn(&drawn);
    for c in &cycles {
        if let Some(first) = c.first() {
            if leftovers.contains(first.as_str()) {
                if let Some(t) = ids.get(first) {
                    draw_all(t, &mut drawn, &mut roots);
                    leftovers = undrawn(&drawn);
                }
            }
        }
    }
    for id in leftovers {
        if let Some(t) = ids.get(id) {
            if !drawn[ids.key(t)] {
                draw_all(t, &mut drawn, &mut roots);
            }
        }
    }
    TaskTree { roots, cycles }
}

fn node(t: &TaskSnap) -> TreeNode {
    TreeNode {
        id: t.id.clone(),
        name: t.name.clone(),
        thread: t.thread,
        state: t.state.clone(),
        waiting_on: t.waiting_on.kind.clone(),
        coroutine_stack: t.coroutine_stack.clone(),
        children: Vec::new(),
        cycle: false,
        shown_elsewhere: false,
        continued_below: false,
        error: t.error.clone(),
        waiting_s: t.waiting_s,
    }
}

/// A node to be expanded, with room for a child per task it awaits (a TaskGroup's 100 children
/// pushed one by one moved each node about twice while the list grew).
fn node_with_room(t: &TaskSnap) -> TreeNode {
    let mut n = node(t);
    n.children.reserve_exact(t.awaiting.len().min(MAX_RESERVED_CHILDREN));
    n
}

/// Most children room is made for up front (a hostile snapshot may list millions).
const MAX_RESERVED_CHILDREN: usize = 1 << 16;

/// Depth-first drawing of record `root` with an explicit stack. Subtrees deeper than
/// MAX_TREE_DEPTH are queued in `deferred` and drawn as their own roots.
/// `on_path` is all false on entry and on return (shared by every call: one list per build).
fn draw(root: usize, ids: &Ids, drawn: &mut [bool], on_path: &mut [bool], deferred: &mut Vec<usize>) -> TreeNode {
    struct Frame {
        task: usize,
        node: TreeNode,
        next_child: usize,
    }
    let tasks = ids.tasks;
    drawn[ids.key(root)] = true;
    on_path[ids.key(root)] = true;
    let mut stack: Vec<Frame> = vec![Frame { task: root, node: node_with_room(&tasks[root]), next_child: 0 }];
    loop {
        let depth = stack.len();
        let Some(top) = stack.last_mut() else { break };
        let task = &tasks[top.task];
        if top.next_child < task.awaiting.len() {
            let cid = task.awaiting[top.next_child].as_str();
            top.next_child += 1;
            // A child is its id's last record, and its marks are kept there.
            let Some(child) = ids.get(cid) else { continue };
            if on_path[child] {
                let mut n = node(&tasks[child]);
                n.cycle = true;
                top.node.children.push(n);
            } else if drawn[child] {
                let mut n = node(&tasks[child]);
                n.shown_elsewhere = true;
                top.node.children.push(n);
            } else if depth >= MAX_TREE_DEPTH {
                top.node.continued_below = true;
                drawn[child] = true;
                deferred.push(child);
            } else {
                drawn[child] = true;
                on_path[child] = true;
                stack.push(Frame { task: child, node: node_with_room(&tasks[child]), next_child: 0 });
            }
        } else if let Some(done) = stack.pop() {
            on_path[ids.key(done.task)] = false;
            match stack.last_mut() {
                Some(parent) => parent.node.children.push(done.node),
                None => return done.node,
            }
        }
    }
    node(&tasks[root])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WaitingOn;

    fn t(id: &str, awaiting: &[&str], awaited_by: &[&str]) -> TaskSnap {
        TaskSnap {
            id: id.into(),
            name: compact_str::format_compact!("n{id}"),
            state: "pending".into(),
            thread: Some(1),
            interpreter: 0,
            coroutine_stack: Default::default(),
            awaiting: awaiting.iter().map(|s| (*s).into()).collect(),
            awaited_by: awaited_by.iter().map(|s| (*s).into()).collect(),
            waiting_on: WaitingOn { kind: "task".into(), ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn tree_and_shared_children() {
        let tasks =
            vec![t("a", &["b", "c"], &[]), t("b", &["d"], &["a"]), t("c", &["d"], &["a"]), t("d", &[], &["b", "c"])];
        let tree = build(&tasks);
        assert!(tree.cycles.is_empty());
        assert_eq!(tree.roots.len(), 1);
        let a = &tree.roots[0];
        assert_eq!(a.children.len(), 2);
        assert_eq!(a.children[0].children[0].id, "d");
        assert!(a.children[1].children[0].shown_elsewhere);
    }

    #[test]
    fn cycles_are_drawn_and_listed() {
        // x <-> y, and z awaits x from outside the cycle; w <-> v with no outside parent.
        let tasks = vec![
            t("x", &["y"], &["y", "z"]),
            t("y", &["x"], &["x"]),
            t("z", &["x"], &[]),
            t("w", &["v"], &["v"]),
            t("v", &["w"], &["w"]),
        ];
        let tree = build(&tasks);
        assert_eq!(tree.cycles.len(), 2);
        let ids: Vec<&str> = tree.roots.iter().map(|r| r.id.as_str()).collect();
        assert!(ids.contains(&"z") && ids.contains(&"w"), "{ids:?}");
        let z = tree.roots.iter().find(|r| r.id == "z").unwrap();
        assert_eq!(z.children[0].id, "x");
        assert_eq!(z.children[0].children[0].id, "y");
        assert!(z.children[0].children[0].children[0].cycle);
    }

    #[test]
    fn cycles_found_among_awaiting_tasks_match_the_whole_graph() {
        // Random graphs over 12 ids (some listed twice, some records awaiting nothing, edges to
        // ids that have no record): the shortcut over tasks that await something finds exactly
        // what the search over every task finds.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut with_cycles = 0;
        for _ in 0..2000 {
            let n = 1 + next(16) as usize;
            let tasks: Vec<TaskSnap> = (0..n)
                .map(|_| {
                    let id = format!("t{}", next(12));
                    let kids: Vec<String> = (0..next(3)).map(|_| format!("t{}", next(14))).collect();
                    let kids: Vec<&str> = kids.iter().map(String::as_str).collect();
                    t(&id, &kids, &[])
                })
                .collect();
            let all: Vec<usize> = (0..tasks.len()).collect();
            let want = cycles_among(&tasks, &all);
            with_cycles += usize::from(!want.is_empty());
            assert_eq!(
                find_cycles(&tasks),
                want,
                "{:?}",
                tasks.iter().map(|t| (&t.id, &t.awaiting)).collect::<Vec<_>>()
            );
        }
        assert!(with_cycles > 100, "the graphs should include cycles ({with_cycles})");
    }

    #[test]
    fn duplicate_ids_and_many_roots() {
        // A record listed twice (a merged or hand-made snapshot) is drawn as often as it is a
        // root; its children are found through the id's last record.
        let mut tasks = vec![t("a", &["b"], &[]), t("b", &[], &["a"]), t("a", &["b"], &[])];
        tasks.extend((0..20_000).map(|i| t(&format!("r{i}"), &[], &[])));
        let tree = build(&tasks);
        assert_eq!(tree.roots.len(), 2 + 20_000);
        let a: Vec<&TreeNode> = tree.roots.iter().filter(|r| r.id == "a").collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].children[0].id, "b");
        assert!(!a[0].children[0].shown_elsewhere);
        assert!(a[1].children[0].shown_elsewhere);
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let n = 100_000;
        let ids: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        let tasks: Vec<TaskSnap> = (0..n)
            .map(|i| {
                let aw: Vec<&str> = if i + 1 < n { vec![ids[i + 1].as_str()] } else { vec![] };
                let by: Vec<&str> = if i > 0 { vec![ids[i - 1].as_str()] } else { vec![] };
                t(&ids[i], &aw, &by)
            })
            .collect();
        let tree = build(&tasks);
        // Every task drawn exactly once, in roots of bounded depth.
        let mut count = 0;
        let mut max_depth = 0;
        let mut work: Vec<(&TreeNode, usize)> = tree.roots.iter().map(|r| (r, 1)).collect();
        while let Some((nd, d)) = work.pop() {
            count += 1;
            max_depth = max_depth.max(d);
            work.extend(nd.children.iter().map(|c| (c, d + 1)));
        }
        assert_eq!(count, n);
        assert!(max_depth <= MAX_TREE_DEPTH);
        assert_eq!(tree.roots[0].id, "t0");
    }
}
