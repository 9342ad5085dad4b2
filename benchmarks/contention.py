"""Contention benchmark (issue 25): `sfc bench --workload toy` node and edge phases alone, then beside one
busy process, with the thread policy and with torch's default of one thread per core; then a longer run that a
busy process joins after it started (the policy's revisions between batches against a fixed thread count).

    python benchmarks/contention.py [--repeats 3] [--n-pairs 100] [--late-pairs 600] [--late-after 2]

Prints the median seconds per phase and each ratio to the time alone; run it on an otherwise quiet machine
(on a loaded one "alone" is not alone). Nothing here is a timed test.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spin() -> None:
    while True:
        pass


def bench(n_pairs: int, threads: int | None, busy_after: float | None = None) -> dict[str, tuple[float, float]]:
    """``{phase: (wall s, cpu s)}`` of one `sfc bench` run in a fresh process (OMP_NUM_THREADS unset); with
    ``busy_after``, a busy process starts that many seconds after it and runs until it ends."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "sfc_plugin.cli", "bench", "--workload", "toy", "--n-pairs", str(n_pairs)]
        cmd += ["--no-baseline", "--no-floor", "-q", "-o", out] + (
            [] if threads is None else ["--threads", str(threads)]
        )
        run = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        busy = None
        if busy_after is not None:
            time.sleep(busy_after)
            busy = multiprocessing.Process(target=_spin, daemon=True)
            busy.start()
        err = run.communicate()[1]
        if busy is not None:
            busy.terminate()
        if run.returncode:
            raise SystemExit(f"sfc bench failed: {err[-2000:]}")
        rows = json.loads((Path(out) / "bench.json").read_text())["workloads"]
    return {r["phase"]: (r["ours_s"], r["ours_cpu_s"]) for r in rows if r["phase"] in ("nodes", "edges")}


def median(runs: list[dict], phase: str) -> float:
    return statistics.median(r[phase][0] for r in runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-pairs", type=int, default=100)
    p.add_argument("--late-pairs", type=int, default=600, help="pairs of the run a busy process joins (0: skip)")
    p.add_argument("--late-after", type=float, default=2.0, help="seconds after its start the busy process joins")
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = {"policy": None, f"torch default ({cores} threads)": cores}
    alone = {name: [bench(args.n_pairs, t) for _ in range(args.repeats)] for name, t in settings.items()}
    busy = multiprocessing.Process(target=_spin, daemon=True)
    busy.start()
    try:
        loaded = {name: [bench(args.n_pairs, t) for _ in range(args.repeats)] for name, t in settings.items()}
    finally:
        busy.terminate()
    ref = {ph: median(alone["policy"], ph) for ph in ("nodes", "edges")}
    print(f"{'setting':<28} {'phase':<6} {'alone s':>8} {'1 busy s':>9} {'÷ policy alone':>15}")
    for name in settings:
        for ph in ("nodes", "edges"):
            a, b = median(alone[name], ph), median(loaded[name], ph)
            print(f"{name:<28} {ph:<6} {a:>8.2f} {b:>9.2f} {b / ref[ph]:>14.2f}x")
    if not args.late_pairs:
        return
    late = {"policy (revised between batches)": None, f"fixed {cores} threads": cores}
    alone = {name: [bench(args.late_pairs, t) for _ in range(args.repeats)] for name, t in late.items()}
    joined = {
        name: [bench(args.late_pairs, t, args.late_after) for _ in range(args.repeats)] for name, t in late.items()
    }
    print(f"\n{args.late_pairs} pairs, a busy process joins {args.late_after:g} s after the start")
    print(f"{'setting':<34} {'phase':<6} {'alone s':>8} {'joined s':>9} {'÷ alone':>8}")
    for name in late:
        for ph in ("nodes", "edges"):
            a, b = median(alone[name], ph), median(joined[name], ph)
            print(f"{name:<34} {ph:<6} {a:>8.2f} {b:>9.2f} {b / a:>7.2f}x")


if __name__ == "__main__":
    main()
