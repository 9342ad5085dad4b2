"""``discover``: resolve the model, SAEs and data, run the attribution engine, assemble the Circuit."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from typing import Any

import torch

from . import validation as check
from .attribution.edges import NodeSet
from .attribution.engine import AGGREGATIONS, Attribution, EffectSums, attribute  # noqa: F401  (their old home)
from .attribution.forward import head
from .budget import MemoryBudget
from .circuit import Circuit, Edge, Node, node_id
from .data import pair_fingerprint, resolve_records, tokenize
from .errors import SFCError
from .metrics import resolve_metric
from .paths import health_warnings
from .plugins import lookup
from .splicing import Submodule, activations
from .world import world_args


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("sfc-plugin", "torch", "sae-lens", "transformer-lens"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def _circuit_nodes(sub: Submodule, ns: NodeSet, feat_eff: torch.Tensor, err_eff: torch.Tensor) -> list[Node]:
    nodes = []
    for j, t in ns.entries():
        effect = (err_eff if j is None else feat_eff[..., j])[() if t is None else t]
        nodes.append(
            Node(
                node_id(sub.name, j, t),
                sub.name,
                sub.hook,
                sub.layer,
                "error" if j is None else "feature",
                j,
                t,
                float(effect),
            )
        )
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
    info: dict[str, Any] = {
        "text": str(full.records[0].get("clean_prefix", "")),
        "token_ids": ids.tolist(),
        "tokens": [tok.decode([t]) for t in ids.tolist()] if tok is not None else None,
    }
    with torch.no_grad():
        resid = model(ids[None], stop_at_layer=model.cfg.n_layers)  # unembed the last position only
        probs = torch.softmax(head(model, resid[:, -1:]).float()[0, -1], -1)
        acts = activations(model, subs, ids[None])
    for key, answers in (("answer", full.clean_answer), ("patch_answer", full.patch_answer)):
        if answers is not None:
            a = int(answers[0])
            info.update(
                {key: tok.decode([a]) if tok is not None else None, f"{key}_id": a, f"{key}_prob": float(probs[a])}
            )
    node_acts = {}
    for n in nodes:
        if n.kind == "feature":
            f = acts[n.submodule].f[0, :, int(n.feature)]
            node_acts[n.id] = float(f.sum() if n.position is None else f[n.position])
    info["node_activations"] = node_acts
    return info


def discover(
    model,
    saes=None,
    data=None,
    *,
    metric: str | Callable | None = None,
    method: str | Callable = "ig",
    steps: int = 10,
    node_threshold: float = 0.1,
    edge_threshold: float = 0.01,
    aggregation: str = "sum",
    edges: bool = True,
    batch_size: int | None = None,
    device: str | None = None,
    dtype=None,
    pm=None,
    n_examples: int | None = None,
    progress: bool = True,
    provenance: dict | None = None,
    distributed: bool = False,
    allow_unk: bool = False,
    max_memory=None,
) -> Circuit:
    """Discover the sparse feature circuit of ``model`` for the behaviour in ``data``.

    ``discover(world, data)`` with a :class:`~sfc_plugin.world.World`, or ``discover(model, saes, data)``:
    ``model`` a HookedTransformer, a TransformerLens name or a model directory, ``saes`` ``{hook_name: SAE}``
    or a sequence of SAELens SAEs or SAE specs (loaded with :meth:`World.load <sfc_plugin.world.World.load>`,
    ``device`` and ``dtype``). ``data``: a sequence of pair records, a JSON-lines path or a registered dataset
    name. Nodes are SAE features and error terms whose mean indirect effect (clean → patch; zero ablation without patch prompts) has magnitude above
    ``node_threshold``; edges between them above ``edge_threshold``. With ``distributed`` (under
    torchrun, after :func:`sfc_plugin.distributed.init`) each rank takes every world-th batch and the
    effect sums are all-reduced: every rank returns the same circuit as one process would. Words outside
    the tokenizer's vocabulary are errors unless ``allow_unk``. ``max_memory`` (``"4GB"``, bytes; default:
    half the GPU's free memory; on CPU at most 2 GB) bounds the working memory: every pass is chunked to fit it.
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
    method_fn, method_name = (
        (method, getattr(method, "__name__", "custom")) if callable(method) else (lookup("method", method, pm), method)
    )
    world, data = world_args(model, saes, data, device=device, dtype=dtype)
    model, subs = world.model, world.submodules
    records = resolve_records(data, n_examples, pm)
    dev = next(model.parameters()).device
    budget = MemoryBudget.resolve(max_memory, model, dev)
    full = tokenize(model, records, dev, allow_unk=allow_unk)
    if aggregation == "none" and int(full.last.min()) != int(full.last.max()):
        raise SFCError("aggregation 'none' needs prompts of equal token length")
    metric_fn, metric_name = resolve_metric(metric, full.patch_answer is not None, pm)
    from .distributed import current

    group = current() if distributed else None
    res = attribute(
        model,
        subs,
        full,
        metric_fn,
        method_fn,
        method_name=method_name,
        steps=steps,
        node_threshold=node_threshold,
        aggregation=aggregation,
        edges=edges,
        batch_size=batch_size,
        budget=budget,
        progress=progress,
        group=group,
    )
    n, total = res.count, res.total
    per_sub = {s.name: _circuit_nodes(s, res.nodes[s.name], res.features[s.name], res.errors[s.name]) for s in subs}
    if not math.isfinite(total):
        raise SFCError(f"the metric is not finite on this data (m(patch) - m(clean) = {total})")
    circuit_nodes = [Node("y", None, None, None, "metric", None, None, None if full.patch is None else total / n)]
    circuit_nodes += [node for s in subs for node in per_sub[s.name]]
    ids = {name: [node.id for node in sub_nodes] for name, sub_nodes in per_sub.items()}
    circuit_edges = []
    if edges:
        means = dict(res.edges)
        last = subs[-1].name  # its direct path to the metric is its whole effect: edges to y = node effects
        means.setdefault((last, "y"), torch.tensor([[node.effect for node in per_sub[last]]]))
        for (u, d), w in means.items():
            down = ["y"] if d == "y" else ids[d]
            for i, j in (w.abs() > edge_threshold).nonzero().tolist():
                circuit_edges.append(Edge(ids[u][j], down[i], float(w[i, j])))
    circuit_edges.sort(key=lambda e: (e.target, e.source))
    prov = {
        **world.provenance(),  # model, SAEs, their sources and fingerprints
        "block": "parallel" if getattr(model.cfg, "parallel_attn_mlp", False) else "sequential",
        "dataset": str(data) if isinstance(data, str) else "(in memory)",
        "n_examples": n,
        "ablation": "zero" if full.patch is None else "patch",
        "seed": None,
        "versions": _versions(),
    }
    if aggregation == "none" and model.tokenizer is not None:  # column labels for position-aligned figures
        prov["tokens"] = [model.tokenizer.decode([t]) for t in full.clean[0, : int(full.last[0]) + 1].tolist()]
    prov["n_layers"] = int(model.cfg.n_layers)
    prov["pair_hashes"] = [pair_fingerprint(r) for r in records]  # lets evaluation refuse these pairs
    prov["metric_inputs"] = _metric_inputs(subs[-1].name, res)  # what the kept nodes' share is measured against
    prov["prompt"] = _prompt_info(model, subs, full, circuit_nodes)
    prov.update(provenance or {})
    if "timings" not in prov:  # the only field that varies between runs (a caller may pass None for none)
        prov["timings"] = {"seconds": round(time.perf_counter() - started, 3)}
    if prov["timings"] is None:
        del prov["timings"]
    circuit = Circuit(
        circuit_nodes,
        circuit_edges,
        None if full.patch is None else total / n,
        metric_name,
        method_name,
        int(steps) if method_name == "ig" else None,
        aggregation,
        float(node_threshold),
        float(edge_threshold),
        prov,
    )
    circuit.warnings = health_warnings(circuit)
    return circuit


def _metric_inputs(last: str, res) -> dict[str, Any]:
    """The submodule whose nodes feed the metric directly and the sum of the effects of *all* its nodes (kept or
    not): the share of it that a circuit's nodes carry says how much of the behaviour the circuit reaches."""
    feats = res.features[last]
    total = float((feats.coalesce().values() if feats.is_sparse else feats).sum()) + float(res.errors[last].sum())
    return {"submodule": last, "effect": total}
