"""``discover``: data → activations → node effects → node selection → edge effects → Circuit."""

from __future__ import annotations

import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from . import validation as check
from .attribution.context import NodeEffects, prepare, state_bytes
from .attribution.edges import NodeSet, edge_effects
from .attribution.forward import head
from .budget import MemoryBudget
from .circuit import Circuit, Edge, Node, node_id
from .data import pair_fingerprint, resolve_records, tokenize
from .distributed import reduce_edge_sums, reduce_node_sums
from .errors import SFCError
from .metrics import resolve_metric
from .plugins import lookup
from .splicing import Submodule, activations, frozen
from .world import world_args

AGGREGATIONS = ("sum", "none")


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False)


def _aggregate(t: torch.Tensor, has_pos: bool, aggregation: str, what: str) -> torch.Tensor:
    """Sum over examples, and over positions for ``sum`` (dense result; ``t`` may be sparse COO)."""
    if aggregation == "none" and not has_pos:
        raise SFCError(f"{what} gives effects summed over positions; aggregation 'none' needs per-position effects")
    dims = (0, 1) if aggregation == "sum" and has_pos else (0,)
    if t.is_sparse:
        return torch.sparse.sum(t, dims).to_dense() if t._nnz() else t.new_zeros(t.shape[len(dims) :]).to_dense()
    return t.sum(dims)


@dataclass
class EffectSums:
    """Effects summed over examples, and how many examples: the one place a data-parallel run sums
    across processes (every field is a plain sum, so an all-reduce of each gives the global sums)."""

    features: dict[str, torch.Tensor] = field(default_factory=dict)
    errors: dict[str, torch.Tensor] = field(default_factory=dict)
    edges: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)
    total: float = 0.0
    count: int = 0

    @staticmethod
    def _add(target: dict, key, value: torch.Tensor) -> None:
        target[key] = target[key] + value if key in target else value

    def add_nodes(self, name: str, features: torch.Tensor, errors: torch.Tensor) -> None:
        self._add(self.features, name, features.detach())
        self._add(self.errors, name, errors.detach())

    def add_edges(self, weights: dict[tuple[str, str], torch.Tensor]) -> None:
        """Add one batch's edge weights in place (a pair absent from a batch is zero there)."""
        for key, w in weights.items():
            if key in self.edges:
                self.edges[key].add_(w.detach())
            else:
                self.edges[key] = _wide(w.detach())


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


@dataclass
class Attribution:
    """What :func:`attribute` found: mean effects, the selected nodes, mean edge weights, timings."""

    features: dict[str, torch.Tensor]  # mean feature effects per submodule, [F] or [pos, F]
    errors: dict[str, torch.Tensor]  # mean error effects, [] or [pos]
    nodes: dict[str, NodeSet]
    per_sub: dict[str, list[Node]]
    edges: dict[
        tuple[str, str], torch.Tensor
    ]  # mean weights [n_down, n_up]; a pair without a direct path is absent (zero)
    total: float  # summed over examples (the caller divides by count)
    count: int
    timings: dict[str, float]
    batch_size: int


