"""The context an attribution method receives, and what it returns.

A method is ``fn(ctx: AttributionContext) -> NodeEffects``. Effects are per example; the feature
tensor is ``[b, pos, F]`` (per position) or ``[b, F]`` (already summed over positions), dense or a
sparse COO tensor; errors ``[b, pos]`` or ``[b]``. ``grads`` (``∇_x m`` per submodule, ``[b, pos, d]``)
feed edge attribution; a method that leaves it ``None`` gets the clean-input gradients there.

Activations come from :func:`prepare`: one pass per input, features kept sparse
(:class:`~sfc_plugin.attribution.sparse.SparseFeatures`), the residual entering every block cached so
IG rows start at the interpolated submodule's block, and the metric's clean/patch values kept for the
total effect. Dense ``Acts`` (as :func:`sfc_plugin.splicing.activations` makes) work too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..data import Batch
from ..splicing import Acts, Submodule, read_hooks
from .forward import collect, metric_positions, run_metric, start_of
from .sparse import SparseFeatures

DEFAULT_MAX_ROWS = 2048  # rows per pass when no memory budget is given


@dataclass
class NodeEffects:
    features: dict[str, torch.Tensor]
    errors: dict[str, torch.Tensor]
    grads: dict[str, torch.Tensor] | None = None


def chunks(seq: list, size: int):
    """``seq`` in consecutive slices of at most ``size``."""
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _dense(f) -> torch.Tensor:
    return f.dense() if isinstance(f, SparseFeatures) else f


@dataclass
class AttributionContext:
    """One batch of examples with clean and patch (or zero-ablation) activations at every submodule."""

    model: object
    submodules: list[Submodule]
    batch: Batch
    metric: Callable
    clean: dict[str, Acts]
    patch: dict[str, Acts]
    steps: int = 10
    aggregation: str = "sum"
    max_rows: int = DEFAULT_MAX_ROWS
    forward: Callable | None = None  # (tokens, fwd_hooks, batch) -> what the metric reads; default: logits
    resid: dict[int, torch.Tensor] | None = None  # clean residual entering block l (enables start_at_layer)
    budget: object | None = None  # a MemoryBudget: sizes every pass (else ``max_rows`` rows)
    metric_values: tuple[torch.Tensor, torch.Tensor | None] | None = field(default=None, repr=False)  # (clean, patch)

    def delta(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(Δf, Δε, Δx)`` of a submodule, patch minus clean (``Δf`` dense)."""
        c, p = self.clean[name], self.patch[name]
        return _dense(p.f) - _dense(c.f), p.err - c.err, p.x - c.x

    def metric_with(self, fwd_hooks, repeat: int = 1) -> torch.Tensor:
        """Metric per row of the clean batch stacked ``repeat`` times, run with ``fwd_hooks``."""
        batch = self.batch.repeat(repeat) if repeat > 1 else self.batch
        if self.forward:
            return self.metric(self.forward(batch.clean, fwd_hooks, batch), batch)
        return run_metric(self.model, self.metric, batch, fwd_hooks)

    # ---- gradients -------------------------------------------------------------------------------
    def _start(self, sub: Submodule) -> tuple[int | None, bool]:
        start, input_mode = start_of(sub.hook, self.model.cfg)
        if self.forward is not None or self.resid is None or start is None or start not in self.resid:
            return None, False
        return start, input_mode

    def rows_per_pass(self, start: int | None) -> int:
        """Rows (submodule, α, example) per gradient pass starting at block ``start``, by the memory budget."""
        B = len(self.batch)
        if self.budget is None:
            return max(self.max_rows, 1)
        T = self.batch.clean.shape[1]
        layers = self.model.cfg.n_layers - (start or 0)
        metric_pos = 1 if metric_positions(self.metric) == "last" and self.forward is None else T
        per_row = self.budget.forward_row(T, layers, metric_pos, grad=True, extra_d=2 * len(self.submodules))
        rows = self.budget.rows(per_row, "integrated-gradients", share=0.6)
        return rows if self.forward is None else max(B, rows // B * B)  # custom forwards see whole batches

    def gradients(self, alphas: list[float]) -> dict[str, torch.Tensor]:
        """Mean over ``alphas`` of ``∇_x m`` at ``x = x_clean + α Δx``, per submodule ``[b, pos, d]``.

        Each submodule is interpolated on its own while everything downstream is recomputed; rows
        (submodule, α, example) that start at the same block are stacked along the batch dimension, as
        many per pass as the memory budget allows. ``alphas == [0]`` is one clean pass for every submodule.
        """
        B = len(self.batch)
        alphas = [float(a) for a in alphas]
        total = {s.name: torch.zeros_like(self.clean[s.name].x) for s in self.submodules}
        n_all, n_zero = len(alphas), sum(a == 0 for a in alphas)
        if n_zero:  # α = 0 is the clean run for every submodule: one pass gives all of them
            size = self.rows_per_pass(None)
            for lo in range(0, B, size):
                ex = torch.arange(lo, min(B, lo + size), device=self.batch.clean.device)
                rows = torch.arange(len(ex), device=ex.device)
                plan = [(s, rows, torch.zeros(len(ex))) for s in self.submodules]
                self._accumulate(None, ex, plan, total)
            if n_zero == n_all:
                return total
            total = {k: v * n_zero for k, v in total.items()} if n_zero > 1 else total
            alphas = [a for a in alphas if a != 0]
        groups: dict[int | None, list[Submodule]] = {}
        for s in self.submodules:
            groups.setdefault(self._start(s)[0], []).append(s)
        for start, subs in groups.items():
            rows = [(i, a, e) for i in range(len(subs)) for a in alphas for e in range(B)]
            for chunk in chunks(rows, self.rows_per_pass(start)):
                ex = torch.tensor([e for _, _, e in chunk], device=self.batch.clean.device)
                plan = []
                for i, s in enumerate(subs):
                    sel = [r for r, (j, _, _) in enumerate(chunk) if j == i]
                    if sel:
                        plan.append((s, torch.tensor(sel, device=ex.device), torch.tensor([chunk[r][1] for r in sel])))
                self._accumulate(start, ex, plan, total)
        return {k: v / n_all for k, v in total.items()}

    def _accumulate(self, start: int | None, ex: torch.Tensor, plan, total: dict[str, torch.Tensor]) -> None:
        """One forward/backward over rows ``ex`` (example per row); ``plan``: ``(sub, rows, alphas)``."""
        leaves, hooks = [], []
        inp = self.resid[start][ex] if start is not None else None
        for s, rows, coef in plan:
            c, p = self.clean[s.name].x, self.patch[s.name].x
            e = ex[rows]
            shift = coef.to(c.dtype).to(c.device)[:, None, None] * (p[e] - c[e])
            leaf = torch.zeros_like(shift, requires_grad=True)
            leaves.append(leaf)
            if start is not None and self._start(s)[1]:
                inp = inp.index_add(0, rows, shift + leaf)
            else:
                hooks.append(
                    (
                        s.hook,
                        lambda act, hook, rows=rows, add=shift, leaf=leaf, s=s: act.index_add(
                            0, rows, s.unflat(add + leaf)
                        ),
                    )
                )
        with torch.enable_grad():
            if self.forward is not None:
                n = len(ex) // len(self.batch)
                m = self.metric(
                    self.forward(self.batch.clean.repeat(n, 1), hooks, self.batch.repeat(n) if n > 1 else self.batch),
                    self.batch.repeat(n) if n > 1 else self.batch,
                ).sum()
            else:
                m = run_metric(self.model, self.metric, self.batch.select(ex), hooks, start, inp).sum()
            grads = torch.autograd.grad(m, leaves, allow_unused=True)
        for (s, rows, _), g in zip(plan, grads):
            if g is not None:
                total[s.name].index_add_(0, ex[rows], g)

    # ---- effects ---------------------------------------------------------------------------------
    def effects_from_grads(self, grads: dict[str, torch.Tensor]) -> NodeEffects:
        """Per-position effects ``(∇_x m W_decᵀ) ⊙ Δf`` and ``∇_x m · Δε`` from activation gradients.

        With sparse features only active entries are computed, and features come back as a sparse COO
        tensor (``[b, F]`` summed over positions for aggregation ``sum``, else ``[b, pos, F]``).
        """
        feats, errs = {}, {}
        for s in self.submodules:
            feats[s.name], errs[s.name] = self.submodule_effects(s, grads[s.name])
        return NodeEffects(feats, errs, grads)

    def submodule_effects(self, s: Submodule, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, errors)`` of one submodule from its gradient ``g`` (see :meth:`effects_from_grads`)."""
        c, p = self.clean[s.name], self.patch[s.name]
        if isinstance(c.f, SparseFeatures):
            delta = p.f.minus(c.f) if isinstance(p.f, SparseFeatures) else SparseFeatures.from_dense(p.f).minus(c.f)
            vals = delta.project(g, s.W_dec) * delta.val
            b, T, F = delta.shape
            tok = delta.token_index()
            if self.aggregation == "sum":
                index, size = torch.stack([tok // T, delta.idx]), (b, F)
            else:
                index, size = torch.stack([tok // T, tok % T, delta.idx]), (b, T, F)
            feats = torch.sparse_coo_tensor(index, vals, size, check_invariants=False)
        else:
            feats = (g @ s.W_dec.T) * (_dense(p.f) - c.f)
        return feats, (g * (p.err - c.err)).sum(-1)


# ---- activations ---------------------------------------------------------------------------------
def encode(sub: Submodule, x: torch.Tensor, tokens_per_chunk: int, read: torch.Tensor | None = None) -> Acts:
    """``Acts`` with sparse features of ``read`` (default ``x``); the dense encoder output exists for one chunk of
    tokens at a time (whole sequences for kinds that are not token-wise)."""
    read = x if read is None else read
    if sub.tokenwise:
        flat = read.reshape(-1, read.shape[-1])
        parts = [
            SparseFeatures.from_dense(sub.encode(flat[lo : lo + tokens_per_chunk])[None])
            for lo in range(0, flat.shape[0], tokens_per_chunk)
        ]
    else:
        step = max(1, tokens_per_chunk // read.shape[1])
        parts = [SparseFeatures.from_dense(sub.encode(read[lo : lo + step])) for lo in range(0, read.shape[0], step)]
    shape = (*x.shape[:-1], sub.d_sae)
    f = parts[0] if len(parts) == 1 else SparseFeatures.cat_tokens(parts, shape)
    f = SparseFeatures(f.idx, f.val, f.ptr, shape)
    return Acts(x, f, x - f.decode(sub.W_dec, sub.b_dec))


def zero_sparse_acts(subs: list[Submodule], clean: dict[str, Acts]) -> dict[str, Acts]:
    """Zero ablation with sparse features: ``f = 0, ε = 0``, so ``x = decode(0)``."""
    return {
        s.name: Acts(
            s.b_dec.expand_as(clean[s.name].x).clone(),
            SparseFeatures.empty(clean[s.name].f.shape, clean[s.name].x.dtype, clean[s.name].x.device),
            torch.zeros_like(clean[s.name].err),
        )
        for s in subs
    }


@torch.no_grad()
def prepare(
    model, subs: list[Submodule], batch: Batch, metric, steps: int = 10, aggregation: str = "sum", budget=None
) -> AttributionContext:
    """Clean and patch activations of ``batch`` (one pass each), sparse features, cached residuals, metric values."""
    hooks = list(dict.fromkeys([s.hook for s in subs] + [s.read_hook for s in subs]))
    layers = sorted({start_of(s.hook, model.cfg)[0] for s in subs} - {None})
    tokens_per_chunk = (
        budget.rows(budget.encode_row(max(s.d_sae for s in subs)), "SAE encoding", share=0.25) if budget else 4096
    )

    def run(tokens):
        with read_hooks(model, subs):
            acts, resid, value = collect(model, hooks, layers, batch, tokens, metric)
        return (
            {s.name: encode(s, s.flat(acts[s.hook]), tokens_per_chunk, s.read(acts[s.read_hook])) for s in subs},
            resid,
            value,
        )

    clean, resid, m_clean = run(batch.clean)
    if batch.patch is not None:
        patch, _, m_patch = run(batch.patch)
    else:
        patch, m_patch = zero_sparse_acts(subs, clean), None
    return AttributionContext(
        model,
        subs,
        batch,
        metric,
        clean,
        patch,
        int(steps),
        aggregation,
        resid=resid,
        budget=budget,
        metric_values=(m_clean, m_patch),
    )


def state_bytes(ctx: AttributionContext) -> int:
    """Bytes a prepared context holds (activations, sparse features, residuals)."""
    n = 0
    for acts in (ctx.clean, ctx.patch):
        for a in acts.values():
            n += a.x.numel() * a.x.element_size() + a.err.numel() * a.err.element_size()
            n += a.f.nbytes() if isinstance(a.f, SparseFeatures) else a.f.numel() * a.f.element_size()
    n += sum(t.numel() * t.element_size() for t in (ctx.resid or {}).values())
    return n
