//! asyncio task trees on every supported CPython (3.8–3.15), read from live fixture processes:
//!
//! * `task_tree_every_version`: fixtures/async_tree.py (TaskGroups, gather, shield, wait_for,
//!   asyncio.timeout, eager tasks, direct awaits, odd names, 3-deep chains, a second loop on
//!   another thread): task names, states, coroutine stacks against the PARK markers, awaited-by
//!   edges, waiting_on kinds, loop threads; `ps`/`pstree` text (escaping) and JSON.
//! * `matches_cpython_remote_debugging`: on 3.14+, the same process read by CPython's own
//!   `_remote_debugging.RemoteUnwinder.get_all_awaited_by()`: task ids, stacks and edges agree.
//! * `five_thousand_tasks`: fixtures/async_many.py, 5,001 tasks: count, `pstree` lists each once;
//!   read by one thread and by two (`TASKSPY_READERS`), the task lists are the same.
//! * `churn_dump_200_times`: fixtures/async_churn.py (thousands of tasks/s): 200 `dump --json` in a
//!   row on 3.8/3.12/3.14: each is valid JSON or a one-line error, never a panic or a hang.
//! * `uvloop_tasks`: fixtures/async_uvloop.py in a venv with uvloop (PyPI wheel) per interpreter.
//!
//! Coverage line: target/taskspy-coverage-asyncio.txt.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const COVERAGE: &str = "asyncio";
const TREE: &str = "async_tree.py";
const UNICODE_NAME: &str = "w\u{f6}rker-\u{540d}\u{524d}";
const EVIL_NAME: &str = "evil\x1b[31m\nname";
/// How taskspy's text output must show EVIL_NAME (docs/formats.md "Text escaping").
const EVIL_ESCAPED: &str = "evil\\x1b[31m\\nname";

// ------------------------------------------------------------------------------------------
// Expectations for async_tree.py
// ------------------------------------------------------------------------------------------

/// One expected coroutine-stack frame: function name and, for fixture frames, the marker tag.
type ExpFrame = (String, Option<&'static str>);

struct TreeExpect {
    names: BTreeSet<String>,
    /// name -> alternatives of the expected stack (innermost first)
    stacks: HashMap<String, Vec<Vec<ExpFrame>>>,
    kinds: HashMap<String, &'static str>,
    /// (parent, child) edges that must be there
    required_edges: BTreeSet<(String, String)>,
    /// (parent, child) edges that may be there (not recorded by CPython before some version)
    optional_edges: BTreeSet<(String, String)>,
    loop2: BTreeSet<String>,
}

fn tree_expect(i: &Interpreter) -> TreeExpect {
    let new = i.at_least(11); // co_qualname in frames
    let q = |old: &str, qual: &str| -> String {
        if new {
            qual.to_string()
        } else {
            old.to_string()
        }
    };
    let user = |f: &str, tag: &'static str| -> ExpFrame { (f.to_string(), Some(tag)) };
    let lib = |f: String| -> ExpFrame { (f, None) };
    let ev = || lib(q("wait", "Event.wait"));

    let leaves = [
        "awaitee",
        "eager-child",
        EVIL_NAME,
        "g-a",
        "g-b",
        "g-c",
        "shielded",
        "tg-leaf-1",
        "tg-leaf-2",
        "wf-target",
        UNICODE_NAME,
    ];
    let mut stacks: HashMap<String, Vec<Vec<ExpFrame>>> = HashMap::new();
    let mut kinds: HashMap<String, &'static str> = HashMap::new();
    for l in leaves {
        stacks.insert(l.into(), vec![vec![ev(), user("leaf", "leaf")]]);
        kinds.insert(l.into(), "event");
    }
    let mut one = |name: &str, st: Vec<ExpFrame>, kind: &'static str| {
        stacks.insert(name.into(), vec![st]);
        kinds.insert(name.into(), kind);
    };
    one("tree-main", vec![ev(), user("tree_main", "main")], "event");
    one("tg-sibling", vec![ev(), user("tg_sibling", "tg_sibling")], "event");
    one("lock-holder", vec![ev(), user("lock_holder", "lock_holder")], "event");
    one("loop2-worker", vec![ev(), user("loop2_worker", "loop2_worker")], "event");
    one("loop2-main", vec![user("loop2_main", "loop2_main")], "task");
    one("awaiter", vec![user("awaiter_body", "await_task")], "task");
    one("eager-parent", vec![user("eager_parent_body", "eager_parent")], "task");
    one("gatherer", vec![user("gatherer_body", "gather")], "gather");
    // shield() is a plain function: the task waits on shield's outer future.
    one("shielder", vec![user("shielder_body", "shield")], "future");
    // wait_for is a coroutine on every version; from 3.12 it awaits the task itself (inside
    // asyncio.timeout), before it awaits a private future.
    one(
        "waitfor",
        vec![lib("wait_for".into()), user("waitfor_body", "wait_for")],
        if i.at_least(12) { "task" } else { "future" },
    );
    let chain = |inner: String, tag: &'static str| {
        vec![
            lib(inner),
            user("chain_inner", tag),
            user("chain_middle", "chain_middle"),
            user("chain_outer", "chain_outer"),
        ]
    };
    one("chain-event", chain(q("wait", "Event.wait"), "inner_event"), "event");
    one("chain-lock", chain(q("acquire", "Lock.acquire"), "inner_lock"), "lock");
    one("chain-queue", chain(q("get", "Queue.get"), "inner_queue"), "queue");
    one("chain-sleep", chain("sleep".into(), "inner_sleep"), "sleep");
    if i.at_least(11) {
        one("timeout-user", vec![ev(), user("timeout_body", "timeout")], "event");
        for (name, body, tag) in [("tg-outer", "tg_outer_body", "tg_outer"), ("tg-inner", "tg_inner_body", "tg_inner")]
        {
            // 3.11–3.13.x: TaskGroup.__aexit__ awaits; 3.14 (and later 3.13 patch releases, e.g.
            // Debian's 3.13.18) split the body into TaskGroup._aexit.
            stacks.insert(
                name.into(),
                vec![
                    vec![lib("TaskGroup.__aexit__".into()), user(body, tag)],
                    vec![lib("TaskGroup._aexit".into()), lib("TaskGroup.__aexit__".into()), user(body, tag)],
                ],
            );
            kinds.insert(name.into(), "taskgroup");
        }
    } else {
        one("tg-outer", vec![user("tg_outer_body", "tg_outer_gather")], "gather");
        one("tg-inner", vec![user("tg_inner_body", "tg_inner_gather")], "gather");
    }
    let e = |p: &str, c: &str| (p.to_string(), c.to_string());
    let mut required: BTreeSet<(String, String)> = [
        e("tg-outer", "tg-inner"),
        e("tg-outer", "tg-sibling"),
        e("tg-inner", "tg-leaf-1"),
        e("tg-inner", "tg-leaf-2"),
        e("gatherer", "g-a"),
        e("gatherer", "g-b"),
        e("gatherer", "g-c"),
        e("awaiter", "awaitee"),
        e("eager-parent", "eager-child"),
        e("loop2-main", "loop2-worker"),
    ]
    .into_iter()
    .collect();
    let mut optional = BTreeSet::new();
    // wait_for awaits the task directly from 3.12 on (before: a private future, no edge to rebuild).
    (if i.at_least(12) { &mut required } else { &mut optional }).insert(e("waitfor", "wf-target"));
    // CPython 3.14 records shield()'s caller as awaiting the inner task; 3.8–3.13 keep no such
    // record (only shield's private callbacks) and docs/formats.md lists only direct await,
    // gather and TaskGroup as rebuilt edges there.
    (if i.at_least(14) { &mut required } else { &mut optional }).insert(e("shielder", "shielded"));

    let names: BTreeSet<String> = stacks.keys().cloned().collect();
    TreeExpect {
        names,
        stacks,
        kinds,
        required_edges: required,
        optional_edges: optional,
        loop2: ["loop2-main", "loop2-worker"].iter().map(|s| s.to_string()).collect(),
    }
}

