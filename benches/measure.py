"""Shared helpers for the taskspy benchmark scripts (benches/tasks.py, benches/gil_overhead.py).

Nothing here is taskspy-specific: run a child and measure it (wall time, peak RSS, CPU time, exit
status, first line of its error) through GNU time, describe the machine, format Markdown tables and replace one marked
section of docs/benchmarks.md. Standard library only, plus GNU time (/usr/bin/time) and, for the GIL
benchmark, taskset; Linux only (os.wait4, /proc).
"""
import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DOC = os.path.join(ROOT, "docs", "benchmarks.md")


@dataclass
class Run:
    wall_s: float          # spawn to exit, measured by the parent (includes fork/exec)
    maxrss_kb: int         # peak RSS of the tool process (KiB, GNU time's %M = ru_maxrss)
    cpu_s: float           # user + system CPU time of the tool process (+ `time`'s, negligible)
    status: int            # exit code (GNU time passes it on), or -signal
    stdout_path: str       # where its stdout went (a regular file: no tty, no pipe back-pressure)
    stderr: str            # captured stderr (decoded, possibly truncated)

    @property
    def ok(self):
        return self.status == 0

    def first_error_line(self):
        """First non-empty line of stderr, else of stdout (some tools print errors there)."""
        for text in (self.stderr, _head(self.stdout_path, 4096)):
            for line in text.splitlines():
                if line.strip():
                    return line.strip()
        return ""


def _head(path, n):
    try:
        with open(path, "rb") as f:
            return f.read(n).decode("utf-8", "replace")
    except OSError:
        return ""


TIME = "/usr/bin/time"  # GNU time: wait4()s for the tool and reports that one process's rusage


def run_measured(argv, stdout_path, env=None, timeout=600.0):
    """Run argv once with stdout to stdout_path and stderr captured.

    Peak RSS comes from GNU time (`-f %M`), not from our own wait4: Linux counts the memory of
    the process that forked into the child's ru_maxrss (exec_mmap keeps the old mm's high-water mark,
    also with vfork/posix_spawn), so a child of this ~25 MB Python would never report less than ~25 MB.
    GNU time is a small C program, so its children start from ~1-2 MB, like children of a shell.
    Wall time is measured here, spawn to exit of `time`; its extra fork/exec (~1 ms) is the same for
    every tool."""
    rusage_path = stdout_path + ".rusage"
    with open(stdout_path, "wb") as out, open(stdout_path + ".err", "w+b") as err:
        cmd = [TIME, "-o", rusage_path, "-f", "%M", "--"] + list(argv)
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        timer = threading.Timer(timeout, p.kill)  # a hung tool is killed, not waited for forever
        timer.start()
        try:
            _, wstatus, ru = os.wait4(p.pid, 0)  # blocking: wakes exactly when `time` exits
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = status = os.waitstatus_to_exitcode(wstatus)  # keep Popen from waiting again
        err.seek(0)
        stderr = err.read(65536).decode("utf-8", "replace")
    os.unlink(stdout_path + ".err")
    # CPU time from wait4: `time`'s rusage includes its waited-for child (the tool), at µs resolution
    # rather than time's 10 ms; `time` itself adds well under a millisecond.
    cpu = ru.ru_utime + ru.ru_stime
    maxrss = 0
    try:
        with open(rusage_path) as f:
            lines = f.read().splitlines()
        os.unlink(rusage_path)
        # "Command exited with non-zero status N" / "Command terminated by signal N" may come first.
        for line in lines:
            if line.startswith("Command terminated by signal"):
                status = -int(line.split()[-1])
        maxrss = int(lines[-1].split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return Run(wall, maxrss, cpu, status, stdout_path, stderr)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---- machine description ---------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def busy_others(exclude=()):
    """Processes (not ours) that were on CPU ('R') right now: a hint of machine noise."""
    me = os.getpid()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in exclude or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
            name = s[s.index("(") + 1:s.rindex(")")]
            state = s[s.rindex(")") + 2]
        except (OSError, ValueError, IndexError):
            continue
        if state == "R":
            out.append(f"{name}[{d}]")
    return out


def machine_info():
    u = os.uname()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": f"{u.sysname} {u.release} {u.machine}",
        "mem": f"{mem_total_gib():.1f} GiB",
    }


def machine_lines(extra=()):
    m = machine_info()
    lines = [
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['mem']} RAM, kernel {m['kernel']}",
        f"- Load average at start: {loadavg()}",
    ]
    lines.extend(extra)
    return lines


def taskspy_version(binary):
    try:
        v = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        v = "taskspy ?"
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "src"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if rev:
            v += f" (git {rev}{', src/ modified' if dirty else ''})"
    except OSError:
        pass
    return v


# ---- Markdown --------------------------------------------------------------------------------

def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def fmt_ms(s):
    if s != s:  # nan
        return "–"
    ms = s * 1000
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"


def fmt_mb(kb):
    return f"{kb / 1024:.1f} MB"


DOC_SKELETON = """# Benchmarks

Numbers from the scripts in `benches/` (run by hand, not in CI). Each section below is rewritten by its
script with `--write`; everything outside the markers is kept.

{sections}
"""


def write_section(name, body, doc=DOC):
    """Replace the text between <!-- BEGIN name --> and <!-- END name --> in docs/benchmarks.md
    (append a new marked section if the markers are missing; create the file if needed)."""
    begin, end = f"<!-- BEGIN {name} (generated by benches/, do not edit by hand) -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    try:
        with open(doc, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        text = DOC_SKELETON.format(sections="")
    b = text.find(f"<!-- BEGIN {name} ")
    e = text.find(end)
    if b >= 0 and e > b:
        text = text[:b] + block + text[e + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    os.makedirs(os.path.dirname(doc), exist_ok=True)
    tmp = doc + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, doc)
