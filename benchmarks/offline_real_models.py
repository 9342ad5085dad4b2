"""The paper's Pythia-70M setup at true shapes, offline: 19 SAEs of 32,768 features in a replica hub cache.

    python benchmarks/offline_real_models.py [--work DIR] [--n-examples 8] [--method ig --method atp]

Builds what ``tests/test_real_models.py`` builds, but with the releases' true SAE width (2.5 GB of random
weights), runs ``sfc discover --preset pythia-70m-sfc`` once per ``--method`` in a subprocess with
``HF_HUB_OFFLINE=1`` and prints, per run, wall time, that child's peak resident memory and the circuit's
size. Weights are random: the figures are about loading and cost, not about the paper's circuits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import offline_hub as hub  # noqa: E402


def run_measured(cmd: list[str], env: dict, log: Path) -> tuple[int, float, float]:
    """``(returncode, wall seconds, peak RSS in GB)`` of one child (its own rusage, via ``wait4``)."""
    started = time.perf_counter()
    with open(log, "w") as fh:
        child = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - started, usage.ru_maxrss / 2**20


def build(work: Path, d_sae: int) -> tuple[hub.HubCache, Path]:
    from sfc_plugin.hf_convert import load_hf_model_dir
    from sfc_plugin.presets import get_preset

    cache = hub.HubCache(work / "hf")
    pythia = hub.hf_model_dir(work / "stage" / "pythia", hub.PYTHIA_70M_CONFIG)
    tl = load_hf_model_dir(pythia)
    tokens = tl.to_tokens([r["clean_prefix"] for r in hub.sva_records()], prepend_bos=False)
    scales = hub.hook_scales(tl, tokens, [h for _, h in get_preset("pythia-70m-sfc").saes])
    del tl
    cache.put_dir("EleutherAI/pythia-70m-deduped", pythia)
    hub.pythia_sae_releases(cache, work / "stage" / "saes", scales, d_sae=d_sae)
    shutil.rmtree(work / "stage")
    return cache, hub.write_jsonl(work / "rc_train.json", hub.sva_records())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="working directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--n-examples", type=int, default=8)
    ap.add_argument("--d-sae", type=int, default=32768)
    ap.add_argument("--method", action="append", help="attribution method (repeatable; default: ig)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="passed to sfc discover --dtype")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sfc-real-"))
    try:
        started = time.perf_counter()
        cache, data = build(work, args.d_sae)
        print(f"hub cache built in {time.perf_counter() - started:.0f}s", flush=True)
        for method in args.method or ["ig"]:
            out = work / f"out-{method}"
            cmd = [
                sys.executable,
                "-m",
                "sfc_plugin.cli",
                "discover",
                "--preset",
                "pythia-70m-sfc",
                "--data",
                str(data),
                "--method",
                method,
                "--n-examples",
                str(args.n_examples),
                "--node-threshold",
                "0.002",
                "--edge-threshold",
                "0.0005",
                "-q",
                "-o",
                str(out),
            ]
            cmd += ["--dtype", args.dtype] if args.dtype else []
            rc, wall, peak = run_measured(cmd, cache.env(), work / f"{method}.log")
            if rc:
                sys.exit((work / f"{method}.log").read_text()[-3000:])
            circuit = json.loads((out / "circuit.json").read_text())
            saes = circuit["provenance"]["saes"]
            dtype = f" --dtype {args.dtype}" if args.dtype else ""
            print(
                f"sfc discover --preset pythia-70m-sfc --method {method}{dtype} --n-examples {args.n_examples}: "
                f"{wall:.0f}s wall, peak RSS {peak:.2f} GB, {len(saes)} SAEs of width "
                f"{sorted({s['d_sae'] for s in saes})}, {len(circuit['nodes']) - 1} nodes, "
                f"{len(circuit['edges'])} edges",
                flush=True,
            )
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