/// Check a task's coroutine stack against the alternatives; user frames must be in the fixture
/// at the marker line, library frames in asyncio with a line > 0.
fn stack_problem(
    actual: &Value,
    alts: &[Vec<ExpFrame>],
    markers: &HashMap<String, i64>,
    fixture_path: &str,
) -> Option<String> {
    let frames: Vec<(String, String, i64)> = arr(actual)
        .iter()
        .map(|f| (s(&f["function"]).to_string(), s(&f["file"]).to_string(), f["line"].as_i64().unwrap_or(-1)))
        .collect();
    let mut why = Vec::new();
    'alt: for alt in alts {
        if alt.len() != frames.len() {
            why.push(format!("expected {} frames {:?}", alt.len(), alt.iter().map(|f| &f.0).collect::<Vec<_>>()));
            continue;
        }
        for ((ef, tag), (af, file, line)) in alt.iter().zip(&frames) {
            if ef != af {
                why.push(format!("expected functions {:?}", alt.iter().map(|f| &f.0).collect::<Vec<_>>()));
                continue 'alt;
            }
            match tag {
                Some(t) => {
                    let want = marker(markers, t);
                    if *line != want || file != fixture_path {
                        why.push(format!("{af} should be at {fixture_path}:{want} (PARK:{t}), is at {file}:{line}"));
                        continue 'alt;
                    }
                }
                None => {
                    if *line <= 0 || !file.replace('\\', "/").contains("asyncio/") {
                        why.push(format!("library frame {af} should be in asyncio/ with a line, is at {file}:{line}"));
                        continue 'alt;
                    }
                }
            }
        }
        return None;
    }
    Some(format!(
        "{} ; {}",
        fmt_frames(&frames.iter().map(|(f, _, l)| (f.clone(), *l)).collect::<Vec<_>>()),
        why.join(" / ")
    ))
}

// ------------------------------------------------------------------------------------------
// 1. The task tree on every version
// ------------------------------------------------------------------------------------------