def attribute(
    model,
    subs: list[Submodule],
    full,
    metric_fn,
    method_fn,
    *,
    method_name: str = "ig",
    steps: int = 10,
    node_threshold: float = 0.1,
    aggregation: str = "sum",
    edges: bool = True,
    batch_size: int | None = None,
    budget: MemoryBudget | None = None,
    progress: bool = False,
    nodes: dict[str, NodeSet] | None = None,
    on_phase: Callable[[str], None] | None = None,
    group=None,
) -> Attribution:
    """The discovery path on tokenized pairs ``full``: node effects, node selection, edge weights.

    ``nodes`` (optional) fixes the node sets instead of selecting them by ``node_threshold``;
    ``on_phase(name)`` is called as the ``nodes`` and ``edges`` phases start (for benchmarks);
    ``group`` (a :class:`sfc_plugin.distributed.Group`): this rank takes every world-th batch and the
    sums are all-reduced, so every rank gets what one process would.
    """
    on_phase = on_phase or (lambda name: None)
    budget = budget or MemoryBudget.resolve(None, model)
    width = int(full.last.max()) + 1
    # an activation pass keeps ~2 d_model-sized tensors per SAE per token, clean and patch, plus the forward
    per_example = budget.forward_row(width, budget.shape.n_layers, 1, grad=False, extra_d=6 * len(subs))
    size = budget.rows(per_example, "activation", share=0.3, cap=int(batch_size or 16))
    batches = list(full.split(size))
    if group is not None:
        batches = group.mine(batches)
    timings: dict[str, float] = {}

    def context(b):
        return prepare(model, subs, b, metric_fn, int(steps), aggregation, budget)

    sums = EffectSums()
    kept: list = []  # prepared contexts reused by the edges pass, as many as fit in 30% of the budget
    grads: list[dict[str, torch.Tensor] | None] = []
    held = 0
    with frozen(model):
        on_phase("nodes")
        t0 = time.perf_counter()
        for b in _progress(batches, len(batches), f"nodes ({method_name})", progress):
            ctx = context(b)
            eff: NodeEffects = method_fn(ctx)
            if not isinstance(eff, NodeEffects):
                raise SFCError(f"method {method_name!r} returned {type(eff).__name__}, expected NodeEffects")
            for s in subs:
                fe, ee = eff.features[s.name], eff.errors[s.name]
                sums.add_nodes(
                    s.name,
                    _aggregate(_wide(fe), fe.dim() == 3, aggregation, method_name),
                    _aggregate(_wide(ee), ee.dim() == 2, aggregation, method_name),
                )
            m_clean, m_patch = ctx.metric_values
            if m_patch is not None:
                sums.total += float((m_patch - m_clean).sum())
            sums.count += len(b)
            grads.append(eff.grads)
            size_ctx = state_bytes(ctx)
            keep = edges and held + size_ctx <= 0.3 * budget.bytes
            held += size_ctx if keep else 0
            kept.append(ctx if keep else None)
            del ctx, eff
        timings["nodes"] = time.perf_counter() - t0
        # ---- the all-reduce point for data-parallel runs: node sums and the total ----
        if group is not None:
            sums.features, sums.errors, sums.total = reduce_node_sums(group, sums.features, sums.errors, sums.total)
            sums.count = len(full)
        feat_eff = {k: v / sums.count for k, v in sums.features.items()}
        err_eff = {k: v / sums.count for k, v in sums.errors.items()}
        total = sums.total
        for s in subs:  # NaN would silently drop nodes (NaN > t is False)
            fe, ee = feat_eff[s.name], err_eff[s.name]
            fe = fe.coalesce().values() if getattr(fe, "is_sparse", False) else torch.as_tensor(fe)
            if not (bool(torch.isfinite(fe).all()) and bool(torch.isfinite(torch.as_tensor(ee)).all())):
                raise SFCError(
                    f"attribution gave non-finite effects at {s.name} ({s.hook}): the model, its SAE or the "
                    f"metric produce NaN/inf on this data"
                )
        if nodes is None:
            nodes = _select(subs, feat_eff, err_eff, node_threshold, aggregation)
        per_sub = {s.name: _circuit_nodes(s, nodes[s.name], feat_eff[s.name], err_eff[s.name]) for s in subs}
        on_phase("edges")
        t0 = time.perf_counter()
        if edges and any(len(ns) for ns in nodes.values()):
            for i, b in enumerate(_progress(batches, len(batches), "edges", progress)):
                ctx = kept[i] if kept[i] is not None else context(b)  # recomputed when it did not fit
                g = grads[i] if grads[i] is not None else ctx.gradients([0.0])
                sums.add_edges(edge_effects(model, subs, b, metric_fn, ctx.clean, ctx.patch, g, nodes, budget=budget))
                kept[i] = grads[i] = None
        timings["edges"] = time.perf_counter() - t0
        weights = reduce_edge_sums(group, sums.edges)  # ---- the all-reduce point for the edge sums ----
        means = {key: w.div_(sums.count) for key, w in weights.items()}  # in place: one copy of the weights
    return Attribution(feat_eff, err_eff, nodes, per_sub, means, total, sums.count, timings, size)


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
    name. Nodes are SAE features and error terms whose
    mean indirect effect (clean → patch; zero ablation without patch prompts) has magnitude above
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
    n, total, per_sub = res.count, res.total, res.per_sub
    if not math.isfinite(total):
        raise SFCError(f"the metric is not finite on this data (m(patch) - m(clean) = {total})")
    circuit_nodes = [Node("y", None, None, None, "metric", None, None, None if full.patch is None else total / n)]
    circuit_nodes += [node for s in subs for node in per_sub[s.name]]
    ids = {name: [node.id for node in sub_nodes] for name, sub_nodes in per_sub.items()}
    circuit_edges = []
    if edges:
        means = dict(res.edges)
        last = subs[-1].name  # its direct path to the metric is its whole effect: edges to y = node effects
        means[(last, "y")] = torch.tensor([[node.effect for node in per_sub[last]]])
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
    prov["prompt"] = _prompt_info(model, subs, full, circuit_nodes)
    prov.update(provenance or {})
    if "timings" not in prov:  # the only field that varies between runs (a caller may pass None for none)
        prov["timings"] = {"seconds": round(time.perf_counter() - started, 3)}
    if prov["timings"] is None:
        del prov["timings"]
    return Circuit(
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
