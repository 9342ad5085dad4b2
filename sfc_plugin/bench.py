"""``sfc bench``: our discovery path against the paper's straightforward algorithm, same process, same inputs.

Workloads:
- ``toy``: the shipped toy world, across-RC agreement, 100 examples (ig, 10 steps).
- ``pythia``: a model shaped like Pythia-70M (6 parallel-attention layers, d_model 512, vocabulary 50,304)
  with random weights and 19 random SAEs (embedding + attn/mlp/resid per layer) calibrated to L0 ≈ 50;
  random token pairs that differ in one position.
- ``gemma``: a Gemma-2-2B-shaped model truncated to a few layers (d_model 2,304, vocabulary 256,000,
  tied embeddings) with 16,384-feature SAEs at attn/mlp/resid of each layer: per-layer cost.
- ``gemma-3-270m``, ``gemma-3-270m-transcoders``: the whole preset (``gemma-3-270m-sfc``: 54 Gemma Scope 2
  SAEs, 16k wide, at all 18 layers; or the transcoder preset) as it loads from the hub, here a replica hub
  (:mod:`sfc_plugin.replica`: the true model shape and file layouts, random weights) that ``sfc bench`` builds
  once; random token pairs. Also reports the load phase (time, peak resident memory).

Per phase (nodes, edges, total) it reports the time of each implementation, their ratio, the peak
memory of each (resident set on CPU, allocated memory on CUDA, sampled while the phase runs) and the
maximum relative difference of node / edge effects: ``max |ours − baseline| / max |baseline|``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPLICA_WORKLOADS = {"gemma-3-270m": "gemma-3-270m-sfc", "gemma-3-270m-transcoders": "gemma-3-270m-transcoders"}
WORKLOADS = ("toy", "pythia", "gemma", *REPLICA_WORKLOADS)


@dataclass
class Workload:
    name: str
    model: object
    subs: list
    batch: object  # sfc_plugin.data.Batch
    metric: object
    node_threshold: float | None  # None: pick the top ``n_nodes`` of our effects
    description: str
    load: dict | None = None  # the load phase, where the workload measured it: seconds, CPU seconds, peak bytes


class PeakMemory:
    """Peak resident memory (CPU) or allocated memory (CUDA) per named phase, sampled in a thread; also
    the process CPU seconds of each phase (robust when other jobs share the cores)."""

    def __init__(self, device, interval: float = 0.005):
        self.cuda = torch.device(device).type == "cuda"
        self.interval, self.peaks, self.phase = interval, {}, None
        self.cpu: dict[str, float] = {}
        self._cpu0 = 0.0
        self._stop = threading.Event()
        self._thread = None if self.cuda else threading.Thread(target=self._sample, daemon=True)
        if self._thread:
            self._thread.start()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm", encoding="ascii") as fh:
            import os

            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.is_set():
            if self.phase is not None:
                self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), self.rss())
            time.sleep(self.interval)

    def start(self, phase: str) -> None:
        self.stop_phase()
        self.phase = phase
        self._cpu0 = time.process_time()
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            self.peaks[phase] = max(self.peaks.get(phase, 0), self.rss())

    def stop_phase(self) -> None:
        if self.phase is not None:
            self.cpu[self.phase] = self.cpu.get(self.phase, 0.0) + time.process_time() - self._cpu0
        if self.phase is not None and self.cuda:
            torch.cuda.synchronize()
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), torch.cuda.max_memory_allocated())
        elif self.phase is not None:
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), self.rss())
        self.phase = None

    def close(self) -> None:
        self.stop_phase()
        self._stop.set()


# ---- workloads ---------------------------------------------------------------------------------
def _random_pairs(model, n_pairs: int, n_tokens: int, seed: int):
    from .data import Batch

    g = torch.Generator().manual_seed(seed)
    V = model.cfg.d_vocab
    clean = torch.randint(0, V, (n_pairs, n_tokens), generator=g)
    patch = clean.clone()
    pos = n_tokens // 3
    patch[:, pos] = (clean[:, pos] + torch.randint(1, V, (n_pairs,), generator=g)) % V
    ca, pa = torch.randint(0, V, (n_pairs,), generator=g), torch.randint(0, V, (n_pairs,), generator=g)
    dev = next(model.parameters()).device
    last = torch.full((n_pairs,), n_tokens - 1)
    return Batch(clean.to(dev), patch.to(dev), ca.to(dev), pa.to(dev), last.to(dev), [{}] * n_pairs)


@torch.no_grad()
def calibrated_sae(hook: str, acts: torch.Tensor, d_sae: int, l0: float, seed: int):
    """A random SAELens StandardSAE with ``l0`` features active per token on ``acts`` on average (each
    feature's pre-activation standardised, one threshold in standard units for all)."""
    from sae_lens import StandardSAE, StandardSAEConfig

    d = acts.shape[-1]
    g = torch.Generator().manual_seed(seed)
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=d_sae, dtype="float32", device=str(acts.device)))
    W_dec = torch.randn(d_sae, d, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    sae.W_dec.copy_(W_dec)
    sae.W_enc.copy_(W_dec.T)
    x = acts.reshape(-1, d).float()
    sae.b_dec.copy_(x.mean(0))
    pre = (x - sae.b_dec) @ sae.W_enc
    mean, std = pre.mean(0), pre.std(0).clamp_min(1e-6)
    z = (pre - mean) / std  # one threshold in standard units, so exactly l0 fire per token on ``acts``
    t = z.flatten().topk(max(1, int(l0 * x.shape[0]))).values[-1]
    sae.b_enc.copy_(-(mean + t * std))
    sae.cfg.metadata.hook_name = hook
    return sae


def _calibrated_subs(model, hooks: list[str], d_sae: int, l0: float, seed: int, n_tokens: int):
    from .world import World

    g = torch.Generator().manual_seed(seed + 1)
    tokens = torch.randint(0, model.cfg.d_vocab, (max(1, 128 // n_tokens), n_tokens), generator=g)
    tokens = tokens.to(next(model.parameters()).device)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in hooks)
    saes = {h: calibrated_sae(h, cache[h], d_sae, l0, seed + i) for i, h in enumerate(hooks)}
    del cache
    return World.load(model, saes).submodules


def pythia_workload(
    d_sae: int = 32768, n_pairs: int = 20, n_tokens: int = 10, l0: float = 50, seed: int = 0, device: str = "cpu"
) -> Workload:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from .metrics import logit_diff

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        n_layers=6,
        d_model=512,
        n_heads=8,
        d_head=64,
        d_mlp=2048,
        d_vocab=50304,
        n_ctx=2048,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="rotary",
        rotary_dim=16,
        parallel_attn_mlp=True,
        dtype=torch.float32,
        device=device,
        seed=seed,
    )
    model = HookedTransformer(cfg).eval()
    hooks = ["blocks.0.hook_resid_pre"] + [
        f"blocks.{l}.hook_{k}" for l in range(6) for k in ("attn_out", "mlp_out", "resid_post")
    ]
    subs = _calibrated_subs(model, hooks, d_sae, l0, seed, n_tokens)
    return Workload(
        "pythia",
        model,
        subs,
        _random_pairs(model, n_pairs, n_tokens, seed),
        logit_diff,
        None,
        f"Pythia-70M-shaped, 19 SAEs x {d_sae}, {n_pairs} pairs x {n_tokens} tokens",
    )


def gemma_workload(
    n_layers: int = 4,
    d_sae: int = 16384,
    n_pairs: int = 8,
    n_tokens: int = 10,
    l0: float = 50,
    seed: int = 0,
    device: str = "cpu",
    d_vocab: int = 256000,
) -> Workload:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from .metrics import logit_diff

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=2304,
        n_heads=8,
        d_head=256,
        n_key_value_heads=4,
        d_mlp=9216,
        d_vocab=d_vocab,
        n_ctx=8192,
        act_fn="gelu_pytorch_tanh",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=256,
        rotary_base=10000,
        gated_mlp=True,
        use_normalization_before_and_after=True,
        attn_scores_soft_cap=50.0,
        output_logits_soft_cap=30.0,
        window_size=4096,
        attn_types=(["global", "local"] * n_layers)[:n_layers],
        dtype=torch.float32,
        device=device,
        seed=seed,
    )
    model = HookedTransformer(cfg).eval()
    with torch.no_grad():  # Gemma ties its embeddings: share the storage
        model.unembed.W_U = torch.nn.Parameter(model.embed.W_E.T, requires_grad=False)
    hooks = [f"blocks.{l}.hook_{k}" for l in range(n_layers) for k in ("attn_out", "mlp_out", "resid_post")]
    subs = _calibrated_subs(model, hooks, d_sae, l0, seed, n_tokens)
    return Workload(
        "gemma",
        model,
        subs,
        _random_pairs(model, n_pairs, n_tokens, seed),
        logit_diff,
        None,
        f"Gemma-2-2B-shaped, {n_layers} layers, {len(hooks)} SAEs x {d_sae}, {n_pairs} pairs x {n_tokens} tokens",
    )


def replica_workload(name: str, n_pairs: int = 20, n_tokens: int = 10, seed: int = 0, device: str = "cpu") -> Workload:
    """A full-size preset (:data:`REPLICA_WORKLOADS`) loaded with :meth:`World.load <sfc_plugin.world.World.load>`
    from the hub this process sees (``sfc bench`` points ``HF_HOME`` at the replica), the load timed and its peak
    resident memory sampled; ``n_pairs`` random token pairs of ``n_tokens``."""
    from .metrics import logit_diff
    from .world import World

    mem = PeakMemory(device)
    mem.start("load")
    t0 = time.perf_counter()
    try:
        world = World.load(preset=REPLICA_WORKLOADS[name], device=device)
    finally:
        mem.close()
    load = {"s": time.perf_counter() - t0, "cpu_s": mem.cpu["load"], "peak": mem.peaks["load"]}
    model, subs = world.model, world.submodules
    n_features = sum(s.d_sae for s in subs)
    return Workload(
        name,
        model,
        subs,
        _random_pairs(model, n_pairs, n_tokens, seed),
        logit_diff,
        None,
        f"{REPLICA_WORKLOADS[name]} on the replica hub: {model.cfg.n_layers} layers, vocabulary {model.cfg.d_vocab:,}, "
        f"{len(subs)} dictionaries ({n_features:,} features), {n_pairs} pairs x {n_tokens} tokens",
        load,
    )


def toy_workload(n_examples: int = 100, device: str = "cpu") -> Workload:
    from .data import load_dataset, tokenize
    from .metrics import logit_diff
    from .world import World

    world = World.load(device=device)
    model = world.model
    records = load_dataset("toy/sva-rc", "train")[:n_examples]
    return Workload(
        "toy",
        model,
        world.submodules,
        tokenize(model, records, next(model.parameters()).device),
        logit_diff,
        0.1,
        f"toy world, across-RC, {len(records)} examples",
    )


# ---- the comparison ----------------------------------------------------------------------------
def _rel_diff(ours: list[torch.Tensor], base: list[torch.Tensor]) -> float:
    num = max((float((a.double() - b.double()).abs().max()) for a, b in zip(ours, base) if a.numel()), default=0.0)
    den = max((float(b.double().abs().max()) for b in base if b.numel()), default=0.0)
    return num / den if den else num


def _top_threshold(res, n_nodes: int) -> float:
    eff = torch.cat(
        [torch.cat([f.flatten().abs(), e.flatten().abs()]) for f, e in zip(res.features.values(), res.errors.values())]
    )
    k = min(n_nodes, eff.numel())
    return float(eff.topk(k).values[-1]) * 0.999999 if k else 0.0


def run_workload(
    w: Workload,
    *,
    steps: int = 10,
    batch_size: int = 16,
    max_memory=None,
    n_nodes: int = 200,
    baseline: bool = True,
    baseline_edges_only: bool = False,
    floor: bool = True,
    progress: bool = False,
) -> list[dict]:
    """Rows of ``bench.json`` for one workload (phases nodes, edges, total).

    ``baseline_edges_only``: the baseline runs only its edge phase, on the IG gradients of our path (computed
    untimed; the same values its node phase would give), for widths where its node phase would take hours.
    ``floor``: also time the passes node attribution cannot avoid (:mod:`sfc_plugin.bench_floor`).
    """
    from .attribution.context import prepare
    from .attribution.engine import attribute, select_nodes
    from .attribution.methods import atp, ig
    from .attribution.paper_baseline import baseline_discover
    from .bench_floor import node_floor
    from .budget import MemoryBudget
    from .splicing import frozen

    dev = next(w.model.parameters()).device
    budget = MemoryBudget.resolve(max_memory, w.model, dev)
    mem = PeakMemory(dev)
    try:
        nodes = None
        if w.node_threshold is None:  # the top n_nodes by atp effects (random weights: no natural threshold; untimed)
            res = attribute(
                w.model,
                w.subs,
                w.batch,
                w.metric,
                atp,
                steps=steps,
                node_threshold=float("inf"),
                edges=False,
                batch_size=batch_size,
                budget=budget,
                progress=progress,
            )
            nodes = select_nodes(w.subs, res.features, res.errors, _top_threshold(res, n_nodes), "sum")
        t0 = time.perf_counter()
        res = attribute(
            w.model,
            w.subs,
            w.batch,
            w.metric,
            ig,
            steps=steps,
            edges=True,
            batch_size=batch_size,
            node_threshold=w.node_threshold or 0.0,
            budget=budget,
            progress=progress,
            nodes=nodes,
            on_phase=mem.start,
        )
        t_all = time.perf_counter() - t0
        nodes = res.nodes
        mem.stop_phase()
        ours = {"nodes": res.timings["nodes"], "edges": res.timings["edges"], "total": t_all}
        ours_peak = {"nodes": mem.peaks.get("nodes", 0), "edges": mem.peaks.get("edges", 0)}
        ours_peak["total"] = max(ours_peak.values())
        ours_cpu = {"nodes": mem.cpu.get("nodes", 0.0), "edges": mem.cpu.get("edges", 0.0)}
        ours_cpu["total"] = ours_cpu["nodes"] + ours_cpu["edges"]
        mem.peaks.clear()
        mem.cpu.clear()
        floor_t = node_floor(w.model, w.subs, w.batch, w.metric, steps, budget, batch_size) if floor else None
        base = None
        if baseline:

            def given_grads(b):  # our IG gradients for the edges-only baseline (the same values)
                with frozen(w.model):
                    return ig(prepare(w.model, w.subs, b, w.metric, steps, "sum", budget)).grads

            t0 = time.perf_counter()
            base = baseline_discover(
                w.model,
                w.subs,
                w.batch,
                w.metric,
                steps=steps,
                batch_size=batch_size,
                nodes=nodes,
                on_phase=mem.start,
                given_grads=given_grads if baseline_edges_only else None,
            )
            base_total = time.perf_counter() - t0
            mem.stop_phase()
            base_t = {
                "nodes": base["timings"].get("nodes"),
                "edges": base["timings"].get("edges", 0.0),
                "total": None if baseline_edges_only else base_total,
            }
            base_peak = {k: mem.peaks.get(k, 0) for k in ("nodes", "edges", "total")}
            base_peak["total"] = max(base_peak.values())
            base_cpu = {"nodes": mem.cpu.get("nodes", 0.0), "edges": mem.cpu.get("edges", 0.0)}
            base_cpu["total"] = sum(mem.cpu.values())
    finally:
        mem.close()
    n_circuit = sum(len(ns) for ns in nodes.values())
    rows = []
    if w.load is not None:
        rows.append(
            {
                "name": w.name,
                "phase": "load",
                "ours_s": round(w.load["s"], 3),
                "ours_peak_gb": round(w.load["peak"] / 1e9, 3),
                "ours_cpu_s": round(w.load["cpu_s"], 3),
                "description": w.description,
                "n_examples": len(w.batch),
                "n_nodes": n_circuit,
                "steps": steps,
                "baseline_s": None,
                "ratio": None,
                "baseline_peak_gb": None,
                "max_rel_diff": None,
            }
        )
    for phase in ("nodes", "edges", "total"):
        row = {
            "name": w.name,
            "phase": phase,
            "ours_s": round(ours[phase], 3),
            "ours_peak_gb": round(ours_peak[phase] / 1e9, 3),
            "ours_cpu_s": round(ours_cpu[phase], 3),
            "description": w.description,
            "n_examples": len(w.batch),
            "n_nodes": n_circuit,
            "steps": steps,
            "threads": torch.get_num_threads(),
        }
        if phase == "nodes" and floor_t is not None:
            row.update(
                floor_s=floor_t["floor_s"],
                floor_cpu_s=floor_t["floor_cpu_s"],
                floor_parts={k: floor_t[f"{k}_s"] for k in ("activations", "encode", "passes")},
                ours_over_floor=round(ours[phase] / max(floor_t["floor_s"], 1e-9), 2),
                ours_over_floor_cpu=round(ours_cpu[phase] / max(floor_t["floor_cpu_s"], 1e-9), 2),
            )
        if base is not None and base_t[phase] is not None:
            if phase == "nodes":
                diff = _rel_diff(
                    [res.features[s.name] for s in w.subs] + [res.errors[s.name] for s in w.subs],
                    [base["features"][s.name] for s in w.subs] + [base["errors"][s.name] for s in w.subs],
                )
            elif phase == "edges":
                keys = sorted(base["edges"])
                diff = _rel_diff(
                    [res.edges.get(k, torch.zeros_like(base["edges"][k])) for k in keys],  # absent: zero
                    [base["edges"][k] for k in keys],
                )
            else:
                diff = abs(res.total / res.count - base["total"]) / max(abs(base["total"]), 1e-30)
            row.update(
                baseline_s=round(base_t[phase], 3),
                ratio=round(base_t[phase] / max(ours[phase], 1e-9), 2),
                baseline_cpu_s=round(base_cpu[phase], 3),
                cpu_ratio=round(base_cpu[phase] / max(ours_cpu[phase], 1e-9), 2),
                baseline_peak_gb=round(base_peak[phase] / 1e9, 3),
                max_rel_diff=float(f"{diff:.3g}"),
            )
        else:
            row.update(baseline_s=None, ratio=None, baseline_peak_gb=None, max_rel_diff=None)
        rows.append(row)
    return rows


def format_rows(rows: list[dict]) -> str:
    head = (
        f"{'workload':<8} {'phase':<6} {'ours s':>8} {'cpu s':>8} {'paper s':>8} {'ratio':>7} {'cpu ratio':>9} "
        f"{'ours GB':>8} {'paper GB':>9} {'max rel diff':>12} {'floor s':>8} {'x floor':>8}"
    )
    out = [head]
    fmt = lambda v, f: format("-", f.split(".")[0]) if v is None else format(v, f)  # noqa: E731
    ratio = lambda v, w: f"{'-':>{w}}" if v is None else f"{v:>{w - 1}.1f}x"  # noqa: E731
    for r in rows:
        out.append(
            f"{r['name']:<8} {r['phase']:<6} {r['ours_s']:>8.2f} {fmt(r.get('ours_cpu_s'), '>8.2f')} "
            f"{fmt(r['baseline_s'], '>8.2f')} "
            f"{ratio(r['ratio'], 7)} {ratio(r.get('cpu_ratio'), 9)} {r['ours_peak_gb']:>8.2f} {fmt(r['baseline_peak_gb'], '>9.2f')} "
            f"{fmt(r['max_rel_diff'], '>12.1e')} {fmt(r.get('floor_s'), '>8.2f')} {ratio(r.get('ours_over_floor'), 8)}"
        )
    return "\n".join(out)


def suite(name: str, quick: bool = False) -> list[tuple[str, dict, dict]]:
    """The workloads of a suite as ``(workload, its keyword arguments, run_workload's)``. ``gpu``:
    Pythia-70M-shaped with 19 SAEs of 32,768 features and Gemma-2-2B-shaped (4 layers, 12 SAEs of 16,384,
    vocabulary 256,000), both against the baseline; ``quick``: the same path at small widths and vocabularies,
    2 pairs and 2 IG steps (a smoke test on a CPU)."""
    if name != "gpu":
        raise ValueError(f"unknown suite {name!r}")
    if quick:
        small = dict(d_sae=256, n_pairs=2, n_tokens=4)
        run = dict(steps=2, n_nodes=20)
        return [("pythia", small, run), ("gemma", dict(small, n_layers=2, d_vocab=1024), run)]
    return [("pythia", dict(d_sae=32768, n_pairs=20, n_tokens=10), {}), ("gemma", dict(n_pairs=8, n_tokens=10), {})]


def machine(device, threads: str | None = None) -> dict:
    """What ran the benchmark: device name, torch version and threads (``bench.json``'s ``machine``)."""
    dev = torch.device(device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    return {"device": name, "torch": torch.__version__, "threads": threads or str(torch.get_num_threads())}


def write_json(rows: list[dict], out_dir, machine: dict | None = None) -> Path:
    from .files import strict_json, write_atomic

    path = Path(out_dir) / "bench.json"
    out = {"workloads": rows} if machine is None else {"workloads": rows, "machine": machine}
    write_atomic(path, strict_json(out, indent=1) + "\n")
    return path