#[test]
fn task_tree_every_version() {
    let markers = park_markers(&fixture_path(TREE));
    let fixture_path = fixture_path(TREE).display().to_string();
    each_interpreter(
        COVERAGE,
        "tree",
        true,
        |_| None,
        |interp| {
            let fx = Fixture::start(interp, TREE, &[], &[])?;
            let exp = tree_expect(interp);
            let snap = dump_json(fx.pid)?;
            let mut p = Problems::default();
            let tasks = arr(&snap["tasks"]);

            // --- names (exact, also the control-character one), uniqueness, states
            let mut by_name: HashMap<String, &Value> = HashMap::new();
            for t in tasks {
                if by_name.insert(s(&t["name"]).to_string(), t).is_some() {
                    p.push(format!("task name {:?} appears twice", s(&t["name"])));
                }
            }
            let got: BTreeSet<String> = by_name.keys().cloned().collect();
            p.check(got == exp.names, || {
                format!(
                    "task names differ: missing {:?}, unexpected {:?}",
                    exp.names.difference(&got).collect::<Vec<_>>(),
                    got.difference(&exp.names).collect::<Vec<_>>()
                )
            });
            let name_of: HashMap<String, String> =
                tasks.iter().map(|t| (s(&t["id"]).to_string(), s(&t["name"]).to_string())).collect();

            // --- threads of the two loops
            let tids = thread_tids(&snap);
            let main_tid = tids.get("MainThread").copied();
            let loop2_tid = tids.get("loop-2").copied();
            p.check(main_tid == Some(fx.pid as i64), || {
                format!("MainThread tid is {main_tid:?}, expected the pid {}", fx.pid)
            });
            p.check(loop2_tid.is_some(), || {
                format!("no thread named loop-2 in the snapshot ({:?})", tids.keys().collect::<Vec<_>>())
            });

            for name in &exp.names {
                let Some(t) = by_name.get(name) else { continue };
                p.check(t["state"] == "pending", || format!("{name:?}: state {} (expected pending)", t["state"]));
                if let Some(prob) = stack_problem(&t["coroutine_stack"], &exp.stacks[name], &markers, &fixture_path) {
                    p.push(format!("{name:?}: coroutine_stack {prob}"));
                }
                let kind = exp.kinds[name];
                p.check(t["waiting_on"]["kind"] == kind, || {
                    format!("{name:?}: waiting_on.kind {} (expected {kind})", t["waiting_on"]["kind"])
                });
                p.check(t["waiting_on"]["runnable"] == false, || {
                    format!("{name:?}: waiting_on.runnable {} (a parked task)", t["waiting_on"]["runnable"])
                });
                let want_tid = if exp.loop2.contains(name) { loop2_tid } else { main_tid };
                p.check(t["thread"].as_i64() == want_tid, || {
                    format!("{name:?}: thread {} (expected {want_tid:?})", t["thread"])
                });
            }
            // The primitive waited on is named (object + its type) for lock/event/queue waits.
            for (name, ty) in [("chain-lock", "Lock"), ("chain-event", "Event"), ("chain-queue", "Queue")] {
                if let Some(t) = by_name.get(name) {
                    let w = &t["waiting_on"];
                    p.check(w["object_type"] == ty && s(&w["object"]).starts_with("0x"), || {
                        format!("{name}: waiting_on {w} (expected object_type {ty} and an object address)")
                    });
                }
            }
            // chain-event waits on the same Event object as the leaves (one Event for all).
            if let (Some(a), Some(b)) = (by_name.get("chain-event"), by_name.get("g-a")) {
                p.check(a["waiting_on"]["object"] == b["waiting_on"]["object"], || {
                    "chain-event and g-a wait on the same asyncio.Event: objects differ".into()
                });
            }

            // --- awaited-by edges, by name; awaiting must be the exact inverse
            let mut edges: BTreeSet<(String, String)> = BTreeSet::new();
            let mut inverse: BTreeSet<(String, String)> = BTreeSet::new();
            for t in tasks {
                let me = s(&t["name"]).to_string();
                for pid in arr(&t["awaited_by"]) {
                    edges.insert((
                        name_of.get(s(pid)).cloned().unwrap_or_else(|| format!("<unknown {}>", s(pid))),
                        me.clone(),
                    ));
                }
                for c in arr(&t["awaiting"]) {
                    inverse.insert((
                        me.clone(),
                        name_of.get(s(c)).cloned().unwrap_or_else(|| format!("<unknown {}>", s(c))),
                    ));
                }
            }
            p.check(edges == inverse, || {
                format!("`awaiting` is not the inverse of `awaited_by`: {edges:?} vs {inverse:?}")
            });
            let missing: Vec<_> = exp.required_edges.difference(&edges).collect();
            p.check(missing.is_empty(), || format!("awaited-by edges missing (parent, child): {missing:?}"));
            let unexpected: Vec<_> =
                edges.iter().filter(|e| !exp.required_edges.contains(*e) && !exp.optional_edges.contains(*e)).collect();
            p.check(unexpected.is_empty(), || format!("unexpected awaited-by edges (parent, child): {unexpected:?}"));

            // --- ps text: header, escaping
            let ps = taskspy_run(&["ps", &fx.pid.to_string()]);
            p.check(ps.code == Some(0), || format!("ps exit {:?}: {}", ps.code, ps.stderr.trim()));
            p.check(ps.stdout.contains("task id"), || "ps text has no `task id` column header".into());
            p.check(!ps.stdout_bytes.contains(&0x1b), || {
                "ps text contains a raw ESC byte (control characters must be escaped)".into()
            });
            p.check(ps.stdout.contains(EVIL_ESCAPED), || {
                format!("ps text does not show the control-character name escaped as {EVIL_ESCAPED}")
            });
            p.check(ps.stdout.contains(UNICODE_NAME), || format!("ps text does not show {UNICODE_NAME}"));
            for n in exp.names.iter().filter(|n| n.as_str() != EVIL_NAME) {
                p.check(ps.stdout.contains(n.as_str()), || format!("ps text does not mention task {n:?}"));
            }

            // --- pstree text: every name, escaping
            let pt = taskspy_run(&["pstree", &fx.pid.to_string()]);
            p.check(pt.code == Some(0), || format!("pstree exit {:?}: {}", pt.code, pt.stderr.trim()));
            p.check(!pt.stdout_bytes.contains(&0x1b), || "pstree text contains a raw ESC byte".into());
            p.check(pt.stdout.contains(EVIL_ESCAPED), || format!("pstree text does not show {EVIL_ESCAPED}"));
            for n in exp.names.iter().filter(|n| n.as_str() != EVIL_NAME) {
                p.check(pt.stdout.contains(&format!("(T) {n}")), || format!("pstree text has no line for task {n:?}"));
            }

            // --- ps --json
            match taskspy_json("ps", fx.pid, &[]) {
                Ok((v, out)) => {
                    p.check(out.code == Some(0) && v["schema"] == "taskspy-ps/1", || {
                        format!("ps --json: exit {:?}, schema {}", out.code, v["schema"])
                    });
                    let rows = arr(&v["rows"]);
                    let has_row = |task: &str, awaiter: &str| {
                        rows.iter().any(|r| r["task_name"] == task && r["awaiter_name"] == awaiter)
                    };
                    for (parent, child) in &exp.required_edges {
                        p.check(has_row(child, parent), || {
                            format!("ps --json has no row task {child:?} / awaiter {parent:?}")
                        });
                    }
                    // Exactness of the names in the rows: see ps_json_rows_keep_names_exact.
                }
                Err(e) => p.push(format!("ps --json: {e}")),
            }

            // --- pstree --json: nested roots, each task once
            match taskspy_json("pstree", fx.pid, &[]) {
                Ok((v, out)) => {
                    p.check(out.code == Some(0) && v["schema"] == "taskspy-pstree/1", || {
                        format!("pstree --json: exit {:?}, schema {}", out.code, v["schema"])
                    });
                    p.check(arr(&v["cycles"]).is_empty(), || format!("pstree --json reports cycles {}", v["cycles"]));
                    let roots = arr(&v["roots"]);
                    let find_root = |n: &str| roots.iter().find(|r| r["name"] == n);
                    let child_names = |node: &Value| -> BTreeSet<String> {
                        arr(&node["children"]).iter().map(|c| s(&c["name"]).to_string()).collect()
                    };
                    let set = |xs: &[&str]| -> BTreeSet<String> { xs.iter().map(|x| x.to_string()).collect() };
                    match find_root("tg-outer") {
                        Some(r) => {
                            p.check(child_names(r) == set(&["tg-inner", "tg-sibling"]), || {
                                format!("pstree root tg-outer children {:?}", child_names(r))
                            });
                            match arr(&r["children"]).iter().find(|c| c["name"] == "tg-inner") {
                                Some(inner) => p.check(child_names(inner) == set(&["tg-leaf-1", "tg-leaf-2"]), || {
                                    format!("tg-inner children {:?}", child_names(inner))
                                }),
                                None => p.push("pstree: tg-inner is not under tg-outer".into()),
                            }
                        }
                        None => p.push("pstree --json has no root tg-outer".into()),
                    }
                    match find_root("gatherer") {
                        Some(r) => p.check(child_names(r) == set(&["g-a", "g-b", "g-c"]), || {
                            format!("gatherer children {:?}", child_names(r))
                        }),
                        None => p.push("pstree --json has no root gatherer".into()),
                    }
                    match find_root("loop2-main") {
                        Some(r) => p.check(
                            child_names(r) == set(&["loop2-worker"]) && r["thread"].as_i64() == loop2_tid,
                            || format!("loop2-main node: {}", truncate(&r.to_string(), 400)),
                        ),
                        None => p.push("pstree --json has no root loop2-main".into()),
                    }
                    // Every task exactly once (not counting `shown_elsewhere` references); roots are
                    // exactly the tasks nobody awaits.
                    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                    fn walk(n: &Value, seen: &mut BTreeMap<String, usize>) {
                        if n["shown_elsewhere"] != true {
                            *seen.entry(s(&n["name"]).to_string()).or_default() += 1;
                        }
                        for c in arr(&n["children"]) {
                            walk(c, seen);
                        }
                    }
                    for r in roots {
                        walk(r, &mut seen);
                    }
                    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c != 1).collect();
                    p.check(twice.is_empty(), || format!("pstree --json shows tasks more than once: {twice:?}"));
                    let shown: BTreeSet<String> = seen.keys().cloned().collect();
                    p.check(shown == got, || {
                        format!(
                            "pstree --json tasks differ from dump: missing {:?}",
                            got.difference(&shown).collect::<Vec<_>>()
                        )
                    });
                    let root_names: BTreeSet<String> = roots.iter().map(|r| s(&r["name"]).to_string()).collect();
                    let want_roots: BTreeSet<String> =
                        got.iter().filter(|n| !edges.iter().any(|(_, c)| c == *n)).cloned().collect();
                    p.check(root_names == want_roots, || {
                        format!("pstree roots {root_names:?}, expected the unawaited tasks {want_roots:?}")
                    });
                }
                Err(e) => p.push(format!("pstree --json: {e}")),
            }
            p.finish(|| format!("snapshot tasks:\n{}", tasks_summary(&snap)))?;
            Ok(Outcome::Pass)
        },
    );
}

