"""Benchmark: reading 1k / 10k / 100k parked asyncio tasks from a CPython 3.14 process.

Started by benches/tasks.sh (which provisions interpreters and builds taskspy first); see that file
and docs/benchmarks.md. For every size one fixture (benches/fixtures/many_tasks.py) is parked, then
every tool runs against that same process, interleaved round by round:

    taskspy dump --json PID       taskspy pstree PID       taskspy ps PID
    python3.14 -m asyncio pstree PID                       py-spy dump --pid PID

Each run is one child measured through GNU time (wall time from spawn to exit, peak RSS, CPU time, exit
status); stdout goes to a regular file (what `> out.json` does) and is checked afterwards: taskspy's
JSON must list every task, the trees must contain one "(T)" node per task.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402

FIXTURE = os.path.join(measure.HERE, "fixtures", "many_tasks.py")
SLOW_S = 2.0  # a tool whose first measured run takes longer than this runs only --slow-runs times
GOALS = {10_000: (0.030, 40 * 1024), 100_000: (0.300, 150 * 1024)}  # leaves -> (wall s, peak RSS KiB)
GOALS_TEXT = "10,000 tasks ≤ 30 ms and ≤ 40 MB; 100,000 tasks ≤ 300 ms and ≤ 150 MB"
# The rows the wall/memory goals are for: a snapshot of a live process (`dump --json`,
# `pstree`, `ps`). `--blocking` has its own goal (the pause, table below) and holds a copy of the
# target's memory by design; `--core` reads a file. Their rows show the same thresholds for
# comparison, and what exceeds them is listed apart from the goals missed.
TARGET_ROWS = {"`taskspy dump --json`", "`taskspy pstree`", "`taskspy ps`"}
PAUSE_GOAL_MS = 15.0  # --blocking: the target stopped for at most this long at 10,000 tasks
REPEAT_GOAL_MS = 10.0  # the second and later samples of an unchanged 10,000-task process
WATCH_RUNS = 3  # `watch` runs per size for the repeated-samples table


def parse_duration_ms(text):
    """Rust's Debug format of a Duration (`80.49ms`, `1.2s`, `950.1µs`, `12ns`) in milliseconds."""
    m = re.fullmatch(r"([0-9.]+)(ns|µs|ms|s)", text.strip())
    if not m:
        return None
    return float(m.group(1)) * {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1000.0}[m.group(2)]


def capture_times_ms(stderr):
    """`timing: capture D` lines that TASKSPY_TIMING=1 makes taskspy print, one per sample."""
    out = []
    for line in stderr.splitlines():
        if line.startswith("timing: capture "):
            v = parse_duration_ms(line[len("timing: capture "):])
            if v is not None:
                out.append(v)
    return out


def ms_goal(tasks, value_ms, goal_ms, what, misses):
    """Verdict for a millisecond goal that applies at the 10,000-task size (noted in `misses` if missed)."""
    if not 10_000 <= tasks < 100_000:
        return ""
    if value_ms > goal_ms:
        misses.append(f"{what} at {tasks:,} tasks: {value_ms:.1f} ms vs goal {goal_ms:g} ms")
    return ("✓" if value_ms <= goal_ms else "✗") + f" ≤ {goal_ms:g} ms"


def paused_ms(path):
    try:
        with open(path, "rb") as f:
            return (json.load(f).get("capture") or {}).get("paused_ms")
    except (OSError, ValueError):
        return None


def fmt_bytes(n):
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n} B"


def total_tasks(leaves):
    return 1 + leaves // 100 + leaves


# ---- output checks: how many tasks did the tool show? -----------------------------------------

def count_json_tasks(path):
    with open(path, "rb") as f:
        doc = json.load(f)
    tasks = doc.get("tasks", [])
    return len(tasks), sum(1 for t in tasks if t.get("state") == "pending")


def count_tree_nodes(path):
    n = 0
    with open(path, "rb") as f:
        for line in f:
            n += line.count(b"(T) ")
    return n


def count_table_rows(path):
    # taskspy ps: header line, a dashes line, then one row per task.
    n = 0
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if i >= 2 and line.strip():
                n += 1
    return n


