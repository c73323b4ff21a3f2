//! Worker trees and containers (issue: `--subprocesses`, attaching across namespaces), with the
//! real servers from PyPI (provisioned per minor version in $CACHE/servers/3.X):
//!
//! * `gunicorn_uvicorn_workers`: gunicorn with `uvicorn.workers.UvicornWorker` and 3 workers, a
//!   `sleep` helper started by the master, requests parked in `parked_handler` in every worker:
//!   `dump|ps|pstree|deadlocks --subprocesses` show every worker's parked requests with their
//!   await chain, the master's role, the helper skipped; `--depth 0` reads the master only.
//! * `worker_killed_mid_read`: a worker SIGKILLed during `deadlocks --subprocesses --duration`:
//!   exit 0, that worker "gone", the others read, the replacement gunicorn starts picked up.
//! * `uvicorn_workers`: `uvicorn --workers 2` (multiprocessing spawn children).
//! * `multiprocessing_pool`: fixtures/mp_pool.py (fork before 3.14, forkserver after: workers
//!   are grandchildren there), each worker in `park_in_pool`; the `sleep` child skipped.
//! * `churn`: 200 `dump --subprocesses` against gunicorn `--max-requests 1` while a client keeps
//!   every worker restarting: no panic, no hang, every run exit 0.
//! * `containers`: a target in new PID and mount namespaces chroot-ed into its own root (pyenv
//!   3.8 with host libraries, a Debian-unstable root, python3.14t), read from the host by host
//!   PID, from inside the namespaces (nsenter, PID 1), and from a sidecar that shares only the
//!   PID namespace (`kubectl debug --target`).
//!
//! Coverage line: target/taskspy-coverage-workers.txt.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const COVERAGE: &str = "workers";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(18431)
}

/// gunicorn and uvicorn for this interpreter's minor version, installed by provision.sh.
fn servers_dir(interp: &Interpreter) -> Result<PathBuf, Outcome> {
    let (maj, min) = interp.minor();
    let d = cache_dir().join("servers").join(format!("{maj}.{min}"));
    if d.join("gunicorn").is_dir() && d.join("uvicorn").is_dir() {
        Ok(d)
    } else {
        Err(Outcome::Skip(format!(
            "no gunicorn/uvicorn in {} (scripts/provision.sh could not install them)",
            d.display()
        )))
    }
}

/// A service started in its own process group, killed whole (master, workers, helpers) on drop.
struct Service {
    child: Child,
    pid: i32,
    what: String,
    log: PathBuf,
}

impl Service {
    fn start(mut cmd: Command, what: &str, log: PathBuf) -> Result<Service, String> {
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().map_err(|e| format!("cannot start {what}: {e}"))?;
        let pid = child.id() as i32;
        Ok(Service { child, pid, what: what.to_string(), log })
    }