/// docs/formats.md: "Text output escapes control characters ...; JSON carries every string
/// exactly." The `ps --json` rows must carry task and awaiter names as they are in the target.
/// (Version-independent rendering: checked on the oldest and newest interpreter.)
#[test]
fn ps_json_rows_keep_names_exact() {
    let inv = inventory();
    let ends: Vec<String> =
        inv.supported.first().into_iter().chain(inv.supported.last()).map(|i| i.version.clone()).collect();
    each_interpreter(
        COVERAGE,
        "ps-json-exact",
        true,
        |i| {
            (!ends.contains(&i.version))
                .then(|| "rendering check, run on the oldest and newest interpreter only".to_string())
        },
        |interp| {
            let fx = Fixture::start(interp, TREE, &[], &[])?;
            let (v, out) = taskspy_json("ps", fx.pid, &[])?;
            let mut p = Problems::default();
            p.check(out.code == Some(0), || format!("ps --json exit {:?}", out.code));
            let rows = arr(&v["rows"]);
            for name in [EVIL_NAME, UNICODE_NAME] {
                p.check(rows.iter().any(|r| r["task_name"] == name), || {
                    format!(
                        "TASKSPY BUG: `ps --json` rows do not carry task name {name:?} exactly; rows have {:?} (the `tasks` key has it exactly: {})",
                        rows.iter().map(|r| s(&r["task_name"])).filter(|n| !n.is_ascii() || n.starts_with("evil")).collect::<Vec<_>>(),
                        arr(&v["tasks"]).iter().any(|t| t["name"] == name)
                    )
                });
            }
            p.finish(String::new)?;
            Ok(Outcome::Pass)
        },
    );
}

// ------------------------------------------------------------------------------------------
// 2. Same process read by CPython's own reader (3.14+)
// ------------------------------------------------------------------------------------------

/// Prints the awaited-by data of `_remote_debugging` as JSON (ids as hex). Field names checked
/// by introspection on 3.14.10 and 3.15.2:
///   AwaitedInfo(thread_id, awaited_by: [TaskInfo])
///   TaskInfo(task_id, task_name, coroutine_stack: [CoroInfo], awaited_by: [CoroInfo])
///   CoroInfo(call_stack: [FrameInfo], task_name)   -- in awaited_by, task_name is the parent task id
///   FrameInfo 3.14: (filename, lineno, funcname); 3.15: (filename, location: LocationInfo(lineno,
///   end_lineno, col_offset, end_col_offset), funcname, opcode)
/// Exit 3 (with a SKIP line) when the module or the permission is missing.
const CPYTHON_READER: &str = r#"
import json, sys
try:
    from _remote_debugging import RemoteUnwinder
