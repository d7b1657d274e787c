"""The demo's punchline on several seeds: does ``celebcat demo`` name every gallery
person of its group photo and call every stranger unknown, and in how long?

Runs ``celebcat demo --seed S --out WORK/seed-S`` for each seed, one after another,
and prints per seed: wall and CPU seconds, the recognizer identify used (and why),
the gallery people named and the strangers called unknown, and the threshold's
explanation. The demo's time target is 3 minutes of wall time on an idle 2-core
machine; on a shared one the CPU seconds (over the 2 cores) say more than the wall.

Usage: python bench/demo_seeds.py WORK [--seeds 0 1 2 3 4] [--full]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("work", type=Path)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--full", action="store_true")
    a = ap.parse_args()
    rows = []
    for seed in a.seeds:
        out = a.work / f"seed-{seed}"
        cmd = [sys.executable, "-m", "cli", "demo", "--seed", str(seed), "--out", str(out)]
        cmd += ["--full"] if a.full else []
        wall, cpu = time.perf_counter(), children_cpu()
        done = subprocess.run(
            cmd, capture_output=True, text=True, env=dict(os.environ, COLUMNS="200")
        )
        wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
        text = done.stdout + done.stderr
        (a.work / f"seed-{seed}.log").write_text(text)
        if done.returncode:
            print(f"seed {seed}: exit {done.returncode}; log {a.work}/seed-{seed}.log")
            continue
        named = re.search(r"(\d+) of the (\d+) gallery people named", text)
        unknown = re.search(r"(\d+) of the (\d+) strangers called unknown", text)
        used = re.search(r"identify uses (\S+?),", text)
        threshold = re.search(r"(cosine > [\d.]+:.*?\))", text, re.S)
        assert named and unknown and used, f"seed {seed}: summary not found"
        rows.append((int(named[1]), int(named[2]), int(unknown[1]), int(unknown[2])))
        print(
            f"seed {seed}: {wall:.0f} s wall, {cpu:.0f} s CPU; {used[1]}; {named[0]}, "
            f"{unknown[0]}; {' '.join(threshold[1].split()) if threshold else ''}",
            flush=True,
        )
    perfect = sum(n == k and u == s for n, k, u, s in rows)
    named = f"{sum(r[0] for r in rows)} of {sum(r[1] for r in rows)} gallery people named"
    unknown = f"{sum(r[2] for r in rows)} of {sum(r[3] for r in rows)} strangers unknown"
    print(f"{perfect} of {len(rows)} seeds with every face answered right; {named}, {unknown}")


if __name__ == "__main__":
    main()
