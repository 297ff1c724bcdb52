"""Engine speed, idle and under load, and whether the load changes any answer.

Every catalogue activation (parameters symbolic: all cases) and every entry of
tests/data/expected_groups.json (at its parameter values) is derived with the default
budget, first on the machine as it is ("idle"), then again while two CPU-bound processes
started by this script compete for the cores ("load"). Each derivation starts from a cold
sympy cache. The script prints p50/p95/max of the wall time per derivation for both runs side
by side, the slowest items, how far the slowest stayed inside the default wall-clock guard,
and every item whose answer differed between the runs (there should be none: the answer is
limited by counted work, not by time).

    python benchmarks/bench_engine.py [--repeats 1] [--cold]

``--cold`` also times `groupcalc group relu` and `groupcalc table` as fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD = "while True:\n    pass\n"


def items():
    import activations

    out = [(name, None) for name in activations.names()]
    for e in json.loads((ROOT / "tests" / "data" / "expected_groups.json").read_text()):
        out.append((e["activation"], e.get("params") or None))
    seen, unique = set(), []
    for name, params in out:
        key = (name, json.dumps(params, sort_keys=True))
        if key not in seen:
            seen.add(key)
            unique.append((name, params))
    return unique


def run_all(todo, repeats):
    import sympy

    import groupcalc

    times, answers, statuses = {}, {}, {}
    for name, params in todo:
        key = name + ("" if not params else " " + json.dumps(params, sort_keys=True))
        best = None
        for _ in range(repeats):
            sympy.core.cache.clear_cache()
            t0 = time.perf_counter()
            d = groupcalc.derive(name, params=params)
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        times[key] = best
        answers[key] = ([c.to_json() for c in d.cases], d.work)
        statuses[key] = d.status
    return times, answers, statuses


def quantiles(values):
    v = sorted(values)
    p = lambda q: v[min(len(v) - 1, max(0, int(round(q * (len(v) - 1)))))]  # noqa: E731
    return statistics.median(v), p(0.95), v[-1]


def cold(cmd, repeats):
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1, help="derivations per item per run; the fastest counts")
    ap.add_argument("--cold", action="store_true", help="also time fresh `groupcalc group relu` and `groupcalc table`")
    args = ap.parse_args()
    from groupcalc._derive import DEFAULT_TIMEOUT, DEFAULT_WORK

    todo = items()
    print(f"machine: {os.cpu_count()} cores; {len(todo)} items; default budget {DEFAULT_WORK} steps, "
          f"wall-clock guard {DEFAULT_TIMEOUT:g} s; load average {os.getloadavg()[0]:.1f} at start")
    results = {}
    for label in ("idle", "load"):
        hogs = []
        if label == "load":
            hogs = [subprocess.Popen([sys.executable, "-c", LOAD]) for _ in range(2)]
            time.sleep(1.0)
        try:
            t0 = time.perf_counter()
            results[label] = run_all(todo, args.repeats)
            total = time.perf_counter() - t0
        finally:
            for h in hogs:
                h.kill()
                h.wait()
        print(f"{label}: {total:.1f} s in all; load average {os.getloadavg()[0]:.1f} at end")

    print("\nwall time per derivation (s), all cases, cold sympy cache:\n")
    print("| run | p50 | p95 | max | slowest | not final (unknown) |")
    print("|---|---|---|---|---|---|")
    for label in ("idle", "load"):
        times, _, statuses = results[label]
        p50, p95, mx = quantiles(times.values())
        slowest = max(times, key=times.get)
        unknown = sum(1 for s in statuses.values() if s == "unknown")
        print(f"| {label} (2 extra CPU-bound processes) | {p50:.2f} | {p95:.2f} | {mx:.2f} | {slowest} | {unknown} |"
              if label == "load" else f"| {label} | {p50:.2f} | {p95:.2f} | {mx:.2f} | {slowest} | {unknown} |")
    t_load = results["load"][0]
    print("\nslowest under load:")
    for key in sorted(t_load, key=t_load.get, reverse=True)[:8]:
        print(f"  {key:<60} idle {results['idle'][0][key]:6.2f} s   load {t_load[key]:6.2f} s   "
              f"work {results['load'][1][key][1]} steps")
    worst = max(t_load.values())
    print(f"\nslowest under load used {100 * worst / DEFAULT_TIMEOUT:.0f}% of the {DEFAULT_TIMEOUT:g} s guard")
    diff = [k for k in todo_keys(results) if results["idle"][1][k] != results["load"][1][k]]
    print(f"answers that differ between idle and load: {len(diff)}" + ("" if not diff else f"  {diff}"))

    if args.cold:
        exe = [sys.executable, "-m", "groupcalc.cli"]
        print(f"\ngroupcalc group relu (fresh process, median of 3): {cold(exe + ['group', 'relu'], 3):.2f} s")
        print(f"groupcalc table (fresh process): {cold(exe + ['table'], 1):.2f} s")


def todo_keys(results):
    return list(results["idle"][1])


if __name__ == "__main__":
    main()