except ImportError as e:
    print("SKIP: no _remote_debugging: %s" % e, file=sys.stderr)
    sys.exit(3)

def lineno(f):
    n = getattr(f, "lineno", None)
    if n is None:
        loc = getattr(f, "location", None)
        n = getattr(loc, "lineno", None) if loc is not None else None
    return n if isinstance(n, int) else 0

def frames(stack):
    return [{"function": f.funcname, "file": f.filename, "line": lineno(f)} for f in stack]

def ref(x):
    return hex(x) if isinstance(x, int) else str(x)

try:
    u = RemoteUnwinder(int(sys.argv[1]))
    infos = u.get_all_awaited_by()
except PermissionError as e:
    print("SKIP: permission: %s" % e, file=sys.stderr)
    sys.exit(3)
out = {"threads": [], "tasks": []}
for info in infos:
    out["threads"].append(info.thread_id)
    for t in info.awaited_by:
        out["tasks"].append({
            "thread": info.thread_id,
            "id": hex(t.task_id),
            "name": t.task_name,
            "coroutine_stack": [frames(c.call_stack) for c in t.coroutine_stack],
            "awaited_by": [{"parent": ref(c.task_name), "stack": frames(c.call_stack)} for c in t.awaited_by],
        })
print(json.dumps(out, ensure_ascii=True))
"#;

#[test]
fn matches_cpython_remote_debugging() {
    each_interpreter(
        COVERAGE,
        "cpython-compare",
        true,
        |i| (!i.at_least(14)).then(|| "CPython's _remote_debugging exists from 3.14".to_string()),
        |interp| {
            let fx = Fixture::start(interp, TREE, &[], &[])?;
            let snap = dump_json(fx.pid)?;
            let mut c = interp.command();
            c.arg("-c").arg(CPYTHON_READER).arg(fx.pid.to_string());
            let out = run(c, COMMAND_TIMEOUT);
            if out.code == Some(3) {
                return Ok(Outcome::Skip(format!("CPython's reader unavailable: {}", out.stderr.trim())));
            }
            if out.code != Some(0) {
                let last =
                    out.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim().to_string();
                return Ok(Outcome::Skip(format!("CPython's RemoteUnwinder failed: {last}")));
            }
            let cp = out.json()?;
            let mut p = Problems::default();

            let ours: HashMap<String, &Value> =
                arr(&snap["tasks"]).iter().map(|t| (s(&t["id"]).to_string(), t)).collect();
            let theirs: HashMap<String, &Value> =
                arr(&cp["tasks"]).iter().map(|t| (s(&t["id"]).to_string(), t)).collect();
            // CPython 3.14.10's get_all_awaited_by() lists only the main thread's tasks (the
            // second loop's thread is missing; 3.15.2 lists both): compare the tasks of the
            // threads CPython reports, and say which ones it left out.
            let cp_threads: BTreeSet<i64> = arr(&cp["tasks"]).iter().filter_map(|t| t["thread"].as_i64()).collect();
            p.check(cp_threads.contains(&(fx.pid as i64)), || {
                format!("CPython reports no tasks for the main thread (threads {cp_threads:?})")
            });
            let ours_cmp: BTreeSet<String> = ours
                .iter()
                .filter(|(_, t)| t["thread"].as_i64().map(|x| cp_threads.contains(&x)).unwrap_or(false))
                .map(|(k, _)| k.clone())
                .collect();
            let left_out: Vec<String> =
                ours.values().filter(|t| !ours_cmp.contains(s(&t["id"]))).map(|t| s(&t["name"]).to_string()).collect();
            if !left_out.is_empty() {
                note(&format!(
                    "note: Python {}: CPython's get_all_awaited_by() does not list thread(s) {:?} (tasks {left_out:?}); compared the other {} tasks",
                    interp.version,
                    ours.values().filter(|t| !ours_cmp.contains(s(&t["id"]))).map(|t| t["thread"].to_string()).collect::<BTreeSet<_>>(),
                    ours_cmp.len()
                ));
            }
            let theirs_set: BTreeSet<String> = theirs.keys().cloned().collect();
            p.check(ours_cmp == theirs_set, || {
                format!(
                    "task ids differ: only taskspy {:?}, only CPython {:?}",
                    ours_cmp.difference(&theirs_set).map(|i| s(&ours[i]["name"])).collect::<Vec<_>>(),
                    theirs_set.difference(&ours_cmp).map(|i| s(&theirs[i]["name"])).collect::<Vec<_>>()
                )
            });
            for (id, t) in &theirs {
                let Some(o) = ours.get(id) else { continue };
                let oname = s(&o["name"]);
                // Names: only ASCII names are compared. CPython 3.14's reader mis-decodes
                // non-ASCII task names (it returned "\0\0\0\0\0\0\0\0\0" for "wörker-名前" on
                // 3.14.10); taskspy's exact names are checked by task_tree_every_version.
                if oname.is_ascii() {
                    p.check(t["name"] == oname, || format!("task {id}: taskspy name {oname:?}, CPython {}", t["name"]));
                } else if t["name"] != oname {
                    note(&format!("note: Python {}: CPython names task {id} {} (taskspy: {oname:?}); non-ASCII names not compared", interp.version, t["name"]));
                }
                p.check(o["thread"] == t["thread"], || {
                    format!("{oname:?}: taskspy thread {}, CPython thread {}", o["thread"], t["thread"])
                });
                // CPython: a list of CoroInfo, each with its call stack innermost first; flattened
                // in that order it is taskspy's coroutine_stack.
                let cp_stack: Vec<(String, i64)> = arr(&t["coroutine_stack"]).iter().flat_map(frames_of).collect();
                let our_stack = frames_of(&o["coroutine_stack"]);
                p.check(cp_stack == our_stack, || {
                    format!(
                        "{oname:?}: coroutine stack taskspy {} vs CPython {}",
                        fmt_frames(&our_stack),
                        fmt_frames(&cp_stack)
                    )
                });
                let cp_parents: BTreeSet<String> =
                    arr(&t["awaited_by"]).iter().map(|a| s(&a["parent"]).to_string()).collect();
                let our_parents: BTreeSet<String> = arr(&o["awaited_by"]).iter().map(|x| s(x).to_string()).collect();
                let nm = |ids: &BTreeSet<String>| {
                    ids.iter()
                        .map(|i| ours.get(i).map(|t| s(&t["name"]).to_string()).unwrap_or_else(|| i.clone()))
                        .collect::<Vec<_>>()
                };
                p.check(cp_parents == our_parents, || {
                    format!("{oname:?}: awaited by taskspy {:?} vs CPython {:?}", nm(&our_parents), nm(&cp_parents))
                });
                // CPython's awaited_by entries also carry the parent's stack: it is the parent's
                // coroutine stack.
                for a in arr(&t["awaited_by"]) {
                    if let Some(parent) = ours.get(s(&a["parent"])) {
                        let ps = frames_of(&a["stack"]);
                        p.check(ps == frames_of(&parent["coroutine_stack"]), || {
                            format!(
                                "{oname:?}: awaiter {:?} stack per CPython {}, taskspy {}",
                                s(&parent["name"]),
                                fmt_frames(&ps),
                                fmt_frames(&frames_of(&parent["coroutine_stack"]))
                            )
                        });
                    }
                }
            }
            p.finish(|| format!("taskspy:\n{}\nCPython:\n{}", tasks_summary(&snap), truncate(&cp.to_string(), 4000)))?;
            Ok(Outcome::Pass)
        },
    );
}

