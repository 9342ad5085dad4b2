"""The paper's Pythia-70M setup at true shapes, offline: 19 SAEs of 32,768 features in a replica hub cache.

    python benchmarks/offline_real_models.py [--work DIR] [--n-examples 8]

Builds what ``tests/test_real_models.py`` builds, but with the releases' true SAE width (2.5 GB of random
weights), runs ``sfc discover --preset pythia-70m-sfc`` in a subprocess with ``HF_HUB_OFFLINE=1`` and
prints wall time, the child's peak memory, and the circuit's size. Weights are random: the figures are
about loading and cost, not about the paper's circuits.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import offline_hub as hub  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, help="working directory (default: a temporary one, removed afterwards)")
    ap.add_argument("--n-examples", type=int, default=8)
    ap.add_argument("--method", default="atp")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="sfc-real-"))
    try:
        from sfc_plugin.hf_convert import load_hf_model_dir
        from sfc_plugin.presets import get_preset

        started = time.perf_counter()
        cache = hub.HubCache(work / "hf")
        pythia = hub.hf_model_dir(work / "stage" / "pythia", hub.PYTHIA_70M_CONFIG)
        tl = load_hf_model_dir(pythia)
        tokens = tl.to_tokens([r["clean_prefix"] for r in hub.sva_records()], prepend_bos=False)
        scales = hub.hook_scales(tl, tokens, [h for _, h in get_preset("pythia-70m-sfc").saes])
        del tl
        cache.put_dir("EleutherAI/pythia-70m-deduped", pythia)
        hub.pythia_sae_releases(cache, work / "stage" / "saes", scales, d_sae=32768)
        data = hub.write_jsonl(work / "rc_train.json", hub.sva_records())
        print(f"hub cache built in {time.perf_counter() - started:.0f}s")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "sfc_plugin.cli", "discover", "--preset", "pythia-70m-sfc",
                               "--data", str(data), "--method", args.method, "--n-examples", str(args.n_examples),
                               "--node-threshold", "0.002", "--edge-threshold", "0.0005", "-q", "-o", str(work / "out")],
                              env=cache.env(), capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode:
            sys.exit(done.stderr[-3000:])
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        circuit = json.loads((work / "out" / "circuit.json").read_text())
        widths = sorted({s["d_sae"] for s in circuit["provenance"]["saes"]})
        print(f"sfc discover --preset pythia-70m-sfc: {wall:.0f}s wall, child peak RSS {peak_gb:.1f} GB, "
              f"{len(circuit['provenance']['saes'])} SAEs of width {widths}, "
              f"{len(circuit['nodes']) - 1} nodes, {len(circuit['edges'])} edges")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
