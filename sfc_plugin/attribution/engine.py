"""The attribution loop: node effects, node selection and edge weights over a dataset of prompt pairs.

:func:`attribute` runs these steps (:func:`sfc_plugin.discover` calls it, then builds the Circuit):

1. Batches: sized from the memory budget (an activation pass per example); under torch.distributed each
   rank takes every world-th batch.
2. Node effects, per batch: :func:`~sfc_plugin.attribution.context.prepare` runs the clean and the patch
   input once each (sparse SAE features, the residual entering each block, the metric's values); the
   method (``atp``, ``ig``, ``exact`` or a plugin's) gives per-example :class:`NodeEffects`; they are
   summed over examples (and positions, for aggregation ``sum``) into :class:`EffectSums`. A prepared
   batch is kept for step 5 while the kept ones fit in 30 % of the budget.
3. Means: node sums and the total effect are all-reduced across ranks, divided by the number of examples,
   and checked to be finite.
4. Node selection: :func:`select_nodes` keeps the features and error terms with ``|effect| > node_threshold``
   (unless the caller fixes the node sets).
5. Edge weights, per batch: :func:`~sfc_plugin.attribution.edges.edge_effects` between the selected nodes,
   from the method's gradients (clean gradients for methods that give none), on the kept batch or a
   re-prepared one; summed. A method carrying ``edge_effects`` (``linear``: circuit-tracer's direct effects)
   gives its own edges instead.
6. Edge means: the edge sums are all-reduced and divided by the number of examples.

:func:`zero_ablation` is the per-batch entry point for callers that want each example's effects of
zero-ablating every node (clusters' behaviour vectors, SHIFT's probe attribution), not a circuit.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .. import threads
from ..budget import MemoryBudget
from ..distributed import reduce_edge_sums, reduce_node_sums
from ..errors import SFCError
from ..splicing import Acts, Submodule, activations, frozen, zero_acts
from .context import AttributionContext, NodeEffects, prepare, state_bytes
from .edges import NodeSet, edge_effects
from .methods import atp, ig

AGGREGATIONS = ("sum", "none")


def _progress(iterable, total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, disable=not enabled, leave=False)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """Effects accumulate in at least float32, whatever the model's dtype (bfloat16 and float16 models)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def aggregate(t: torch.Tensor, has_pos: bool, aggregation: str, what: str) -> torch.Tensor:
    """Sum over examples, and over positions for ``sum`` (dense result; ``t`` may be sparse COO).

    ``has_pos``: ``t`` is per position (``[b, pos, ...]``); ``what`` names the method in the error raised when
    aggregation ``none`` gets effects already summed over positions."""
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


def select_nodes(
    subs: list[Submodule],
    features: dict[str, torch.Tensor],
    errors: dict[str, torch.Tensor],
    threshold: float,
    aggregation: str = "sum",
) -> dict[str, NodeSet]:
    """The nodes of each submodule whose mean effect has magnitude above ``threshold``.

    ``features``: ``{submodule: [F]}`` (``[pos, F]`` for aggregation ``none``); ``errors``: ``[]`` (``[pos]``)."""
    nodes = {}
    for s in subs:
        fe, ee = features[s.name], errors[s.name]
        if aggregation == "sum":
            feat = (fe.abs() > threshold).nonzero().flatten()
            nodes[s.name] = NodeSet(feat, None, [None] if abs(float(ee)) > threshold else [])
        else:
            pos, feat = (fe.abs() > threshold).nonzero().unbind(1)
            nodes[s.name] = NodeSet(feat, pos, (ee.abs() > threshold).nonzero().flatten().tolist())
    return nodes