// ------------------------------------------------------------------------------------------
// 3. Five thousand tasks
// ------------------------------------------------------------------------------------------

#[test]
fn five_thousand_tasks() {
    each_interpreter(
        COVERAGE,
        "many",
        true,
        |_| None,
        |interp| {
            let fx = Fixture::start(interp, "async_many.py", &[], &[])?;
            let mut expected: BTreeSet<String> = BTreeSet::new();
            expected.insert("many-main".into());
            for g in 0..50 {
                expected.insert(format!("grp-{g:02}"));
                for l in 0..99 {
                    expected.insert(format!("leaf-{g:02}-{l:03}"));
                }
            }
            assert_eq!(expected.len(), 5001);
            let mut p = Problems::default();
            let t0 = Instant::now();
            let snap = dump_json(fx.pid)?;
            let dump_time = t0.elapsed();
            let names: Vec<String> = arr(&snap["tasks"]).iter().map(|t| s(&t["name"]).to_string()).collect();
            let got: BTreeSet<String> = names.iter().cloned().collect();
            p.check(names.len() == 5001, || format!("dump --json has {} tasks, expected 5001", names.len()));
            p.check(got == expected, || {
                format!(
                    "task names differ: {} missing, {} unexpected",
                    expected.difference(&got).count(),
                    got.difference(&expected).count()
                )
            });

            // The tasks read in parts by two threads (TASKSPY_READERS=2, whatever the CPUs) and by
            // one are the same list, in the same order, field for field.
            let mut by_readers = Vec::new();
            for readers in ["1", "2"] {
                let mut cmd = taskspy_cmd(&["dump", &fx.pid.to_string(), "--json"]);
                cmd.env("TASKSPY_READERS", readers);
                let out = run(cmd, COMMAND_TIMEOUT);
                match out.json() {
                    Ok(v) if out.code == Some(0) => by_readers.push(v["tasks"].clone()),
                    _ => p.push(format!("dump --json with TASKSPY_READERS={readers}:\n{}", out.describe_brief())),
                }
            }
            if let [one, two] = &by_readers[..] {
                p.check(arr(one).len() == 5001, || format!("one reader: {} tasks, expected 5001", arr(one).len()));
                let differ = arr(one).iter().zip(arr(two)).position(|(a, b)| a != b);
                p.check(one == two, || {
                    format!(
                        "one reader and two readers disagree: {} vs {} tasks, first difference at {differ:?}",
                        arr(one).len(),
                        arr(two).len()
                    )
                });
            }

            // pstree (text) finishes and lists every task name exactly once.
            let t1 = Instant::now();
            let pt = taskspy_run(&["pstree", &fx.pid.to_string()]);
            let pstree_time = t1.elapsed();
            p.check(pt.code == Some(0) && !pt.timed_out, || {
                format!("pstree: exit {:?}, timed out {}, {}", pt.code, pt.timed_out, pt.stderr.trim())
            });
            let mut count: HashMap<&str, usize> = HashMap::new();
            for l in pt.stdout.lines() {
                if let Some((_, rest)) = l.split_once("(T) ") {
                    *count.entry(rest.split_whitespace().next().unwrap_or("")).or_default() += 1;
                }
            }
            let bad: Vec<String> = expected
                .iter()
                .filter(|n| count.get(n.as_str()).copied().unwrap_or(0) != 1)
                .take(10)
                .map(|n| format!("{n}: {}", count.get(n.as_str()).copied().unwrap_or(0)))
                .collect();
            p.check(bad.is_empty(), || format!("pstree does not list every task exactly once (name: times): {bad:?}"));
            p.check(count.len() == 5001, || format!("pstree lists {} distinct task lines, expected 5001", count.len()));

            // pstree --json: every group has its 99 leaves as children.
            match taskspy_json("pstree", fx.pid, &[]) {
                Ok((v, _)) => {
                    let roots = arr(&v["roots"]);
                    for g in 0..50 {
                        let name = format!("grp-{g:02}");
                        match roots.iter().find(|r| r["name"] == name.as_str()) {
                            Some(r) => {
                                let kids = arr(&r["children"]);
                                let ok = kids.len() == 99
                                    && kids.iter().all(|c| s(&c["name"]).starts_with(&format!("leaf-{g:02}-")));
                                p.check(ok, || {
                                    format!(
                                        "{name} has {} children in pstree --json (expected its 99 leaves)",
                                        kids.len()
                                    )
                                });
                            }
                            None => p.push(format!("pstree --json has no root {name}")),
                        }
                    }
                }
                Err(e) => p.push(format!("pstree --json: {e}")),
            }
            note(&format!(
                "  Python {}: 5,001 tasks: dump --json {dump_time:.2?}, pstree {pstree_time:.2?}",
                interp.version
            ));
            p.finish(String::new)?;
            Ok(Outcome::Pass)
        },
    );
}