def check_tasks(kind, path, expected):
    try:
        if kind == "json":
            n, pending = count_json_tasks(path)
            mark = "✓" if n == expected and pending == expected else "✗"
            return f"{n:,} ({pending:,} pending) {mark}"
        if kind == "tree":
            n = count_tree_nodes(path)
        elif kind == "table":
            n = count_table_rows(path)
        else:
            with open(path, "rb") as f:
                threads = len(re.findall(rb"^Thread ", f.read(), re.M))
            return f"n/a (no tasks; {threads} thread)" if threads == 1 else f"n/a (no tasks; {threads} threads)"
    except (OSError, ValueError) as e:
        return f"unreadable output: {e}"
    return f"{n:,} {'✓' if n == expected else '✗'}"


# ---- fixture ---------------------------------------------------------------------------------

def start_fixture(python, leaves, timeout=120.0):
    t0 = time.perf_counter()
    p = subprocess.Popen([python, FIXTURE, str(leaves)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    # READY line; blocking readline is fine: the fixture prints it or dies (then readline returns "").
    line = p.stdout.readline()
    ready_s = time.perf_counter() - t0
    if not line.startswith("READY"):
        p.kill()
        raise SystemExit(f"fixture with {leaves} leaves did not get ready: {line!r} {p.stderr.read()[:2000]}")
    if ready_s > timeout:
        print(f"warning: fixture took {ready_s:.1f} s to park {leaves} leaves", file=sys.stderr)
    return p, ready_s


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- main ------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000", help="leaf task counts (multiples of 100)")
    ap.add_argument("--runs", type=int, default=11, help="measured runs per tool and size (the VM moves by ±30 %%: 5 gave medians that swung across the goals)")
    ap.add_argument("--slow-runs", type=int, default=3, help=f"runs for a tool whose first run takes > {SLOW_S:g} s")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds to wait after READY before measuring")
    ap.add_argument("--python", required=True, help="CPython 3.14 for the fixture and `-m asyncio pstree`")
    ap.add_argument("--taskspy", required=True)
    ap.add_argument("--py-spy", dest="pyspy", default=None)
    ap.add_argument("--write", action="store_true", help="also replace the tasks section of docs/benchmarks.md")
    ap.add_argument("--section", default="tasks", help="section of docs/benchmarks.md to write (tasks, tasks-ft)")
    ap.add_argument("--command", default=None, help="the command line to print as 'reproduce with'")
    args = ap.parse_args()

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    tools = [  # (label, argv builder, check kind, is taskspy)
        ("`taskspy dump --json`", lambda pid: [args.taskspy, "dump", "--json", str(pid)], "json", True),
        ("`taskspy dump --json --blocking`", lambda pid: [args.taskspy, "dump", "--json", "--blocking", str(pid)], "json", True),
        ("`taskspy pstree`", lambda pid: [args.taskspy, "pstree", str(pid)], "tree", True),
        ("`taskspy ps`", lambda pid: [args.taskspy, "ps", str(pid)], "table", True),
        (f"`{os.path.basename(args.python)} -m asyncio pstree`", lambda pid: [args.python, "-m", "asyncio", "pstree", str(pid)], "tree", False),
    ]
    # A core of the same parked process, written by gcore before the runs: `dump --core` reads it
    # like a live process (the binaries come from disk).
    core = {"path": None}
    gcore = shutil.which("gcore")
    if gcore:
        tools.insert(1, ("`taskspy dump --core CORE --json`", lambda pid: [args.taskspy, "dump", "--core", core["path"], "--json"],
                         "json", True))
    else:
        print("tasks.py: gcore (gdb) missing: no `dump --core` rows", file=sys.stderr)
    if args.pyspy:
        tools.append(("`py-spy dump` (threads only)", lambda pid: [args.pyspy, "dump", "--pid", str(pid)], "threads", False))

    pyver = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                           text=True).stdout.strip()
    pyspy_ver = subprocess.run([args.pyspy, "--version"], capture_output=True, text=True).stdout.strip() if args.pyspy else "-"
    busy_at_start = measure.busy_others()

    rows = []
    busy_seen = {}  # other processes found on a CPU right after a measured run -> how often
    fixtures = []
    goal_misses = []
    beyond = []  # rows that are not goal rows (TARGET_ROWS) over the same thresholds
    dump_medians = []  # (tasks, median wall s, peak KiB) of `taskspy dump --json`
    pauses = []  # (tasks, sorted paused_ms of the --blocking runs)
    repeats = []  # (tasks, first capture ms, later captures ms)
    tmp = tempfile.mkdtemp(prefix="taskspy-bench-")
    try:
        for leaves in sizes:
            expected = total_tasks(leaves)
            print(f"== {expected:,} tasks: starting fixture", file=sys.stderr, flush=True)
            fx, ready_s = start_fixture(args.python, leaves)
            try:
                time.sleep(args.settle)
                core_size = 0
                if gcore:
                    prefix = os.path.join(tmp, f"core-{leaves}")
                    subprocess.run([gcore, "-o", prefix, str(fx.pid)], capture_output=True, timeout=600)
                    core["path"] = f"{prefix}.{fx.pid}"
                    core_size = os.path.getsize(core["path"]) if os.path.exists(core["path"]) else 0
                fixtures.append((expected, ready_s, rss_kb(fx.pid), core_size))
                runs = {t[0]: [] for t in tools}
                limit = {t[0]: args.runs for t in tools}
                # Warm-up: one unmeasured run per tool (page cache, .pyc, binaries).
                for label, argv, _, _ in tools:
                    measure.run_measured(argv(fx.pid), os.path.join(tmp, "warmup.out"))
                for rnd in range(args.runs):
                    for label, argv, kind, _ in tools:
                        if rnd >= limit[label]:
                            continue
                        out = os.path.join(tmp, f"{leaves}-{len(runs[label])}-{abs(hash(label))}.out")
                        r = measure.run_measured(argv(fx.pid), out)
                        runs[label].append(r)
                        for b in measure.busy_others(exclude={fx.pid}):
                            busy_seen[b] = busy_seen.get(b, 0) + 1
                        if rnd == 0 and r.wall_s > SLOW_S:
                            limit[label] = min(args.runs, args.slow_runs)
                        print(f"   {label:34} run {rnd + 1}: {r.wall_s * 1000:8.1f} ms {r.maxrss_kb / 1024:7.1f} MB "
                              f"exit {r.status}", file=sys.stderr, flush=True)
                # Repeated samples: `watch` reads the same process every 0.25 s; TASKSPY_TIMING=1
                # makes it print each capture's time (what top/watch/metrics pay per refresh).
                # Three `watch` runs (a first or second sample is one measurement each): the median
                # first and second capture, every later sample pooled.
                env = dict(os.environ, TASKSPY_TIMING="1")
                firsts, seconds, later, checks, pages = [], [], [], [], 0
                for k in range(WATCH_RUNS):
                    w = measure.run_measured([args.taskspy, "watch", str(fx.pid), "--interval", "0.25", "--for", "3"],
                                             os.path.join(tmp, f"watch-{k}.out"), env=env)
                    caps = capture_times_ms(w.stderr)
                    checked = re.findall(r"timing: (\d+) pages checked: (\w+)", w.stderr)
                    pages = int(checked[-1][0]) if checked else pages
                    checks += [v for _, v in checked]
                    if len(caps) >= 2:
                        firsts.append(caps[0])
                        seconds.append(caps[1])
                        later += caps[2:]
                if firsts:
                    reused = (sum(1 for v in checks if v == "unchanged"), len(checks))
                    repeats.append((expected, measure.median(firsts), measure.median(seconds), sorted(later), pages, reused))
                for label, _, kind, is_taskspy in tools:
                    rs = runs[label]
                    walls = [r.wall_s for r in rs]
                    med = measure.median(walls)
                    peak = max(r.maxrss_kb for r in rs)
                    cpu = measure.median([r.cpu_s for r in rs])
                    bad = [r for r in rs if not r.ok]
                    if not bad:
                        status = "0"
                    else:
                        status = f"failed ({len(bad)}/{len(rs)}, exit {bad[0].status}): {bad[0].first_error_line()[:120]}"
                    ok_runs = [r for r in rs if r.ok]
                    check = check_tasks(kind, (ok_runs or rs)[-1].stdout_path, expected) if ok_runs else "–"
                    out_bytes = os.path.getsize((ok_runs or rs)[-1].stdout_path)
                    goal = ""
                    if is_taskspy and leaves in GOALS:
                        gw, gm = GOALS[leaves]
                        parts = []
                        parts.append(("✓" if med <= gw else "✗") + f" ≤ {gw * 1000:.0f} ms")
                        if gm:
                            parts.append(("✓" if peak <= gm else "✗") + f" ≤ {gm // 1024} MB")
                        target = label in TARGET_ROWS
                        goal = ", ".join(parts) if target else f"(for comparison: {', '.join(parts)})"
                        over = goal_misses if target else beyond
                        if med > gw:
                            over.append(f"{label} at {expected:,} tasks: {measure.fmt_ms(med)} vs "
                                        f"{gw * 1000:.0f} ms ({med / gw:.1f}×)")
                        if gm and peak > gm:
                            over.append(f"{label} at {expected:,} tasks: {measure.fmt_mb(peak)} vs "
                                        f"{gm // 1024} MB ({peak / gm:.1f}×)")
                    if label == "`taskspy dump --json`":
                        dump_medians.append((expected, med, peak))
                    if "--blocking" in label:
                        ps = sorted(v for v in (paused_ms(r.stdout_path) for r in ok_runs) if v is not None)
                        if ps:
                            pauses.append((expected, ps))
                    rows.append([f"{expected:,}", label, len(rs), measure.fmt_ms(med),
                                 f"{measure.fmt_ms(min(walls))} – {measure.fmt_ms(max(walls))}",
                                 measure.fmt_ms(cpu), measure.fmt_mb(peak), fmt_bytes(out_bytes), status, check, goal])
                    for r in rs:
                        try:
                            os.unlink(r.stdout_path)
                        except OSError:
                            pass
            finally:
                fx.kill()
                fx.wait()
                if core["path"] and os.path.exists(core["path"]):
                    os.unlink(core["path"])
    finally:
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)

    others = ", ".join(f"{k} ({v}×)" for k, v in sorted(busy_seen.items(), key=lambda kv: -kv[1])[:6])
    command = args.command or "bash benches/tasks.sh"
    title = "## Reading many asyncio tasks" + (" (free-threaded CPython)" if args.section != "tasks" else "")
    lines = [title, ""]
    lines.append(f"Goals: **{GOALS_TEXT}** (the live snapshot: `taskspy dump --json`, `pstree` and `ps`; "
                 f"\"10,000 tasks\" is the 10,101-task fixture, \"100,000\" the 101,001-task one); `--blocking`: "
                 f"the pause ≤ {PAUSE_GOAL_MS:g} ms at 10,000 tasks; repeated samples: ≤ {REPEAT_GOAL_MS:g} ms.")
    lines.append("")
    lines.extend(measure.machine_lines([
        f"- Target: CPython {pyver} (`{args.python}`), `benches/fixtures/many_tasks.py N`: a root task in a "
        "TaskGroup of N/100 group tasks, each in a TaskGroup of 100 leaf tasks `top() -> mid() -> leaf()` "
        "awaiting an `asyncio.Event` that never fires (1 + N/100 + N tasks, all pending)",
        f"- Tools: {measure.taskspy_version(args.taskspy)}; {pyspy_ver}; CPython's `-m asyncio pstree` from the same {pyver}",
        f"- Runs: {args.runs} measured per tool and size, interleaved round by round on the same parked process, "
        f"after 1 unmeasured warm-up run ({args.slow_runs} runs for a tool whose first run takes > {SLOW_S:g} s)",
        f"- Other processes on CPU at start: {', '.join(busy_at_start) if busy_at_start else 'none'}; "
        f"right after a measured run: {others or 'none'}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; reproduce with `{command}`",
    ]))
    lines.append("")
    fx_rows = [[f"{n:,}", f"{s:.2f} s", measure.fmt_mb(kb), fmt_bytes(cs) if cs else "–"] for n, s, kb, cs in fixtures]
    lines.append(measure.table(["fixture tasks", "spawn to READY", "fixture RSS", "gcore core size"], fx_rows))
    lines.append("")
    lines.append(measure.table(["tasks", "tool", "runs", "median wall", "min – max", "median CPU", "peak RSS",
                                "stdout", "exit", "tasks shown", f"goal ({GOALS_TEXT})"], rows))
    lines.append("")
    lines.append("Wall time is spawn to exit of the tool process (fork/exec, attach, reading, formatting, writing "
                 "stdout to a regular file, *stdout* is its size); peak RSS is that process's `ru_maxrss` (GNU `time -f %M`); "
                 "median CPU is its user + system time (wall ≈ CPU means it never waited for a CPU). \"tasks shown\" "
                 "counts entries in the JSON `tasks` array, `(T)` nodes in trees, rows in `taskspy ps`.")
    if pauses:
        lines.append("")
        lines.append(f"**`--blocking`: how long the target was stopped** (`capture.paused_ms` of each run's JSON: stop, "
                     f"read, resume; formatting happens after the resume). Goal: ≤ {PAUSE_GOAL_MS:g} ms at 10,000 tasks.")
        lines.append("")
        prow = []
        for n, ps in pauses:
            med = measure.median(ps)
            goal = ms_goal(n, med, PAUSE_GOAL_MS, "--blocking pause", goal_misses)
            prow.append([f"{n:,}", len(ps), f"{med:.1f} ms", f"{ps[0]:.1f} – {ps[-1]:.1f} ms", goal])
        lines.append(measure.table(["tasks", "runs", "median pause", "min – max", "goal"], prow))
    if repeats:
        lines.append("")
        lines.append(f"**Repeated samples** (`TASKSPY_TIMING=1 taskspy watch PID --interval 0.25 --for 3`: the capture time of "
                     f"each sample of the same unchanged process, as `top`, `watch`, `metrics` and `deadlocks --duration` "
                     f"pay it per refresh). The first sample of such a command also records which pages its task walk "
                     f"touched (on one thread); each later one, the second included, re-reads just those pages and reuses "
                     f"the task records when none changed (*pages checked*; *reused*: checks that found nothing changed, "
                     f"of all checks). {WATCH_RUNS} `watch` runs per size: *first* and *second capture* are medians over "
                     f"them, *later samples* the samples after the second of all runs. "
                     f"Goal: the second sample and the median later one ≤ {REPEAT_GOAL_MS:g} ms at 10,000 tasks.")
        lines.append("")
        rrow = []
        for n, first, second, later, pages, reused in repeats:
            if later:
                med = measure.median(later)
                goal = ms_goal(n, max(med, second), REPEAT_GOAL_MS, "second or later sample", goal_misses)
                rrow.append([f"{n:,}", f"{first:.1f} ms", f"{second:.1f} ms", len(later), f"{pages:,}", f"{reused[0]}/{reused[1]}",
                             f"{med:.1f} ms", f"{later[0]:.1f} – {later[-1]:.1f} ms", goal])
            else:
                rrow.append([f"{n:,}", f"{first:.1f} ms", f"{second:.1f} ms", 0, "–", "–", "–", "–", ""])
        lines.append(measure.table(["tasks", "first capture", "second capture", "later samples", "pages checked", "reused",
                                    "median later", "min – max", "goal"], rrow))
    if len(dump_medians) >= 2:
        # Least-squares line through (tasks, median wall) of `dump --json`: the cost per 1,000 tasks.
        xs = [n for n, _, _ in dump_medians]
        ys = [w * 1000 for _, w, _ in dump_medians]
        ms_ = [kb / 1024 for _, _, kb in dump_medians]
        mx, my, mm = sum(xs) / len(xs), sum(ys) / len(ys), sum(ms_) / len(ms_)
        sxx = sum((x - mx) ** 2 for x in xs)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
        mslope = sum((x - mx) * (m - mm) for x, m in zip(xs, ms_)) / sxx
        per = ", ".join(f"{n:,}: {w * 1e6 / n:.1f} µs/task" for n, w, _ in dump_medians)
        lines.append("")
        lines.append(f"**Growth** of `taskspy dump --json` from {xs[0]:,} to {xs[-1]:,} tasks: {slope * 1000:.1f} ms and "
                     f"{mslope * 1000:.1f} MB per 1,000 tasks (least-squares slope of the medians); per task: {per}.")
    lines.append("")
    lines.append("Goals missed: " + ("; ".join(goal_misses) + "." if goal_misses else "none."))
    if beyond:
        lines.append("")
        lines.append("Not goal rows, over the live snapshot's thresholds (`--blocking`'s goal is its pause, above; it "
                     "holds a copy of the target's writable memory while decoding; `--core` reads a core file): "
                     + "; ".join(beyond) + ".")
    body = "\n".join(lines)
    print(body)
    if args.write:
        measure.write_section(args.section, body)
        print(f"\nwrote {measure.DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
