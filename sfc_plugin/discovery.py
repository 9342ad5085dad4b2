"""``discover``: data → activations → node effects → node selection → edge effects → Circuit."""

from __future__ import annotations

import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from . import validation as check
from .attribution.context import AttributionContext, NodeEffects
from .attribution.edges import NodeSet, edge_effects
from .circuit import Circuit, Edge, Node, node_id
from .data import pair_fingerprint, resolve_records, tokenize
from .errors import SFCError
from .fingerprints import model_fingerprint
from .metrics import resolve_metric
from .models import resolve_world, sae_label
from .plugins import lookup
from .splicing import Submodule, activations, build_submodules, frozen, zero_acts

AGGREGATIONS = ("sum", "none")


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False)


def _aggregate(t: torch.Tensor, has_pos: bool, aggregation: str, what: str) -> torch.Tensor:
    """Sum over examples, and over positions for ``sum``."""
    if aggregation == "sum":
        return (t.sum(1) if has_pos else t).sum(0)
    if not has_pos:
        raise SFCError(f"{what} gives effects summed over positions; aggregation 'none' needs per-position effects")
    return t.sum(0)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Effects accumulate in at least float32, whatever the model's dtype (bfloat16 and float16 models)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("sfc-plugin", "torch", "sae-lens", "transformer-lens"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _sae_info(sub: Submodule) -> dict[str, Any]:
    from .fingerprints import sae_fingerprint

    meta = getattr(sub.sae.cfg, "metadata", None)
    info = {"submodule": sub.name, "hook": sub.hook, "d_sae": sub.d_sae,
            "architecture": sub.sae.cfg.architecture(), "spec": sae_label(sub.sae, sub.hook),
            "fingerprint": sae_fingerprint(sub.sae)}
    info.update(getattr(sub.sae, "sfc_spec", None) or {})
    for key in ("release", "sae_id", "neuronpedia_id", "model_name"):
        value = getattr(meta, key, None) if meta is not None else None
        if value is not None:
            info[key] = value
    return info


def _select(subs, feat_eff, err_eff, threshold: float, aggregation: str) -> dict[str, NodeSet]:
    nodes = {}
    for s in subs:
        fe, ee = feat_eff[s.name], err_eff[s.name]
        if aggregation == "sum":
            feat = (fe.abs() > threshold).nonzero().flatten()
            nodes[s.name] = NodeSet(feat, None, [None] if abs(float(ee)) > threshold else [])
        else:
            pos, feat = (fe.abs() > threshold).nonzero().unbind(1)
            nodes[s.name] = NodeSet(feat, pos, (ee.abs() > threshold).nonzero().flatten().tolist())
    return nodes


def _circuit_nodes(sub: Submodule, ns: NodeSet, feat_eff: torch.Tensor, err_eff: torch.Tensor) -> list[Node]:
    nodes = []
    for j, t in ns.entries():
        effect = (err_eff if j is None else feat_eff[..., j])[() if t is None else t]
        nodes.append(Node(node_id(sub.name, j, t), sub.name, sub.hook, sub.layer, "error" if j is None else "feature",
                          j, t, float(effect)))
    return nodes


def _prompt_info(model, subs, full, nodes: list[Node]) -> dict[str, Any]:
    """The first example as the circuit's representative prompt (for viewers such as circuit-tracer's).

    ``{"text", "tokens", "token_ids", "answer", "answer_id", "answer_prob", ...}`` (``patch_answer*`` too when
    given) and ``node_activations``: each feature node's clean activation on this prompt, at the node's
    position, or summed over the prompt's positions for position-summed nodes.
    """
    last = int(full.last[0])
    ids = full.clean[0, : last + 1]
    tok = model.tokenizer
    info: dict[str, Any] = {"text": str(full.records[0].get("clean_prefix", "")), "token_ids": ids.tolist(),
                            "tokens": [tok.decode([t]) for t in ids.tolist()] if tok is not None else None}
    with torch.no_grad():
        probs = torch.softmax(model(ids[None]).float()[0, -1], -1)
        acts = activations(model, subs, ids[None])
    for key, answers in (("answer", full.clean_answer), ("patch_answer", full.patch_answer)):
        if answers is not None:
            a = int(answers[0])
            info.update({key: tok.decode([a]) if tok is not None else None, f"{key}_id": a, f"{key}_prob": float(probs[a])})
    node_acts = {}
    for n in nodes:
        if n.kind == "feature":
            f = acts[n.submodule].f[0, :, int(n.feature)]
            node_acts[n.id] = float(f.sum() if n.position is None else f[n.position])
    info["node_activations"] = node_acts
    return info