// ------------------------------------------------------------------------------------------
// 4. Churn: tasks created and finished continuously
// ------------------------------------------------------------------------------------------

const CHURN_RUNS: usize = 200;
const CHURN_MINORS: [u32; 3] = [8, 12, 14];

#[test]
fn churn_dump_200_times() {
    let inv = inventory();
    // The first interpreter of each chosen minor version.
    let chosen: Vec<String> = CHURN_MINORS
        .iter()
        .filter_map(|m| inv.supported.iter().find(|i| i.minor() == (3, *m)).map(|i| i.version.clone()))
        .collect();
    for m in CHURN_MINORS {
        if !inv.supported.iter().any(|i| i.minor() == (3, m)) {
            note(&format!("SKIP churn on 3.{m}: no interpreter for it"));
        }
    }
    each_interpreter(
        COVERAGE,
        "churn",
        true,
        |i| {
            (!chosen.contains(&i.version))
                .then(|| format!("churn runs on one interpreter each of 3.{{8,12,14}} (time budget): {chosen:?}"))
        },
        |interp| {
            let mut fx = Fixture::start(interp, "async_churn.py", &[], &[])?;
            let pid = fx.pid.to_string();
            let mut codes: BTreeMap<String, usize> = BTreeMap::new();
            let mut bad: Vec<String> = Vec::new();
            let mut task_counts = Vec::new();
            let t0 = Instant::now();
            for n in 0..CHURN_RUNS {
                let out = run(taskspy_cmd(&["dump", &pid, "--json"]), Duration::from_secs(10));
                let key = if out.timed_out { "timeout".to_string() } else { format!("{:?}", out.code) };
                *codes.entry(key).or_default() += 1;
                if out.timed_out {
                    bad.push(format!("run {n}: no answer within 10 s (hang)"));
                    continue;
                }
                match out.code {
                    Some(0) => match serde_json::from_str::<Value>(&out.stdout) {
                        Ok(v) if v["schema"] == "taskspy/1" && v["tasks"].is_array() && v["threads"].is_array() => {
                            task_counts.push(arr(&v["tasks"]).len())
                        }
                        Ok(v) => bad.push(format!(
                            "run {n}: exit 0 but not a taskspy/1 snapshot: {}",
                            truncate(&v.to_string(), 200)
                        )),
                        Err(e) => {
                            bad.push(format!("run {n}: exit 0 but invalid JSON ({e}): {}", truncate(&out.stdout, 200)))
                        }
                    },
                    code => {
                        let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
                        let one_line = lines.len() == 1 && lines[0].starts_with("taskspy: error:");
                        // Exit 101 / "internal error" is a Rust panic (caught by taskspy's hook):
                        // reading a changing target must fail cleanly, never panic.
                        let panicked = code == Some(101)
                            || out.stderr.contains("panicked")
                            || out.stderr.contains("internal error");
                        if panicked || !one_line || code.is_none() {
                            bad.push(format!("run {n}: exit {code:?}, stderr {:?}", truncate(out.stderr.trim(), 300)));
                        }
                    }
                }
            }
            let took = t0.elapsed();
            // The target survived and its loop still runs: a new heartbeat arrives.
            let alive = fx.alive();
            fx.drain_lines();
            let beat = fx.next_line(Duration::from_secs(3));
            let mut p = Problems::default();
            p.check(alive, || "the target is not alive after the dumps".into());
            p.check(beat.as_deref().map(|l| l.starts_with("HEARTBEAT")).unwrap_or(false), || {
                format!("no new heartbeat from the target within 3 s (got {beat:?})")
            });
            p.check(task_counts.len() * 2 >= CHURN_RUNS, || {
                format!("only {} of {CHURN_RUNS} dumps succeeded under churn", task_counts.len())
            });
            let mut distinct: Vec<String> = Vec::new();
            for b in &bad {
                let tail = b.split_once(": ").map(|x| x.1).unwrap_or(b).to_string();
                if !distinct.contains(&tail) {
                    distinct.push(tail);
                }
            }
            p.check(bad.is_empty(), || {
                format!(
                    "TASKSPY BUG: {} of {CHURN_RUNS} runs of `taskspy dump PID --json` failed badly under churn; distinct: {:?}",
                    bad.len(),
                    distinct.iter().take(5).collect::<Vec<_>>()
                )
            });
            note(&format!(
                "  Python {}: {CHURN_RUNS} dumps under churn in {took:.1?}: exit codes {codes:?}, tasks per dump {}..{}",
                interp.version,
                task_counts.iter().min().unwrap_or(&0),
                task_counts.iter().max().unwrap_or(&0)
            ));
            p.finish(|| format!("exit codes {codes:?}"))?;
            Ok(Outcome::Pass)
        },
    );
}

// ------------------------------------------------------------------------------------------
// 5. uvloop
// ------------------------------------------------------------------------------------------

