"""Working memory of ig discovery with edges against the circuit's size, measured.

    python benchmarks/circuit_memory.py --nodes 200 2000 8000 --aggregation sum none [--d-sae 4096] [--n-pairs 16]
    python benchmarks/circuit_memory.py --gemma-pairs 26

The workload is ``sfc_plugin.bench.pythia_workload`` (Pythia-70M-shaped, 19 random calibrated SAEs, random
token pairs); the circuit is the top ``N`` nodes by atp effects (as ``sfc bench``'s ``run_workload``
picks them, here also with aggregation ``none``), then ``attribute`` runs ig (10 steps) with edges on
those nodes. Each (N, aggregation) is a child process that prints one JSON line:

- ``weights_gb``: resident size once the workload is built; ``peak_nodes_gb`` / ``peak_edges_gb``:
  peak resident size during each phase (``sfc_plugin.bench.PeakMemory``, after ``malloc_trim`` at each
  phase's start); ``working_gb``: the larger peak minus ``weights_gb``; ``edges_growth_gb``: the edges
  phase's peak minus the resident size at its start (what the edges pass allocates on top of what the
  nodes phase left: kept contexts and gradients);
- ``pairs``: (up, down) pairs ``edge_effects`` returned a matrix for (summed over batches), ``zero_pairs``:
  how many of those are all zero, ``edge_mb``: their bytes, ``held_mb``: what the edges pass holds for
  the whole pass besides (upstream ``Δf`` ``[k_up, b·pos]`` of every submodule; the largest
  ``[k_down, b·pos]`` cotangent coefficients), from the node sets.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time


def rss_gb() -> float:
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def child(args) -> None:
    import torch

    import sfc_plugin.attribution.engine as engine
    from sfc_plugin.attribution.methods import atp, ig
    from sfc_plugin.bench import PeakMemory, _top_threshold, pythia_workload
    from sfc_plugin.budget import MemoryBudget

    torch.set_num_threads(1)
    w = pythia_workload(d_sae=args.d_sae, n_pairs=args.n_pairs)
    gc.collect()
    weights = rss_gb()
    budget = MemoryBudget.resolve(args.max_memory, w.model)
    stats = {"pairs": 0, "zero_pairs": 0, "edge_bytes": 0, "calls": 0}
    real = engine.edge_effects

    def counting(*a, **k):
        out = real(*a, **k)
        stats["calls"] += 1
        for (_u, d), t in out.items():
            if d != "y":
                stats["pairs"] += 1
                stats["zero_pairs"] += int(not bool(t.any()))
                stats["edge_bytes"] += t.numel() * t.element_size()
        return out

    engine.edge_effects = counting
    agg = args.aggregation
    res = engine.attribute(
        w.model,
        w.subs,
        w.batch,
        w.metric,
        atp,
        steps=10,
        node_threshold=float("inf"),
        aggregation=agg,
        edges=False,
        batch_size=16,
        budget=budget,
    )
    nodes = engine.select_nodes(w.subs, res.features, res.errors, _top_threshold(res, args.nodes), agg)
    del res
    gc.collect()
    mem = PeakMemory("cpu")
    libc = ctypes.CDLL("libc.so.6")
    at_start = {}

    def on_phase(name):  # hand freed memory back first, so each phase's peak counts what it allocates
        libc.malloc_trim(0)
        at_start[name] = rss_gb()
        mem.start(name)

    started = time.perf_counter()
    try:
        res = engine.attribute(
            w.model,
            w.subs,
            w.batch,
            w.metric,
            ig,
            steps=10,
            edges=True,
            batch_size=16,
            aggregation=agg,
            budget=budget,
            nodes=nodes,
            on_phase=on_phase,
        )
        mem.stop_phase()
    finally:
        mem.close()
    B, T = w.batch.clean.shape
    b = min(B, res.batch_size)
    k = [ns.feat.numel() for ns in nodes.values()]
    out = {
        "n_nodes": sum(len(ns) for ns in nodes.values()),
        "aggregation": agg,
        "d_sae": args.d_sae,
        "n_pairs": B,
        "tokens": T,
        "max_memory": args.max_memory,
        "weights_gb": round(weights, 3),
        "peak_nodes_gb": round(mem.peaks.get("nodes", 0) / 1e9, 3),
        "peak_edges_gb": round(mem.peaks.get("edges", 0) / 1e9, 3),
        "edges_s": round(res.timings["edges"], 1),
        "edges_cpu_s": round(mem.cpu.get("edges", 0.0), 1),
        "pairs": stats["pairs"],
        "zero_pairs": stats["zero_pairs"],
        "batches": stats["calls"],
        "edge_mb": round(stats["edge_bytes"] / 1e6, 1),
        "held_mb": round((sum(k) + max(k)) * b * T * 4 / 1e6, 1),
        "nodes_per_sub_max": max(len(ns) for ns in nodes.values()),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    out["working_gb"] = round(max(out["peak_nodes_gb"], out["peak_edges_gb"]) - weights, 3)
    out["edges_start_gb"] = round(at_start["edges"], 3)
    out["edges_growth_gb"] = round(out["peak_edges_gb"] - at_start["edges"], 3)
    print(json.dumps(out), flush=True)


def gemma_pairs(n_layers: int) -> None:
    """Pairs stored for a Gemma-2-2B-layout circuit (SAEs at ``hook_attn_out``, ``hook_mlp_out``,
    ``hook_resid_post`` of every layer; Gemma-2's block: RMS norms before and after, gated MLP) with nodes
    in every submodule: the structure only, so the model is tiny (d_model 32) and random."""
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    import sfc_plugin.attribution.engine as engine
    from sfc_plugin.attribution.methods import atp
    from sfc_plugin.bench import _random_pairs, calibrated_sae
    from sfc_plugin.metrics import logit_diff
    from sfc_plugin.splicing import build_submodules

    torch.set_num_threads(1)
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=32,
        n_heads=4,
        d_head=8,
        n_key_value_heads=2,
        d_mlp=64,
        d_vocab=100,
        n_ctx=64,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        gated_mlp=True,
        use_normalization_before_and_after=True,
        attn_scores_soft_cap=50.0,
        output_logits_soft_cap=30.0,
        original_architecture="Gemma2ForCausalLM",
        dtype=torch.float32,
        seed=0,
    )
    model = HookedTransformer(cfg).eval()
    hooks = [f"blocks.{l}.{k}" for l in range(n_layers) for k in ("hook_attn_out", "hook_mlp_out", "hook_resid_post")]
    batch = _random_pairs(model, 2, 6, 0)
    _, cache = model.run_with_cache(batch.clean, names_filter=lambda n: n in hooks)
    subs = build_submodules(model, {h: calibrated_sae(h, cache[h], 64, 8, i) for i, h in enumerate(hooks)})
    got = {}
    real = engine.edge_effects
    engine.edge_effects = lambda *a, **k: got.setdefault("edges", real(*a, **k))
    res = engine.attribute(model, subs, batch, logit_diff, atp, node_threshold=0.0, batch_size=2)
    with_nodes = [s.name for s in subs if len(res.nodes[s.name])]
    pairs = [k for k in got["edges"] if k[1] != "y"]
    print(
        json.dumps(
            {
                "layers": n_layers,
                "submodules": len(subs),
                "with_nodes": len(with_nodes),
                "ordered_pairs": len(with_nodes) * (len(with_nodes) - 1) // 2,
                "pairs": len(pairs),
                "zero_pairs": sum(not bool(got["edges"][k].any()) for k in pairs),
                "into_y": sorted(u for u, d in got["edges"] if d == "y"),
            }
        ),
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[200, 2000, 8000])
    ap.add_argument("--aggregation", nargs="+", default=["sum"], choices=["sum", "none"])
    ap.add_argument("--d-sae", type=int, default=4096)
    ap.add_argument("--n-pairs", type=int, default=16)
    ap.add_argument("--max-memory", default="2GB")
    ap.add_argument(
        "--gemma-pairs", type=int, metavar="LAYERS", help="only count the pairs stored for a Gemma-2 layout"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.gemma_pairs:
        return gemma_pairs(args.gemma_pairs)
    if args.child:
        args.nodes, args.aggregation = args.nodes[0], args.aggregation[0]
        return child(args)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for agg in args.aggregation:
        for n in args.nodes:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                "--nodes",
                str(n),
                "--aggregation",
                agg,
                "--d-sae",
                str(args.d_sae),
                "--n-pairs",
                str(args.n_pairs),
                "--max-memory",
                args.max_memory,
            ]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode:
                print(
                    json.dumps({"n_nodes": n, "aggregation": agg, "error": done.stderr.strip().splitlines()[-1:]}),
                    flush=True,
                )
                continue
            print(done.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