def discover(model, saes, data, *, metric: str | Callable | None = None, method: str | Callable = "ig", steps: int = 10,
             node_threshold: float = 0.1, edge_threshold: float = 0.01, aggregation: str = "sum", edges: bool = True,
             batch_size: int | None = None, device: str | None = None, dtype=None, pm=None, n_examples: int | None = None,
             progress: bool = True, provenance: dict | None = None, distributed: bool = False,
             allow_unk: bool = False) -> Circuit:
    """Discover the sparse feature circuit of ``model`` for the behaviour in ``data``.

    ``model`` is a HookedTransformer, a TransformerLens name or a model directory; ``saes`` is
    ``{hook_name: SAE}`` or a sequence of SAELens SAEs or SAE specs; ``data`` a sequence of pair records,
    a JSON-lines path or a registered dataset name. Nodes are SAE features and error terms whose
    mean indirect effect (clean → patch; zero ablation without patch prompts) has magnitude above
    ``node_threshold``; edges between them above ``edge_threshold``. With ``distributed`` (under
    torchrun, after :func:`sfc_plugin.distributed.init`) each rank takes every world-th batch and the
    effect sums are all-reduced: every rank returns the same circuit as one process would. Words outside
    the tokenizer's vocabulary are errors unless ``allow_unk``.
    """
    started = time.perf_counter()
    if aggregation not in AGGREGATIONS:
        raise SFCError(f"unknown aggregation {aggregation!r} (known: sum, none)")
    steps = check.integer(steps, "steps", minimum=1)
    node_threshold = check.threshold(node_threshold, "node_threshold")
    edge_threshold = check.threshold(edge_threshold, "edge_threshold")
    batch_size = check.integer(batch_size, "batch_size", minimum=1, optional=True)
    n_examples = check.integer(n_examples, "n_examples", minimum=1, optional=True)
    device = check.device(device)  # before anything is moved
    method_fn, method_name = (method, getattr(method, "__name__", "custom")) if callable(method) else (lookup("method", method, pm), method)
    model_spec = model
    model, saes = resolve_world(model, saes, device=device, dtype=dtype)
    subs = build_submodules(model, saes)
    records = resolve_records(data, n_examples, pm)
    dev = next(model.parameters()).device
    full = tokenize(model, records, dev, allow_unk=allow_unk)
    if aggregation == "none" and int(full.last.min()) != int(full.last.max()):
        raise SFCError("aggregation 'none' needs prompts of equal token length")
    metric_fn, metric_name = resolve_metric(metric, full.patch_answer is not None, pm)
    batches = list(full.split(int(batch_size or 16)))
    n = len(full)
    from .distributed import current, reduce_edge_sums, reduce_node_sums

    group = current() if distributed else None
    if group is not None:
        batches = group.mine(batches)  # data parallel: sums are all-reduced below, n stays the global count

    def contexts():
        for b in batches:
            clean = activations(model, subs, b.clean)
            patch = activations(model, subs, b.patch) if b.patch is not None else zero_acts(subs, clean)
            yield b, AttributionContext(model, subs, b, metric_fn, clean, patch, int(steps), aggregation)

    feat_eff = {s.name: 0.0 for s in subs}
    err_eff = {s.name: 0.0 for s in subs}
    grads: list[dict[str, torch.Tensor] | None] = []
    total = 0.0
    with frozen(model):
        for b, ctx in _progress(contexts(), len(batches), f"nodes ({method_name})", progress):
            eff: NodeEffects = method_fn(ctx)
            if not isinstance(eff, NodeEffects):
                raise SFCError(f"method {method_name!r} returned {type(eff).__name__}, expected NodeEffects")
            for s in subs:
                fe, ee = eff.features[s.name], eff.errors[s.name]
                feat_eff[s.name] = feat_eff[s.name] + _aggregate(_wide(fe), fe.dim() == 3, aggregation, method_name).detach()
                err_eff[s.name] = err_eff[s.name] + _aggregate(_wide(ee), ee.dim() == 2, aggregation, method_name).detach()
            grads.append(eff.grads)
            if b.patch is not None:
                with torch.no_grad():
                    total += float((metric_fn(model(b.patch), b) - metric_fn(model(b.clean), b)).sum())
        feat_eff, err_eff, total = reduce_node_sums(group, feat_eff, err_eff, total)
        feat_eff = {k: v / n for k, v in feat_eff.items()}
        err_eff = {k: v / n for k, v in err_eff.items()}
        for s in subs:  # NaN would silently drop nodes (NaN > t is False)
            if not (bool(torch.isfinite(torch.as_tensor(feat_eff[s.name])).all())
                    and bool(torch.isfinite(torch.as_tensor(err_eff[s.name])).all())):
                raise SFCError(f"attribution gave non-finite effects at {s.name} ({s.hook}): the model, its SAE or the "
                               f"metric produce NaN/inf on this data")
        if not math.isfinite(total):
            raise SFCError(f"the metric is not finite on this data (m(patch) - m(clean) = {total})")
        nodes = _select(subs, feat_eff, err_eff, node_threshold, aggregation)
        per_sub = {s.name: _circuit_nodes(s, nodes[s.name], feat_eff[s.name], err_eff[s.name]) for s in subs}
        weights: dict[tuple[str, str], torch.Tensor] = {}
        if edges and any(len(ns) for ns in nodes.values()):
            for (b, ctx), g in _progress(zip(contexts(), grads), len(batches), "edges", progress):
                g = g if g is not None else ctx.gradients([0.0])
                for key, w in edge_effects(model, subs, b, metric_fn, ctx.clean, ctx.patch, g, nodes).items():
                    w = _wide(w)
                    weights[key] = weights[key] + w if key in weights else w
        weights = reduce_edge_sums(group, weights)
    circuit_nodes = [Node("y", None, None, None, "metric", None, None, None if full.patch is None else total / n)]
    circuit_nodes += [node for s in subs for node in per_sub[s.name]]
    ids = {name: [node.id for node in sub_nodes] for name, sub_nodes in per_sub.items()}
    circuit_edges = []
    if edges:
        means = {key: w / n for key, w in weights.items()}
        last = subs[-1].name  # its direct path to the metric is its whole effect: edges to y = node effects
        means[(last, "y")] = torch.tensor([[node.effect for node in per_sub[last]]])
        for (u, d), w in means.items():
            down = ["y"] if d == "y" else ids[d]
            for i, j in (w.abs() > edge_threshold).nonzero().tolist():
                circuit_edges.append(Edge(ids[u][j], down[i], float(w[i, j])))
    circuit_edges.sort(key=lambda e: (e.target, e.source))
    prov = {
        "model": getattr(model.cfg, "model_name", None),
        "model_spec": str(model_spec) if isinstance(model_spec, (str, Path)) else None,
        "dtype": str(model.cfg.dtype).removeprefix("torch."),
        "block": "parallel" if getattr(model.cfg, "parallel_attn_mlp", False) else "sequential",
        "saes": [_sae_info(s) for s in subs],
        "dataset": str(data) if isinstance(data, str) else "(in memory)",
        "n_examples": n,
        "ablation": "zero" if full.patch is None else "patch",
        "seed": None,
        "versions": _versions(),
        "model_fingerprint": model_fingerprint(model),
    }
    if aggregation == "none" and model.tokenizer is not None:  # column labels for position-aligned figures
        prov["tokens"] = [model.tokenizer.decode([t]) for t in full.clean[0, : int(full.last[0]) + 1].tolist()]
    sources = [sae_label(s.sae) for s in subs if getattr(s.sae, "sfc_spec", None)]
    if sources:
        prov["sae_sources"] = sources
    prov["n_layers"] = int(model.cfg.n_layers)
    prov["pair_hashes"] = [pair_fingerprint(r) for r in records]  # lets evaluation refuse these pairs
    prov["prompt"] = _prompt_info(model, subs, full, circuit_nodes)
    prov.update(provenance or {})
    if "timings" not in prov:  # the only field that varies between runs (a caller may pass None for none)
        prov["timings"] = {"seconds": round(time.perf_counter() - started, 3)}
    if prov["timings"] is None:
        del prov["timings"]
    return Circuit(circuit_nodes, circuit_edges, None if full.patch is None else total / n, metric_name, method_name,
                   int(steps) if method_name == "ig" else None, aggregation, float(node_threshold), float(edge_threshold), prov)