    fn log(&self) -> String {
        truncate(&std::fs::read_to_string(&self.log).unwrap_or_default(), 3000)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this test created.
        unsafe {
            libc::kill(-self.pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// "booted PID" / "parked PID" lines the app wrote: PIDs that booted, parked count per PID.
fn park_file(path: &std::path::Path) -> (BTreeSet<i32>, BTreeMap<i32, usize>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut booted = BTreeSet::new();
    let mut parked = BTreeMap::new();
    for l in text.lines() {
        match l.split_once(' ') {
            Some(("booted", p)) => {
                booted.insert(p.trim().parse().unwrap_or(0));
            }
            Some(("parked", p)) => *parked.entry(p.trim().parse().unwrap_or(0)).or_insert(0) += 1,
            _ => {}
        }
    }
    (booted, parked)
}

fn wait_booted(svc: &mut Service, park: &std::path::Path, n: usize) -> Result<BTreeSet<i32>, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (booted, _) = park_file(park);
        let live: BTreeSet<i32> =
            booted.into_iter().filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists()).collect();
        if live.len() >= n {
            return Ok(live);
        }
        if !svc.alive() || Instant::now() > deadline {
            return Err(format!("{}: {n} workers did not boot (booted: {live:?})\n{}", svc.what, svc.log()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Open requests to /park (held open) until every worker in `workers` has at least one parked.
fn park_requests(port: u16, park: &std::path::Path, workers: &BTreeSet<i32>) -> Result<Vec<TcpStream>, String> {
    let mut conns = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while conns.len() < 90 {
        let (_, parked) = park_file(park);
        if workers.iter().all(|w| parked.get(w).copied().unwrap_or(0) > 0) {
            // Let the last ones reach their await point.
            std::thread::sleep(Duration::from_millis(300));
            return Ok(conns);
        }
        if Instant::now() > deadline {
            break;
        }
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.write_all(b"GET /park HTTP/1.1\r\nHost: test\r\n\r\n").map_err(|e| e.to_string())?;
        conns.push(s);
        std::thread::sleep(Duration::from_millis(30));
    }
    Err(format!("requests did not park in every worker: {:?} of {workers:?}", park_file(park).1))
}

/// Task names (or ids) per coroutine stack that runs through `parked_handler` then `wait_for_release`.
fn parked_tasks(snap: &Value) -> usize {
    arr(&snap["tasks"])
        .iter()
        .filter(|t| {
            let names: Vec<&str> = arr(&t["coroutine_stack"]).iter().map(|f| s(&f["function"])).collect();
            let h = names.iter().position(|n| *n == "parked_handler");
            let w = names.iter().position(|n| *n == "wait_for_release");
            matches!((h, w), (Some(h), Some(w)) if w < h)
        })
        .count()
}

fn processes(doc: &Value, command: &str, root: i32) -> Result<Vec<Value>, String> {
    if doc["schema"] != "taskspy-processes/1" || doc["command"] != command || doc["root"] != root {
        return Err(format!(
            "not a taskspy-processes/1 {command} document of {root}: {}",
            truncate(&doc.to_string(), 400)
        ));
    }
    validate_json(doc, "processes.schema.json", &format!("{command} --subprocesses --json"))?;
    Ok(arr(&doc["processes"]).to_vec())
}

fn entry(procs: &[Value], pid: i32) -> Result<&Value, String> {
    procs.iter().find(|p| p["pid"] == pid).ok_or_else(|| {
        let listed: Vec<String> = procs.iter().map(|p| format!("{} {}", p["pid"], p["status"])).collect();
        format!("PID {pid} is not in the processes array: {listed:?}")
    })
}

fn gunicorn(
    interp: &Interpreter,
    dir: &TempDir,
    workers: usize,
    extra: &[&str],
) -> Result<(Service, u16, PathBuf), Outcome> {
    let servers = servers_dir(interp)?;
    let port = free_port();
    let park = dir.0.join("park");
    let mut c = interp.command();
    c.args(["-m", "gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-w", &workers.to_string()])
        .args(["-b", &format!("127.0.0.1:{port}"), "--graceful-timeout", "1", "--timeout", "60"])
        .arg("-c")
        .arg(fixture_path("gunicorn_conf.py"))
        .arg("--chdir")
        .arg(fixture_path(""))
        .args(extra)
        .arg("workers_app:app")
        .env("PYTHONPATH", &servers)
        .env("TASKSPY_PARK_FILE", &park);
    let svc = Service::start(c, &format!("gunicorn on Python {}", interp.version), dir.0.join("gunicorn.log"))
        .map_err(|e| Outcome::Skip(format!("ERROR {e}")))?;
    Ok((svc, port, park))
}

fn fail_on_skip<T>(r: Result<T, Outcome>) -> Result<Result<T, Outcome>, String> {
    match r {
        Err(Outcome::Skip(m)) if m.starts_with("ERROR ") => Err(m),
        other => Ok(other),
    }
}

#[test]
fn gunicorn_uvicorn_workers() {
    each_interpreter(
        COVERAGE,
        "gunicorn-uvicorn",
        true,
        |_| None,
        |interp| {
            let dir = TempDir::new("gunicorn");
            let (mut svc, port, park) = match fail_on_skip(gunicorn(interp, &dir, 3, &[]))? {
                Ok(x) => x,
                Err(o) => return Ok(o),
            };
            let workers = wait_booted(&mut svc, &park, 3)?;
            let _conns = park_requests(port, &park, &workers)?;
            let (_, parked) = park_file(&park);
            let master = svc.pid;
            let m = master.to_string();
            let mut p = Problems::default();

            // dump: one document, every worker read, each with its parked requests.
            let out = taskspy_run(&["dump", "--subprocesses", "--json", &m]);
            p.check(out.code == Some(0), || format!("dump --subprocesses: {}", out.describe_brief()));
            let doc = out.json()?;
            let procs = processes(&doc, "dump", master)?;
            let root = entry(&procs, master)?;
            p.check(root["role"] == "gunicorn master" && root["status"] == "ok", || format!("master entry: {root}"));
            for w in &workers {
                let e = entry(&procs, *w)?;
                p.check(
                    e["status"] == "ok" && e["role"] == "gunicorn worker" && e["ppid"] == master && e["depth"] == 1,
                    || format!("worker {w}: {}", truncate(&e.to_string(), 300)),
                );
                let n = parked_tasks(&e["document"]);
                let want = parked.get(w).copied().unwrap_or(0);
                p.check(n == want && n > 0, || {
                    format!(
                        "worker {w}: {n} tasks in parked_handler → wait_for_release, the app parked {want} there:\n{}",
                        tasks_summary(&e["document"])
                    )
                });
                if let Err(e) = validate_json(&e["document"], "snapshot.schema.json", "a worker's dump document") {
                    p.push(e);
                }
            }
            let helpers: Vec<&Value> = procs.iter().filter(|e| s(&e["cmdline"]).starts_with("sleep ")).collect();
            p.check(
                helpers.len() == 1
                    && helpers[0]["status"] == "skipped"
                    && s(&helpers[0]["note"]).contains("not a Python process")
                    && helpers[0].get("document").is_none(),
                || format!("the sleep helper should be skipped: {helpers:?}"),
            );
            p.check(procs.len() == 5, || format!("master + sleep + 3 workers expected, got {} entries", procs.len()));

            // pstree: grouped text, the await chain under each worker's header.
            let out = taskspy_run(&["pstree", "--subprocesses", &m]);
            p.check(out.code == Some(0), || format!("pstree --subprocesses: {}", out.describe_brief()));
            let sections: Vec<&str> = out.stdout.split("\n=== PID ").collect();
            for w in &workers {
                match sections.iter().find(|sec| sec.starts_with(&format!("{w} (gunicorn worker, child of {master})")))
                {
                    Some(sec) => {
                        let n = sec.matches("parked_handler").count();
                        let want = parked.get(w).copied().unwrap_or(0);
                        // Event.wait: qualified names from 3.11 (co_qualname), the bare name before.
                        let event_wait = sec.lines().any(|l| l.contains("wait") && l.contains("asyncio/locks.py"));
                        p.check(n == want && sec.contains("wait_for_release") && event_wait, || {
                            format!(
                                "pstree section of worker {w}: {n} parked_handler lines, want {want}:\n{}",
                                truncate(sec, 1500)
                            )
                        });
                    }
                    None => p.push(format!(
                        "pstree --subprocesses has no section for worker {w}:\n{}",
                        truncate(&out.stdout, 2000)
                    )),
                }
            }
            p.check(out.stdout.contains("— skipped: not a Python process"), || {
                "pstree: no skipped line for sleep".into()
            });
            p.check(
                out.stdout.starts_with(&format!("Process tree of PID {master}: 5 process(es) — 4 read, 1 skipped")),
                || format!("pstree summary line: {}", out.stdout.lines().next().unwrap_or("")),
            );

            // ps --json: each worker's rows, with the handler on the coroutine stack.
            let out = taskspy_run(&["ps", "--subprocesses", "--json", &m]);
            let doc = out.json()?;
            let procs = processes(&doc, "ps", master)?;
            for w in &workers {
                let d = &entry(&procs, *w)?["document"];
                let rows = arr(&d["tasks"]).iter().filter(|r| r.to_string().contains("parked_handler")).count();
                p.check(d["schema"] == "taskspy-ps/1" && rows == parked.get(w).copied().unwrap_or(0), || {
                    format!(
                        "ps document of worker {w}: {rows} rows with parked_handler: {}",
                        truncate(&d.to_string(), 600)
                    )
                });
            }

            // deadlocks: nothing wrong anywhere, exit 0, one report per process.
            let out = taskspy_run(&["deadlocks", "--subprocesses", &m]);
            p.check(out.code == Some(0) && out.stdout.matches("No deadlock candidates in PID").count() == 4, || {
                format!("deadlocks --subprocesses: {}", out.describe_brief())
            });

            // --depth 0: the master alone.
            let out = taskspy_run(&["dump", "--depth", "0", "--json", &m]);
            let procs = processes(&out.json()?, "dump", master)?;
            p.check(procs.len() == 1 && procs[0]["pid"] == master, || {
                format!("--depth 0 listed {} processes", procs.len())
            });
            p.finish(|| format!("gunicorn on {}\n{}", interp.describe(), svc.log()))?;
            Ok(Outcome::Pass)
        },
    );
}

#[test]
fn worker_killed_mid_read() {
    each_interpreter(
        COVERAGE,
        "worker-killed",
        true,
        |i| {
            (!matches!(i.version.as_str(), "3.8.18" | "3.13.0" | "3.14.10" | "3.14.7t"))
                .then(|| "a pyenv, a Debian and a free-threaded interpreter suffice".into())
        },
        |interp| {
            let dir = TempDir::new("gunicorn-kill");
            let (mut svc, _port, park) = match fail_on_skip(gunicorn(interp, &dir, 3, &[]))? {
                Ok(x) => x,
                Err(o) => return Ok(o),
            };
            let workers = wait_booted(&mut svc, &park, 3)?;
            let master = svc.pid;
            let mut c = taskspy_cmd(&["deadlocks", "--subprocesses", "--duration", "6", "--json", &master.to_string()]);
            c.stdout(Stdio::piped()).stderr(Stdio::piped());
            let mut reader = c.spawn().map_err(|e| e.to_string())?;
            std::thread::sleep(Duration::from_millis(1500));
            let victim = *workers.iter().next().unwrap();
            // SAFETY: kill(2) on a worker of the service this test started.
            unsafe {
                libc::kill(victim, libc::SIGKILL);
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            let status = loop {
                if let Some(st) = reader.try_wait().map_err(|e| e.to_string())? {
                    break st;
                }
                if Instant::now() > deadline {
                    let _ = reader.kill();
                    return Err("deadlocks --subprocesses --duration 6 did not finish in 60 s".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let mut stdout = String::new();
            let mut stderr = String::new();
            reader.stdout.take().unwrap().read_to_string(&mut stdout).map_err(|e| e.to_string())?;
            reader.stderr.take().unwrap().read_to_string(&mut stderr).map_err(|e| e.to_string())?;
            let mut p = Problems::default();
            p.check(status.code() == Some(0), || format!("exit {status}; stderr: {}", truncate(&stderr, 800)));
            p.check(!stderr.contains("internal error"), || format!("stderr: {stderr}"));
            let doc: Value =
                serde_json::from_str(&stdout).map_err(|e| format!("JSON: {e}: {}", truncate(&stdout, 500)))?;
            let procs = processes(&doc, "deadlocks", master)?;
            let v = entry(&procs, victim)?;
            p.check(v["status"] == "gone", || format!("the killed worker: {v}"));
            for w in workers.iter().filter(|w| **w != victim) {
                let e = entry(&procs, *w)?;
                p.check(e["status"] == "ok" && e["document"]["samples"].as_u64().unwrap_or(0) > 10, || {
                    format!("worker {w}: {}", truncate(&e.to_string(), 300))
                });
            }
            // gunicorn replaces the worker; it started during the sampling and must be in the record.
            let (booted, _) = park_file(&park);
            let new: Vec<i32> = booted.iter().copied().filter(|b| !workers.contains(b)).collect();
            p.check(!new.is_empty(), || format!("gunicorn started no replacement worker:\n{}", svc.log()));
            for n in &new {
                match entry(&procs, *n) {
                    Ok(e) => p.check(e["status"] == "ok" && e["role"] == "gunicorn worker", || {
                        format!("replacement {n}: {e}")
                    }),
                    Err(e) => p.push(format!("replacement worker not picked up during --duration: {e}")),
                }
            }
            p.finish(|| format!("worker killed on {}", interp.describe()))?;
            Ok(Outcome::Pass)
        },
    );
}

#[test]
fn uvicorn_workers() {
    each_interpreter(
        COVERAGE,
        "uvicorn-workers",
        true,
        |_| None,
        |interp| {
            let servers = match servers_dir(interp) {
                Ok(d) => d,
                Err(o) => return Ok(o),
            };
            let dir = TempDir::new("uvicorn");
            let port = free_port();
            let park = dir.0.join("park");
            let mut c = interp.command();
            c.args(["-m", "uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port", &port.to_string()])
                .arg("--app-dir")
                .arg(fixture_path(""))
                .arg("workers_app:app")
                .env("PYTHONPATH", &servers)
                .env("TASKSPY_PARK_FILE", &park);
            let mut svc =
                Service::start(c, &format!("uvicorn on Python {}", interp.version), dir.0.join("uvicorn.log"))?;
            let workers = wait_booted(&mut svc, &park, 2)?;
            let _conns = park_requests(port, &park, &workers)?;
            let (_, parked) = park_file(&park);
            let m = svc.pid.to_string();
            let out = taskspy_run(&["pstree", "--subprocesses", "--json", &m]);
            let mut p = Problems::default();
            p.check(out.code == Some(0), || format!("pstree --subprocesses: {}", out.describe_brief()));
            let procs = processes(&out.json()?, "pstree", svc.pid)?;
            p.check(entry(&procs, svc.pid)?["role"] == "uvicorn supervisor", || "root role".into());
            for w in &workers {
                let e = entry(&procs, *w)?;
                let text = e["document"].to_string();
                let n = text.matches("\"parked_handler\"").count();
                p.check(e["status"] == "ok" && e["role"] == "uvicorn worker", || {
                    format!("worker {w}: {}", truncate(&text, 300))
                });
                p.check(n == parked.get(w).copied().unwrap_or(0) && text.contains("wait_for_release"), || {
                    format!("worker {w}: {n} parked_handler nodes in its tree, the app parked {:?}", parked.get(w))
                });
            }
            p.finish(|| format!("uvicorn on {}\n{}", interp.describe(), svc.log()))?;
            Ok(Outcome::Pass)
        },
    );
}

#[test]
fn multiprocessing_pool() {
    each_interpreter(
        COVERAGE,
        "multiprocessing-pool",
        true,
        |_| None,
        |interp| {
            let fx = Fixture::start(interp, "mp_pool.py", &[], &[])?;
            let workers: Vec<i32> = fx.ready_line.split_whitespace().skip(2).filter_map(|p| p.parse().ok()).collect();
            let line = marker(&park_markers(&fixture_path("mp_pool.py")), "pool");
            let out = taskspy_run(&["dump", "--subprocesses", "--json", &fx.pid.to_string()]);
            let mut p = Problems::default();
            p.check(out.code == Some(0), || format!("dump --subprocesses: {}", out.describe_brief()));
            let procs = processes(&out.json()?, "dump", fx.pid)?;
            p.check(workers.len() == 3, || format!("READY line: {}", fx.ready_line));
            for w in &workers {
                let e = entry(&procs, *w)?;
                let main = arr(&e["document"]["threads"]).first().cloned().unwrap_or_default();
                let top = arr(&main["frames"]).first().cloned().unwrap_or_default();
                p.check(e["status"] == "ok" && e["role"] == "multiprocessing pool worker", || {
                    format!("worker {w}: {}", truncate(&e.to_string(), 300))
                });
                p.check(top["function"] == "park_in_pool" && top["line"] == line, || {
                    format!("worker {w} innermost frame: {top}")
                });
            }
            let sleep: Vec<&Value> = procs.iter().filter(|e| s(&e["cmdline"]).starts_with("sleep ")).collect();
            p.check(sleep.len() == 1 && sleep[0]["status"] == "skipped", || format!("sleep child: {sleep:?}"));
            p.check(procs.iter().filter(|e| e["status"] == "error").count() == 0, || {
                format!("unreadable entries: {procs:?}")
            });
            p.finish(|| format!("multiprocessing pool on {}", interp.describe()))?;
            Ok(Outcome::Pass)
        },
    );
}

#[test]
fn churn() {
    each_interpreter(
        COVERAGE,
        "churn-200",
        true,
        |i| (i.version != "3.12.1").then(|| "one interpreter: the run is about races, not versions".into()),
        |interp| {
            let dir = TempDir::new("churn");
            let (mut svc, port, park) = match fail_on_skip(gunicorn(interp, &dir, 2, &["--max-requests", "1"]))? {
                Ok(x) => x,
                Err(o) => return Ok(o),
            };
            wait_booted(&mut svc, &park, 2)?;
            // A client that keeps every worker restarting (each answers one request, then exits).
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop2 = stop.clone();
            let client = std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
                        let mut buf = Vec::new();
                        let _ = s.read_to_end(&mut buf);
                        n += 1;
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
                n
            });
            let mut p = Problems::default();
            let mut codes: BTreeMap<String, usize> = BTreeMap::new();
            let mut gone = 0;
            let t0 = Instant::now();
            let m = svc.pid.to_string();
            for i in 0..200 {
                let json = i % 2 == 0;
                let args: Vec<&str> = if json {
                    vec!["dump", "--subprocesses", "--json", &m]
                } else {
                    vec!["dump", "--subprocesses", &m]
                };
                let out = run(taskspy_cmd(&args), Duration::from_secs(30));
                *codes.entry(format!("{:?}", out.code)).or_insert(0) += 1;
                if out.code != Some(0) || out.stderr.contains("internal error") || out.stderr.contains("panicked") {
                    p.push(format!("run {i}: {}", out.describe_brief()));
                    if p.0.len() > 5 {
                        break;
                    }
                    continue;
                }
                if json {
                    match out.json() {
                        Ok(d) => gone += arr(&d["processes"]).iter().filter(|e| e["status"] == "gone").count(),
                        Err(e) => p.push(format!("run {i}: {e}")),
                    }
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let requests = client.join().unwrap_or(0);
            note(&format!(
                "churn: 200 dump --subprocesses in {:.1?} while {requests} requests restarted workers; exit codes {codes:?}; {gone} process(es) reported gone",
                t0.elapsed()
            ));
            p.check(requests >= 20, || format!("only {requests} requests reached the server: no churn"));
            p.finish(|| format!("churn on {}\n{}", interp.describe(), svc.log()))?;
            Ok(Outcome::Pass)
        },
    );
}

/// How a container's root is assembled for an interpreter (container.sh arguments).
fn container_args(interp: &Interpreter) -> Option<(Vec<String>, String)> {
    let py = interp.python.display().to_string();
    let mut binds: Vec<String> = Vec::new();
    let links = ["/lib:usr/lib", "/bin:usr/bin", "/lib64:usr/lib64"];
    let inner_py;
    match interp.kind.as_str() {
        "debian" => {
            // The Debian-unstable root is the image: /usr from it, its own libc; the patched
            // interpreter names its loader by the root's host path, so that path is there too.
            let root = py.split("/usr/bin/").next()?.to_string();
            binds.push(format!("{root}/usr:/usr"));
            binds.push(format!("{root}/etc:/etc"));
            binds.push(format!("{root}:{root}"));
            inner_py = format!("/usr/bin/{}", interp.python.file_name()?.to_string_lossy());
        }
        _ => {
            // pyenv / python3.14t: the host's /usr as the image's, the interpreter's prefix at its path.
            let prefix = interp.python.parent()?.parent()?.display().to_string();
            binds.push("/usr:/usr".into());
            binds.push("/etc:/etc".into());
            binds.push(format!("{prefix}:{prefix}"));
            inner_py = py.clone();
        }
    }
    binds.push(format!("{}:/app", fixture_path("").display().to_string().trim_end_matches('/')));
    binds.push(format!("{}:/opt/taskspy", taskspy().display()));
    let mut args = Vec::new();
    for b in binds {
        args.push("--bind".to_string());
        args.push(b);
    }
    for l in links {
        args.push("--link".to_string());
        args.push(l.to_string());
    }
    Some((args, inner_py))
}

/// SIGKILL on drop: for PID 1 of a namespace, the end of everything in it.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the container's init, which this test started.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
        }
    }
}

fn threads_of(doc: &Value) -> Vec<(i64, Option<i64>, String, Vec<(String, i64)>)> {
    arr(&doc["threads"])
        .iter()
        .map(|t| {
            (t["tid"].as_i64().unwrap_or(-1), t["ns_tid"].as_i64(), s(&t["name"]).to_string(), frames_of(&t["frames"]))
        })
        .collect()
}

#[test]
fn containers() {
    let inv = inventory();
    let mut picked: Vec<&Interpreter> = Vec::new();
    for kind in ["pyenv", "debian", "freethreaded"] {
        // The oldest of each kind (pyenv 3.8: no native_thread_id, the pthread search runs with
        // the namespace's PID); the free-threaded build without PYTHON_GIL.
        if let Some(i) = inv.supported.iter().find(|i| i.kind == kind && i.env.is_empty()) {
            picked.push(i);
        }
    }
    let labels: Vec<String> = picked.iter().map(|i| i.label.clone()).collect();
    if unsafe { libc::geteuid() } != 0 {
        note("SKIP containers: needs root (unshare, mount, chroot)");
    }
    each_interpreter(
        COVERAGE,
        "containers",
        true,
        |i| (!labels.contains(&i.label)).then(|| "one interpreter of each kind (pyenv, Debian root, 3.14t)".into()),
        |interp| {
            if unsafe { libc::geteuid() } != 0 {
                return Ok(Outcome::Skip("needs root".into()));
            }
            let (args, inner_py) = container_args(interp).ok_or("cannot lay out the container root")?;
            let mut c = Command::new(repo_root().join("tests/support/container.sh"));
            c.args(&args).arg("--").arg(&inner_py).arg("-u").arg("/app/asyncio_service.py");
            for (k, v) in &interp.env {
                c.env(k, v);
            }
            c.env_remove("PYTHONPATH").env_remove("PYTHONHOME").process_group(0);
            let fx = Fixture::spawn(c, &format!("asyncio_service.py in a container on {}", interp.version))?;
            // The python is the child of unshare (PID 1 of the new namespace).
            let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", fx.pid)).unwrap_or_default();
            let host_pid: i32 =
                children.split_whitespace().next().and_then(|p| p.parse().ok()).ok_or("no python under unshare")?;
            let _kill = KillOnDrop(host_pid);
            let ns_line = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap_or_default();
            let mut p = Problems::default();
            p.check(ns_line.lines().any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")), || {
                "the target is not PID 1 of a new namespace".into()
            });
            // (a) From the host, by host PID.
            let host = taskspy_run(&["dump", "--json", &host_pid.to_string()]);
            p.check(host.code == Some(0), || format!("host dump: {}", host.describe_brief()));
            let hdoc = host.json()?;
            p.check(hdoc["pid"] == host_pid && hdoc["ns_pid"] == 1, || {
                format!("pid/ns_pid: {} {}", hdoc["pid"], hdoc["ns_pid"])
            });
            p.check(s(&hdoc["python"]["executable"]) == inner_py, || {
                format!("executable {} (the container's path is {inner_py})", hdoc["python"]["executable"])
            });
            let os = os_tids(host_pid);
            let hthreads = threads_of(&hdoc);
            for (tid, ns_tid, name, _) in &hthreads {
                let inner =
                    std::fs::read_to_string(format!("/proc/{host_pid}/task/{tid}/status")).ok().and_then(|st| {
                        st.lines()
                            .find(|l| l.starts_with("NSpid:"))
                            .and_then(|l| l.split_whitespace().last()?.parse::<i64>().ok())
                    });
                p.check(os.contains(tid) && *ns_tid == inner && inner.is_some(), || {
                    format!("thread {name}: tid {tid} ns_tid {ns_tid:?}, host tids {os:?}, NSpid inner {inner:?}")
                });
            }
            p.check(hthreads.iter().any(|t| t.2 == "metrics-flusher") && arr(&hdoc["tasks"]).len() >= 10, || {
                format!(
                    "host view: threads {:?}, {} tasks",
                    hthreads.iter().map(|t| &t.2).collect::<Vec<_>>(),
                    arr(&hdoc["tasks"]).len()
                )
            });
            let tree = taskspy_run(&["pstree", &host_pid.to_string()]);
            p.check(tree.stdout.contains("accept-loop") && tree.stdout.contains("/app/asyncio_service.py"), || {
                format!("host pstree:\n{}", truncate(&tree.stdout, 800))
            });
            // --subprocesses from the namespace's parent (unshare, not Python) finds the python.
            let fam = taskspy_run(&["dump", "--subprocesses", "--json", &fx.pid.to_string()]);
            match fam.json() {
                Ok(d) => {
                    let procs = arr(&d["processes"]);
                    let u = procs.iter().find(|e| e["pid"] == fx.pid);
                    let py = procs.iter().find(|e| e["pid"] == host_pid);
                    p.check(
                        u.is_some_and(|u| u["status"] == "skipped") && py.is_some_and(|e| e["status"] == "ok"),
                        || format!("--subprocesses from unshare: {}", truncate(&d.to_string(), 600)),
                    );
                }
                Err(e) => p.push(format!("--subprocesses from unshare: {e}")),
            }
            let normalized = |v: &[(i64, Option<i64>, String, Vec<(String, i64)>)],
                              inside: bool|
             -> Vec<(i64, String, Vec<(String, i64)>)> {
                let mut out: Vec<_> = v
                    .iter()
                    .map(|(tid, ns, name, fr)| (if inside { *tid } else { ns.unwrap_or(-1) }, name.clone(), fr.clone()))
                    .collect();
                out.sort();
                out
            };
            let want = normalized(&hthreads, false);
            // (b) From inside the same namespaces and root (nsenter), by the namespace's PID 1.
            let mut c = Command::new("nsenter");
            c.args([
                "-t",
                &host_pid.to_string(),
                "--pid",
                "--mount",
                "--root",
                "--wd=/",
                "/opt/taskspy",
                "dump",
                "--json",
                "1",
            ]);
            let inside = run(c, Duration::from_secs(60));
            match inside.json() {
                Ok(d) => {
                    p.check(d["pid"] == 1 && d.get("ns_pid").is_none(), || {
                        format!("inside: pid {} ns_pid {}", d["pid"], d["ns_pid"])
                    });
                    let got = normalized(&threads_of(&d), true);
                    p.check(got == want, || {
                        format!("inside view differs from the host's (in namespace numbering):\n{got:?}\nvs\n{want:?}")
                    });
                }
                Err(e) => p.push(format!("nsenter dump: {e}: {}", inside.describe_brief())),
            }
            // (b2) A sidecar: shares the PID namespace only, its own /proc, the host's files.
            let mut c = Command::new("nsenter");
            c.args(["-t", &host_pid.to_string(), "--pid", "--", "unshare", "--mount", "--mount-proc"])
                .arg(taskspy())
                .args(["dump", "--json", "1"]);
            let side = run(c, Duration::from_secs(60));
            match side.json() {
                Ok(d) => {
                    let got = normalized(&threads_of(&d), true);
                    p.check(d["pid"] == 1 && got == want, || format!("sidecar view differs:\n{got:?}\nvs\n{want:?}"));
                    p.check(s(&d["python"]["executable"]) == inner_py, || {
                        format!("sidecar executable {}", d["python"]["executable"])
                    });
                }
                Err(e) => p.push(format!("sidecar dump: {e}: {}", side.describe_brief())),
            }
            drop(fx);
            p.finish(|| format!("container on {}", interp.describe()))?;
            Ok(Outcome::Pass)
        },
    );
}
