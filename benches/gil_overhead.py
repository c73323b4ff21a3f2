"""Benchmark: what `taskspy gil` sampling costs the target process.

Started by benches/gil_overhead.sh; see that file and docs/benchmarks.md. One CPU-bound fixture
(benches/fixtures/cpu_loop.py: one thread counting loop iterations, one line per window) runs for the
whole benchmark, pinned to CPU 0. Phases of --phase seconds follow each other, interleaved round by round
(the order rotates every round so slow drift hits every condition alike):

    off                    nothing attached (the reference)
    off (A/A control)      nothing attached either: its "change" is the noise floor of this method
    100 Hz, other core     taskspy gil PID --rate 100  --duration D, sampler pinned to CPU 1
    1000 Hz, other core    taskspy gil PID --rate 1000 --duration D, sampler pinned to CPU 1
    100 Hz, same core      as above, sampler pinned to CPU 0 (competes with the target for its core)
    1000 Hz, same core

A window counts for a phase when it lies entirely inside it (sampler phases: from spawning taskspy to
its exit, so attach and start-up are included). A condition's change is the median of all its windows
over the median of all "off" windows (both "off" phases; the A/A row: one "off" phase against the
other), minus 1, with a 90 % interval from a paired bootstrap over rounds. Two rates per window:

  * wall rate:  iterations / wall seconds: what the service would see, but also every preemption of
                the target by anything else on the machine;
  * CPU rate:   iterations / seconds the target thread was actually on a CPU (time.thread_time()):
                blind to preemption (so to the same-core sampler's stolen time), but robust to other
                load; it shows the sampler's indirect cost (cache, memory-map lock, TLB) only.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import measure  # noqa: E402

FIXTURE = os.path.join(measure.HERE, "fixtures", "cpu_loop.py")
GOAL_PCT = 1.0  # at 100 Hz
BOOTSTRAP = 2000


class Fixture:
    def __init__(self, python, window, cpu):
        argv = [python, FIXTURE, str(window)]
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        if self.p.stdout.readline().strip() != "READY":
            self.p.kill()
            raise SystemExit("cpu_loop fixture did not start")
        self.windows = []  # (start, end, iterations, cpu_s)
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    @property
    def pid(self):
        return self.p.pid  # taskset execs the fixture: same pid

    def _read(self):
        for line in self.p.stdout:
            try:
                s, e, n, c = line.split()
                w = (float(s), float(e), int(n), float(c))
            except ValueError:
                continue
            with self.lock:
                self.windows.append(w)

    def between(self, t0, t1):
        with self.lock:
            return [w for w in self.windows if w[0] >= t0 and w[1] <= t1]

    def stop(self):
        self.p.kill()
        self.p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--phase", type=float, default=3.0, help="seconds per phase (the sampler's --duration)")
    ap.add_argument("--window", type=float, default=0.2, help="fixture window, seconds")
    ap.add_argument("--no-same-core", action="store_true", help="skip the same-core conditions")
    ap.add_argument("--python", required=True)
    ap.add_argument("--taskspy", required=True)
    ap.add_argument("--write", action="store_true", help="also replace the gil section of docs/benchmarks.md")
    ap.add_argument("--command", default=None)
    args = ap.parse_args()

    ncpu = len(os.sched_getaffinity(0))
    pin = ncpu >= 2
    target_cpu, other_cpu = (sorted(os.sched_getaffinity(0))[:2] if pin else (None, None))
    conditions = [("off", None, None), ("off (A/A control)", None, None),
                  ("100 Hz, other core", 100, other_cpu), ("1000 Hz, other core", 1000, other_cpu),
                  # `taskspy metrics` at its default interval: one collection (snapshot + 0.5 s of GIL
                  # samples) starts each phase, so a 3 s phase is 3x denser than the 10 s default.
                  ("metrics, other core", "metrics", other_cpu)]
    if pin and not args.no_same_core:
        conditions += [("100 Hz, same core", 100, target_cpu), ("1000 Hz, same core", 1000, target_cpu)]

    pyver = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                           text=True).stdout.strip()
    busy_at_start = measure.busy_others()
    fx = Fixture(args.python, args.window, target_cpu)
    busy_seen = {}
    per = {c[0]: [] for c in conditions}     # condition -> list of (round, [windows])
    sampler = {c[0]: [] for c in conditions}  # condition -> list of (cpu_s, wall_s, gil json)
    tmp = tempfile.mkdtemp(prefix="taskspy-gilbench-")
    try:
        time.sleep(1.0)  # let the fixture's first windows pass (start-up)
        for rnd in range(args.rounds):
            k = rnd % len(conditions)
            order = conditions[k:] + conditions[:k]
            for name, rate, cpu in order:
                t0 = time.monotonic()
                if rate is None:
                    time.sleep(args.phase)
                elif rate == "metrics":
                    argv = ["timeout", "-s", "INT", str(args.phase), args.taskspy, "metrics", str(fx.pid),
                            "--textfile", tmp]
                    if cpu is not None:
                        argv = ["taskset", "-c", str(cpu)] + argv
                    r = measure.run_measured(argv, os.path.join(tmp, "metrics.out"))
                    sampler[name].append((r.cpu_s, r.wall_s, {}))
                else:
                    argv = [args.taskspy, "gil", str(fx.pid), "--rate", str(rate), "--duration", str(args.phase),
                            "--json"]
                    if cpu is not None:
                        argv = ["taskset", "-c", str(cpu)] + argv
                    out = os.path.join(tmp, "gil.json")
                    r = measure.run_measured(argv, out)
                    try:
                        with open(out) as f:
                            doc = json.load(f)
                    except (OSError, ValueError):
                        doc = {"error": r.first_error_line()}
                    sampler[name].append((r.cpu_s, r.wall_s, doc))
                t1 = time.monotonic()
                time.sleep(args.window * 1.5)  # the window straddling t1 must be complete
                ws = fx.between(t0, t1)
                per[name].append((rnd, ws))
                for b in measure.busy_others(exclude={fx.pid, os.getpid()}):
                    busy_seen[b] = busy_seen.get(b, 0) + 1
                rate_s = ""
                if ws:
                    rate_s = f"{measure.median([w[2] / (w[1] - w[0]) for w in ws]) / 1e6:6.2f} M it/s wall, " \
                             f"{measure.median([w[2] / w[3] for w in ws if w[3] > 0]) / 1e6:6.2f} M it/CPU-s"
                print(f"   round {rnd + 1} {name:22} {len(ws):3} windows  {rate_s}", file=sys.stderr, flush=True)
    finally:
        fx.stop()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)

    def wall_rate(w):
        return w[2] / (w[1] - w[0])

    def cpu_rate(w):
        return w[2] / w[3] if w[3] > 0 else float("nan")

    def share(w):
        return w[3] / (w[1] - w[0])

    # Estimate: pooled median of all of a condition's windows / pooled median of all "off" windows (both
    # "off" phases; the A/A row compares one "off" phase with the other) - 1. Pooling over rounds keeps
    # one disturbed phase (a burst of other load) from moving the result much. Uncertainty: a paired
    # bootstrap over rounds (rounds drawn with replacement, the same draw for condition and reference),
    # 90 % interval.
    rng = random.Random(12345)
    rounds = sorted({rnd for ws in per.values() for rnd, _ in ws})
    by_round = {name: dict(v) for name, v in per.items()}

    def change(name, ref_names, metric, draw):
        cond = [metric(w) for r in draw for w in by_round[name].get(r, [])]
        ref = [metric(w) for n in ref_names for r in draw for w in by_round[n].get(r, [])]
        if not cond or not ref:
            return float("nan")
        return measure.median(cond) / measure.median(ref) * 100 - 100

    def estimate(name, metric):
        ref_names = ["off"] if name == "off (A/A control)" else ["off", "off (A/A control)"]
        point = change(name, ref_names, metric, rounds)
        boots = sorted(change(name, ref_names, metric, [rng.choice(rounds) for _ in rounds])
                       for _ in range(BOOTSTRAP))
        lo, hi = boots[int(0.05 * len(boots))], boots[int(0.95 * len(boots)) - 1]
        return point, lo, hi

    def verdict(est):
        """✓ when even the pessimistic end of the interval is within the goal, ✗ when even the
        optimistic end misses it, else inconclusive."""
        _, lo, hi = est
        if -lo < GOAL_PCT:
            return "✓"
        if -hi >= GOAL_PCT:
            return "✗"
        return "inconclusive"

    def fmt(est):
        m, lo, hi = est
        return f"{m:+.2f} % [{lo:+.1f}, {hi:+.1f}]"

    rows = []
    for name, rate, cpu in conditions:
        allw = [w for _, ws in per[name] for w in ws]
        if name == "off":
            cw = cc = "(reference, with A/A)"
            ew = ec = None
        else:
            ew, ec = estimate(name, wall_rate), estimate(name, cpu_rate)
            cw, cc = fmt(ew), fmt(ec)
        samp = sampler[name]
        if samp:
            sc = f"{measure.median([c / w * 100 for c, w, _ in samp]):.1f} %"
            achieved = [d.get("achieved_rate_hz") for _, _, d in samp if "achieved_rate_hz" in d]
            errors = sum(d.get("read_errors", 0) for _, _, d in samp)
            failed = [d["error"] for _, _, d in samp if "error" in d]
            ach = f"{min(achieved):.0f}–{max(achieved):.0f} Hz" if achieved else "–"
            if errors:
                ach += f", {errors} read errors"
            if failed:
                ach += f", {len(failed)} runs failed: {failed[0][:80]}"
        else:
            sc, ach = "–", "–"
        goal = ""
        if rate in (100, "metrics") and ew:
            goal = f"wall: {verdict(ew)}; CPU: {verdict(ec)}"
        rows.append([name, len(allw), f"{measure.median([wall_rate(w) for w in allw]) / 1e6:.2f} M",
                     cw, f"{measure.median([cpu_rate(w) for w in allw]) / 1e6:.2f} M", cc,
                     f"{measure.median([share(w) for w in allw]) * 100:.1f} %", sc, ach, goal])

    command = args.command or "bash benches/gil_overhead.sh"
    lines = ["## Cost of `taskspy gil` sampling and `taskspy metrics` to the target", ""]
    lines.append(f"Goal: **< {GOAL_PCT:g} % fewer target iterations/s at 100 Hz**, and for `metrics` at its default interval.")
    lines.append("")
    pin_text = (f"target pinned to CPU {target_cpu}; \"other core\" pins the sampler to CPU {other_cpu}, \"same core\" "
                f"to CPU {target_cpu}") if pin else "single CPU: no pinning, the sampler always competes with the target"
    others = ", ".join(f"{k} ({v}/{sum(len(v2) for v2 in per.values())} phases)" for k, v in
                       sorted(busy_seen.items(), key=lambda kv: -kv[1])[:6])
    lines.extend(measure.machine_lines([
        f"- Target: CPython {pyver}, `benches/fixtures/cpu_loop.py`: one thread counting iterations of a pure-Python "
        f"loop, reported per {args.window:g} s window; {pin_text}",
        f"- Sampler: {measure.taskspy_version(args.taskspy)}, `taskspy gil PID --rate R --duration {args.phase:g} --json`",
        f"- {args.rounds} rounds × {len(conditions)} conditions × {args.phase:g} s phases, order rotated every round; "
        f"change = median of all the condition's windows / median of all \"off\" windows (both \"off\" phases) − 1, "
        f"[90 % interval] from a paired bootstrap over rounds; the A/A row compares the two \"off\" phases",
        f"- Other processes on CPU at start: {', '.join(busy_at_start) if busy_at_start else 'none'}; "
        f"seen on CPU at phase ends: {others or 'none'}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; reproduce with `{command}`",
    ]))
    lines.append("")
    lines.append(measure.table(["condition", "windows", "wall it/s", "wall change", "CPU it/s", "CPU change",
                                "target on CPU", "sampler CPU (of one core)", "achieved rate", "goal"], rows))
    lines.append("")
    lines.append("*wall it/s*: iterations per elapsed second (what a service would feel, including every preemption); "
                 "*CPU it/s*: iterations per second the target thread was on a CPU (blind to preemption, robust to "
                 "other load); *target on CPU*: its thread CPU time / wall time; *sampler CPU*: user+system time of the "
                 "`taskspy gil` process (attach and start-up included) / its wall time. The A/A control row is the "
                 "noise floor: changes of that size mean nothing. Goal verdicts: ✓ when even the pessimistic end of the "
                 "90 % interval is within the goal, ✗ when even the optimistic end misses it, else inconclusive.")
    body = "\n".join(lines)
    print(body)
    if args.write:
        measure.write_section("gil", body)
        print(f"\nwrote {measure.DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
