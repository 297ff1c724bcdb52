"""Engine speed: `groupcalc group relu` from a cold start, `groupcalc table` for the whole
catalogue, and per-activation derivation times (symbolic parameters, i.e. all cases).

Targets (issue 2): group relu < 1 s cold, table < 10 s, on a 2-core machine.

    python benchmarks/bench_engine.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def cold(cmd, repeats):
    walls, cpus = [], []
    for _ in range(repeats):
        t0, r0 = time.perf_counter(), os.times()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        r1 = os.times()
        walls.append(time.perf_counter() - t0)
        cpus.append((r1.children_user - r0.children_user) + (r1.children_system - r0.children_system))
    return statistics.median(walls), statistics.median(cpus)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    exe = [sys.executable, "-m", "groupcalc.cli"]
    w, c = cold(exe + ["group", "relu"], args.repeats)
    print(f"groupcalc group relu (cold start, median of {args.repeats}): {w:.2f} s wall, {c:.2f} s CPU   [target < 1 s]")
    w, c = cold(exe + ["table"], max(1, args.repeats // 2))
    print(f"groupcalc table, {len(__import__('activations').names())} activations (cold): {w:.2f} s wall, {c:.2f} s CPU   [target < 10 s]")
    import activations
    import groupcalc

    print("\nper activation, all parameter cases (warm process):")
    total = 0.0
    for name in activations.names():
        t0 = time.perf_counter()
        d = groupcalc.derive(name, timeout=30)
        dt = time.perf_counter() - t0
        total += dt
        print(f"  {name:<14} {dt:6.2f} s  {len(d.cases)} case(s), first: {d.cases[0].status}")
    print(f"  total {total:.1f} s; load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