/// A venv with uvloop for this interpreter ($CACHE/venv-uvloop-<version>), created on first use
/// with `pip install --only-binary :all: uvloop`. Err(reason) where no wheel installs; that
/// answer is remembered for a day ($CACHE/venv-uvloop-<version>.unavailable).
fn uvloop_python(interp: &Interpreter) -> Result<PathBuf, String> {
    use std::os::fd::AsRawFd;
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("cache {}: {e}", cache.display()))?;
    let dir = cache.join(format!("venv-uvloop-{}", interp.version));
    let py = dir.join("bin").join("python");
    let unavailable = cache.join(format!("venv-uvloop-{}.unavailable", interp.version));
    // One creator at a time (parallel test runs share the cache).
    let lockf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cache.join(format!(".venv-uvloop-{}.lock", interp.version)))
        .map_err(|e| e.to_string())?;
    // SAFETY: flock on a file descriptor we own; released when `lockf` is dropped.
    unsafe { libc::flock(lockf.as_raw_fd(), libc::LOCK_EX) };
    let imports = |py: &PathBuf| {
        let mut c = interp.command_with(py);
        c.args(["-c", "import uvloop, sys; print(uvloop.__version__)"]);
        run(c, Duration::from_secs(60))
    };
    if py.exists() {
        let out = imports(&py);
        if out.code == Some(0) {
            return Ok(py);
        }
    }
    if let Ok(meta) = std::fs::metadata(&unavailable) {
        let fresh = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .map(|age| age < Duration::from_secs(86_400))
            .unwrap_or(false);
        if fresh {
            return Err(format!(
                "{} (cached in {}; delete it to retry)",
                std::fs::read_to_string(&unavailable).unwrap_or_default().trim(),
                unavailable.display()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let fail = |why: String| -> Result<PathBuf, String> {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::write(&unavailable, format!("{why}\n"));
        Err(why)
    };
    let mut venv = interp.command();
    venv.args(["-m", "venv"]).arg(&dir);
    let out = run(venv, Duration::from_secs(180));
    if out.code != Some(0) {
        return fail(format!("python -m venv failed: {}", out.stderr.lines().last().unwrap_or("").trim()));
    }
    let mut pip = interp.command_with(&py);
    pip.args([
        "-m",
        "pip",
        "install",
        "--only-binary",
        ":all:",
        "--timeout",
        "20",
        "--retries",
        "1",
        "--disable-pip-version-check",
        "-q",
        "uvloop",
    ]);
    let out = run(pip, Duration::from_secs(240));
    if out.code != Some(0) {
        let why = out.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("pip failed").trim().to_string();
        return fail(format!("no uvloop wheel installs: {why}"));
    }
    let out = imports(&py);
    if out.code != Some(0) {
        return fail(format!(
            "uvloop installed but does not import: {}",
            out.stderr.lines().last().unwrap_or("").trim()
        ));
    }
    note(&format!("  created {} (uvloop {})", dir.display(), out.stdout.trim()));
    Ok(py)
}

#[test]
fn uvloop_tasks() {
    let script = "async_uvloop.py";
    let markers = park_markers(&fixture_path(script));
    let fixture_path = fixture_path(script).display().to_string();
    each_interpreter(
        COVERAGE,
        "uvloop",
        false,
        |_| None,
        |interp| {
            let py = match uvloop_python(interp) {
                Ok(p) => p,
                Err(why) => return Ok(Outcome::Skip(why)),
            };
            let fx = Fixture::start_with(interp, &py, script, &[], &[])?;
            let mut p = Problems::default();
            p.check(fx.before_ready.iter().any(|l| l == "LOOP uvloop.Loop"), || {
                format!("the fixture does not run on uvloop: {:?}", fx.before_ready)
            });
            let snap = dump_json(fx.pid)?;
            let by_name: HashMap<&str, &Value> = arr(&snap["tasks"]).iter().map(|t| (s(&t["name"]), t)).collect();
            let name_of: HashMap<&str, &str> =
                arr(&snap["tasks"]).iter().map(|t| (s(&t["id"]), s(&t["name"]))).collect();
            let expected = [
                ("uv-main", "main"),
                ("uv-gatherer", "gather"),
                ("uv-worker-1", "worker"),
                ("uv-worker-2", "worker"),
                ("uv-sleeper", "sleep"),
                ("uv-awaiter", "await_task"),
                ("uv-awaitee", "worker"),
            ];
            let got: BTreeSet<&str> = by_name.keys().copied().collect();
            let want: BTreeSet<&str> = expected.iter().map(|e| e.0).collect();
            p.check(got == want, || format!("task names on uvloop: {got:?}, expected {want:?}"));
            for (name, tag) in expected {
                let Some(t) = by_name.get(name) else { continue };
                p.check(t["state"] == "pending", || format!("{name}: state {}", t["state"]));
                p.check(t["thread"].as_i64() == Some(fx.pid as i64), || {
                    format!("{name}: thread {} (expected MainThread {})", t["thread"], fx.pid)
                });
                let line = marker(&markers, tag);
                let user = arr(&t["coroutine_stack"]).iter().find(|f| s(&f["file"]) == fixture_path);
                p.check(user.map(|f| f["line"].as_i64() == Some(line)).unwrap_or(false), || {
                    format!(
                        "{name}: first fixture frame should be at line {line} (PARK:{tag}): {}",
                        fmt_frames(&frames_of(&t["coroutine_stack"]))
                    )
                });
            }
            let parents = |child: &str| -> BTreeSet<&str> {
                by_name
                    .get(child)
                    .map(|t| arr(&t["awaited_by"]).iter().map(|x| name_of.get(s(x)).copied().unwrap_or("?")).collect())
                    .unwrap_or_default()
            };
            for (child, parent) in
                [("uv-worker-1", "uv-gatherer"), ("uv-worker-2", "uv-gatherer"), ("uv-awaitee", "uv-awaiter")]
            {
                p.check(parents(child) == [parent].into_iter().collect(), || {
                    format!("{child} awaited by {:?}, expected {parent}", parents(child))
                });
            }
            if let Some(t) = by_name.get("uv-sleeper") {
                p.check(t["waiting_on"]["kind"] == "sleep", || format!("uv-sleeper waiting_on {}", t["waiting_on"]));
            }
            p.finish(|| tasks_summary(&snap))?;
            Ok(Outcome::Pass)
        },
    );
}
