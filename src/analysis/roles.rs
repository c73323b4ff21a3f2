//! What part a process plays in a service (gunicorn master or worker, uvicorn supervisor or worker,
//! multiprocessing pool worker, forkserver, resource tracker, celery): told from command lines and
//! from the stack of its main thread. Pure: no process is read here.

use crate::model::Snapshot;

/// The framework a command line runs, if it is one we can name.
fn framework(cmdline: &str) -> Option<&'static str> {
    let words: Vec<&str> = cmdline.split_whitespace().take(8).collect();
    let has = |name: &str| {
        words.iter().any(|w| {
            let base = w.rsplit('/').next().unwrap_or(w);
            base == name || base.starts_with(&format!("{name}:")) || *w == name
        })
    };
    // `python -m gunicorn`, `/venv/bin/gunicorn`, setproctitle's "gunicorn: master [app]".
    for fw in ["gunicorn", "uvicorn", "celery", "hypercorn", "daphne", "granian"] {
        if has(fw) || cmdline.starts_with(&format!("{fw}:")) {
            return Some(fw);
        }
    }
    None
}

/// The role of a listed process of a tree (`all`, in tree order, root first).
pub fn role_in_tree(
    e: &crate::source::proctree::ProcEntry,
    all: &[crate::source::proctree::ProcEntry],
) -> Option<String> {
    let root_cmd = all.first().map(|r| r.cmdline.as_str()).unwrap_or("");
    let parent = (e.depth > 0).then(|| all.iter().find(|p| p.pid == e.ppid)).flatten();
    role(&e.cmdline, parent.map(|p| p.cmdline.as_str()).or((e.depth > 0).then_some("")), root_cmd)
}

/// The role of a process from its command line, its parent's and the root's.
/// `parent` is `None` for the root of the walk.
pub fn role(cmdline: &str, parent: Option<&str>, root: &str) -> Option<String> {
    // setproctitle names gunicorn's processes itself.
    if let Some(rest) = cmdline.strip_prefix("gunicorn: ") {
        let kind = rest.split_whitespace().next().unwrap_or("");
        return Some(format!("gunicorn {kind}"));
    }
    if cmdline.contains("multiprocessing.resource_tracker") {
        return Some("multiprocessing resource tracker".into());
    }
    if cmdline.contains("multiprocessing.forkserver") {
        return Some("multiprocessing forkserver".into());
    }
    let root_fw = framework(root);
    if cmdline.contains("multiprocessing.spawn") || cmdline.contains("--multiprocessing-fork") {
        return Some(match root_fw {
            Some(fw) => format!("{fw} worker"),
            None => "multiprocessing child (spawn)".into(),
        });
    }
    let Some(parent) = parent else {
        return Some(match framework(cmdline) {
            Some("gunicorn") => "gunicorn master".into(),
            Some("uvicorn") => "uvicorn supervisor".into(),
            Some("celery") => "celery main".into(),
            Some(fw) => fw.to_string(),
            None => "main".into(),
        });
    };
    // A forked child keeps its parent's command line.
    if cmdline == parent && !cmdline.is_empty() {
        return Some(match root_fw {
            Some("celery") => "celery pool worker".into(),
            Some(fw) => format!("{fw} worker"),
            None => "forked child".into(),
        });
    }
    framework(cmdline).map(|fw| fw.to_string())
}

/// A sharper role from what the process is doing: a `multiprocessing.Pool` worker sits in
/// `multiprocessing/pool.py`'s `worker` (billiard's for celery).
pub fn refine(role: Option<String>, snap: &Snapshot) -> Option<String> {
    let main = snap.threads.iter().find(|t| t.tid == Some(snap.pid)).or(snap.threads.first());
    let in_pool = main.is_some_and(|t| {
        t.frames.iter().any(|f| {
            &*f.function == "worker"
                && (f.file.ends_with("multiprocessing/pool.py") || f.file.ends_with("billiard/pool.py"))
        })
    });
    match role {
        Some(r) if in_pool && !r.contains("worker") => Some("multiprocessing pool worker".into()),
        None if in_pool => Some("multiprocessing pool worker".into()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        let m = "/venv/bin/python /venv/bin/gunicorn -k uvicorn.workers.UvicornWorker -w 3 app:app";
        assert_eq!(role(m, None, m).as_deref(), Some("gunicorn master"));
        assert_eq!(role(m, Some(m), m).as_deref(), Some("gunicorn worker"));
        assert_eq!(
            role("gunicorn: worker [app:app]", Some("gunicorn: master [app:app]"), m).as_deref(),
            Some("gunicorn worker")
        );
        let u = "python -m uvicorn --workers 2 app:app";
        assert_eq!(role(u, None, u).as_deref(), Some("uvicorn supervisor"));
        let child = "/usr/bin/python3 -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7) --multiprocessing-fork";
        assert_eq!(role(child, Some(u), u).as_deref(), Some("uvicorn worker"));
        assert_eq!(
            role(child, Some("python pool.py"), "python pool.py").as_deref(),
            Some("multiprocessing child (spawn)")
        );
        let rt = "python -c from multiprocessing.resource_tracker import main;main(6)";
        assert_eq!(role(rt, Some(u), u).as_deref(), Some("multiprocessing resource tracker"));
        assert_eq!(role("python pool.py", Some("python pool.py"), "python pool.py").as_deref(), Some("forked child"));
        assert_eq!(role("sleep 1000", Some("python pool.py"), "python pool.py"), None);
        assert_eq!(role("python app.py", None, "python app.py").as_deref(), Some("main"));
    }
}
