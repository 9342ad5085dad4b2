"""Memory of ``discover`` on a Gemma-2-2B-shaped model, measured: true hidden sizes and vocabulary (d_model
2,304, d_mlp 9,216, 8 heads of 256, 256,000 tokens, tied embeddings), truncated to a few layers, with Gemma
Scope-layout canonical SAEs (attention at ``hook_z``, MLP output, residual) from a replica hub cache.

    python benchmarks/gemma_memory.py --layers 1 --width 16k --n-pairs 8 --tokens 32 [--work DIR]

Each run is a child process that loads the model (recording the conversion's peak and the resident size
after it), then the SAEs, then runs ``sfc_plugin.discover`` (ig, 10 steps, edges) with the peak reset
(``/proc/self/clear_refs``), and prints one JSON line. Weights are random; figures are about memory and time.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import offline_hub as hub  # noqa: E402


def rss_gb(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(field)


def records(n_pairs: int, tokens: int) -> list[dict]:
    """Pairs in the paper's format whose prefixes are ``tokens`` words long (words the replica tokenizer knows)."""
    base = hub.sva_records()
    out = []
    for i in range(n_pairs):
        r = dict(base[i % len(base)])
        pad = " that the " + hub.OTHERS[i % len(hub.OTHERS)]
        extra = max(0, (tokens - len(r["clean_prefix"].split()) + 2) // 3)
        for key in ("clean_prefix", "patch_prefix"):
            r[key] = r[key] + pad * extra
        out.append(r)
    return out


def child(args) -> None:
    import torch

    import sfc_plugin
    from sfc_plugin.hf_convert import load_hf_model_dir
    from sfc_plugin.models import resolve_world

    torch.set_num_threads(1)
    started = time.perf_counter()
    model = load_hf_model_dir(args.model_dir)
    gc.collect()
    out = {
        "layers": args.layers,
        "width": args.width,
        "vocab": model.cfg.d_vocab,
        "max_memory": args.max_memory,
        "n_pairs": args.n_pairs,
        "tokens": args.tokens,
        "batch_size": args.batch_size,
        "load_peak_gb": rss_gb("VmHWM"),
        "model_gb": rss_gb(),
    }
    model, saes = resolve_world(model, json.loads(args.specs))
    gc.collect()
    out.update(loaded_gb=rss_gb(), load_s=time.perf_counter() - started)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak: what follows is discover's own
    started = time.perf_counter()
    circuit = sfc_plugin.discover(
        model,
        saes,
        records(args.n_pairs, args.tokens),
        method="ig",
        steps=10,
        node_threshold=args.node_threshold,
        edge_threshold=args.edge_threshold,
        max_memory=args.max_memory,
        batch_size=args.batch_size,
        progress=False,
    )
    out.update(
        discover_s=time.perf_counter() - started,
        discover_peak_gb=rss_gb("VmHWM"),
        nodes=len(circuit.nodes) - 1,
        edges=len(circuit.edges),
        positions=len(model.to_tokens(records(1, args.tokens)[0]["clean_prefix"])[0]),
    )
    out["working_gb"] = out["discover_peak_gb"] - out["loaded_gb"]
    print(json.dumps(out), flush=True)


def build(work: Path, layers: int, width: str, vocab: int) -> tuple[Path, list[str]]:
    from sfc_plugin.hf_convert import load_hf_model_dir

    model_dir = work / "models" / f"gemma-2-2b-{layers}l-v{vocab}"
    if not (model_dir / "model.safetensors").exists():
        hub.hf_model_dir(
            model_dir, {**hub.GEMMA2_2B_CONFIG, "num_hidden_layers": layers, "vocab_size": vocab}, bos="<bos>"
        )
    marker = work / f"saes-{layers}l-{width}-v{vocab}.json"
    if marker.exists():
        return model_dir, json.loads(marker.read_text())
    scales_file = model_dir / "hook_scales.json"  # one per model: the SAE widths share it
    if not scales_file.exists():
        tl = load_hf_model_dir(model_dir)
        tokens = tl.to_tokens([r["clean_prefix"] for r in hub.sva_records()], prepend_bos=False)
        hooks = [f"blocks.{l}.{k}" for l in range(layers) for k in ("attn.hook_z", "hook_mlp_out", "hook_resid_post")]
        scales_file.write_text(json.dumps(hub.hook_scales(tl, tokens, hooks)))
        del tl
        gc.collect()
    scales = json.loads(scales_file.read_text())
    specs = hub.gemma_scope_saes(
        hub.HubCache(work / f"hf-v{vocab}"),
        work / "stage",
        list(range(layers)),
        scales,
        npz_dtype="float32",
        width=width,
    )
    marker.write_text(json.dumps(specs))
    return model_dir, specs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/sfc-gemma-memory"))
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--width", choices=["16k", "65k"], default="16k")
    ap.add_argument("--n-pairs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32, help="prefix length in words (= tokens) of each pair")
    ap.add_argument("--max-memory", default="2GB", help="discover's working-memory budget")
    ap.add_argument("--batch-size", type=int, default=16, help="discover's examples per batch (an upper bound)")
    ap.add_argument(
        "--vocab", type=int, default=256000, help="vocabulary (true: 256000; smaller to fit 65k SAEs in memory)"
    )
    ap.add_argument("--node-threshold", type=float, default=0.002)
    ap.add_argument("--edge-threshold", type=float, default=0.0005)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--specs", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    model_dir, specs = build(args.work, args.layers, args.width, args.vocab)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--model-dir",
        str(model_dir),
        "--specs",
        json.dumps(specs),
        "--layers",
        str(args.layers),
        "--width",
        args.width,
        "--n-pairs",
        str(args.n_pairs),
        "--tokens",
        str(args.tokens),
        "--max-memory",
        args.max_memory,
        "--batch-size",
        str(args.batch_size),
        "--node-threshold",
        str(args.node_threshold),
        "--edge-threshold",
        str(args.edge_threshold),
    ]
    env = {**hub.HubCache(args.work / f"hf-v{args.vocab}").env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    print(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