@dataclass
class Attribution:
    """What :func:`attribute` found: mean effects, the selected nodes, mean edge weights, timings."""

    features: dict[str, torch.Tensor]  # mean feature effects per submodule, [F] or [pos, F]
    errors: dict[str, torch.Tensor]  # mean error effects, [] or [pos]
    nodes: dict[str, NodeSet]
    edges: dict[tuple[str, str], torch.Tensor]  # mean weights [n_down, n_up]; a pair without a direct path is absent
    total: float  # m(patch) − m(clean) summed over examples (divide by count for the mean)
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
    """Node effects, node selection and edge weights of tokenized pairs ``full`` (a :class:`~sfc_plugin.data.Batch`).

    ``method_fn(ctx) -> NodeEffects`` is an attribution method; ``nodes`` (optional) fixes the node sets instead
    of selecting them by ``node_threshold``; ``on_phase(name)`` is called as the ``nodes`` and ``edges`` phases
    start (for benchmarks); ``group`` (a :class:`sfc_plugin.distributed.Group`): this rank takes every world-th
    batch and the sums are all-reduced, so every rank gets what one process would.
    """
    on_phase = on_phase or (lambda name: None)
    budget = budget or MemoryBudget.resolve(None, model)
    # 1. batches: an activation pass keeps ~2 d_model-sized tensors per SAE per token, clean and patch, plus the forward
    width = int(full.last.max()) + 1
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
        # 2. node effects
        on_phase("nodes")
        t0 = time.perf_counter()
        for b in _progress(batches, len(batches), f"nodes ({method_name})", progress):
            threads.recheck()
            ctx = context(b)
            eff: NodeEffects = method_fn(ctx)
            if not isinstance(eff, NodeEffects):
                raise SFCError(f"method {method_name!r} returned {type(eff).__name__}, expected NodeEffects")
            for s in subs:
                fe, ee = eff.features[s.name], eff.errors[s.name]
                sums.add_nodes(
                    s.name,
                    aggregate(_wide(fe), fe.dim() == 3, aggregation, method_name),
                    aggregate(_wide(ee), ee.dim() == 2, aggregation, method_name),
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
        # 3. means (the all-reduce point for data-parallel runs: node sums and the total)
        if group is not None:
            sums.features, sums.errors, sums.total = reduce_node_sums(group, sums.features, sums.errors, sums.total)
            sums.count = len(full)
        feat_eff = {k: v / sums.count for k, v in sums.features.items()}
        err_eff = {k: v / sums.count for k, v in sums.errors.items()}
        for s in subs:  # NaN would silently drop nodes (NaN > t is False)
            fe, ee = feat_eff[s.name], err_eff[s.name]
            fe = fe.coalesce().values() if getattr(fe, "is_sparse", False) else torch.as_tensor(fe)
            if not (bool(torch.isfinite(fe).all()) and bool(torch.isfinite(torch.as_tensor(ee)).all())):
                raise SFCError(
                    f"attribution gave non-finite effects at {s.name} ({s.hook}): the model, its SAE or the "
                    f"metric produce NaN/inf on this data"
                )
        # 4. node selection
        if nodes is None:
            nodes = select_nodes(subs, feat_eff, err_eff, node_threshold, aggregation)
        # 5. edge weights
        on_phase("edges")
        t0 = time.perf_counter()
        own_edges = getattr(method_fn, "edge_effects", None)  # a method with edges of its own convention (linear)
        if edges and any(len(ns) for ns in nodes.values()):
            for i, b in enumerate(_progress(batches, len(batches), "edges", progress)):
                threads.recheck()
                ctx = kept[i] if kept[i] is not None else context(b)  # recomputed when it did not fit
                if own_edges is not None:
                    w = own_edges(model, subs, b, metric_fn, ctx.clean, ctx.patch, nodes, budget=budget)
                else:
                    g = grads[i] if grads[i] is not None else ctx.gradients([0.0])
                    w = edge_effects(model, subs, b, metric_fn, ctx.clean, ctx.patch, g, nodes, budget=budget)
                sums.add_edges(w)
                kept[i] = grads[i] = None
        timings["edges"] = time.perf_counter() - t0
        # 6. edge means (the all-reduce point for the edge sums)
        weights = reduce_edge_sums(group, sums.edges)
        means = {key: w.div_(sums.count) for key, w in weights.items()}  # in place: one copy of the weights
    return Attribution(feat_eff, err_eff, nodes, means, sums.total, sums.count, timings, size)


UNITS = ("features", "neurons", "gradients")


def zero_ablation(
    model,
    subs: list[Submodule],
    batch,
    metric,
    method="atp",
    *,
    steps: int = 10,
    units: str = "features",
    sum_examples: bool = False,
    forward: Callable | None = None,
    pm=None,
) -> NodeEffects:
    """Effects on ``metric`` of zero-ablating every node of one ``batch``, summed over positions.

    ``units``: ``"features"`` (SAE features, ``f → 0``, and error terms, ``ε → 0``: ``features[s]`` ``[b, F]``,
    ``errors[s]`` ``[b]``), ``"neurons"`` (each dimension of the activation, ``x → 0``: ``features[s]`` ``[b, d]``,
    no errors; ``atp`` or ``ig`` only) or ``"gradients"`` (no effects, only ``grads``). ``grads[s]`` is ``∇_x m``
    per position ``[b, pos, d]`` (the mean over ``ig``'s points) when the method works from gradients.
    ``method``: a registered method name or function; ``atp`` and ``ig`` are computed one submodule at a time,
    other methods through an :class:`AttributionContext`. ``sum_examples``: sum over examples too (``[F]``).
    ``forward(tokens, fwd_hooks, batch)``: what ``metric`` reads instead of the logits (e.g. a probe's output).
    Activations are dense: for batches of contexts, not for circuits over many pairs (see :func:`attribute`).
    """
    from ..plugins import lookup

    if units not in UNITS:
        raise SFCError(f"unknown units {units!r} (known: {', '.join(UNITS)})")
    method_fn = lookup("method", method, pm) if isinstance(method, str) else method
    alphas = {atp: [0.0], ig: [k / steps for k in range(steps)]}.get(method_fn)
    if alphas is None and units != "features":
        raise SFCError(f"units {units!r} need a gradient method (atp or ig)")

    def total(t: torch.Tensor, has_pos: bool) -> torch.Tensor:
        dims = ((0,) if sum_examples else ()) + ((1,) if has_pos else ())
        return t.sum(dims) if dims else t

    with frozen(model), torch.no_grad():
        clean = activations(model, subs, batch.clean)
        if units == "neurons":
            patch = {name: Acts(torch.zeros_like(a.x), a.f, a.err) for name, a in clean.items()}
        else:
            patch = zero_acts(subs, clean)
        ctx = AttributionContext(model, subs, batch, metric, clean, patch, steps, "sum", forward=forward)
        if alphas is None:  # another method: its effects, summed here
            eff = method_fn(ctx)
            return NodeEffects(
                {k: total(t, t.dim() == 3) for k, t in eff.features.items()},
                {k: total(t, t.dim() == 2) for k, t in eff.errors.items()},
                eff.grads,
            )
        grads = ctx.gradients(alphas)
        feats, errs = {}, {}
        for s in subs:  # one submodule at a time: one [b, pos, F] product alive
            if units == "neurons":
                feats[s.name] = total(grads[s.name] * -clean[s.name].x, True)
            elif units == "features":
                fe, ee = ctx.submodule_effects(s, grads[s.name])
                feats[s.name], errs[s.name] = total(fe, True), total(ee, True)
    return NodeEffects(feats, errs, grads)
