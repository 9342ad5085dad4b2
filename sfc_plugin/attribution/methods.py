"""Built-in attribution methods ``atp``, ``ig`` and ``exact``."""

from __future__ import annotations

import torch

from .context import AttributionContext, NodeEffects, chunks


def atp(ctx: AttributionContext) -> NodeEffects:
    """Attribution patching: ``∇m|clean · Δ`` (one forward and backward pass for all submodules)."""
    return ctx.effects_from_grads(ctx.gradients([0.0]))


def ig(ctx: AttributionContext) -> NodeEffects:
    """Integrated gradients over ``ctx.steps`` points ``α = k/N``, one submodule interpolated at a time."""
    return ctx.effects_from_grads(ctx.gradients([k / ctx.steps for k in range(ctx.steps)]))


@torch.no_grad()
def exact(ctx: AttributionContext) -> NodeEffects:
    """Activation patching, one node at a time: ``m(node patched) − m(clean)``.

    With aggregation ``sum`` a feature is patched at every position at once (effects ``[b, F]``);
    with ``none`` each (feature, position) separately (``[b, pos, F]``). Features that do not change
    between clean and patch have effect exactly 0 and are not run. Meant for small checks.
    """
    B, T = ctx.batch.clean.shape
    per_pos = ctx.aggregation == "none"
    baselines: dict[int, torch.Tensor] = {}

    def m0(n: int) -> torch.Tensor:
        """Unpatched metric in the same stacked shape as the patched passes (so an unchanged node is exactly 0)."""
        if n not in baselines:
            baselines[n] = ctx.metric_with([], repeat=n).view(n, B)
        return baselines[n]

    feats, errs = {}, {}
    for s in ctx.submodules:
        df, derr, _ = ctx.delta(s.name)
        # candidate nodes: (feature or -1 for the error, position or None for all)
        changed = df.ne(0).any(0)  # [pos, F]
        if per_pos:
            cands = [(int(j), int(t)) for t, j in changed.nonzero().tolist()] + [(-1, t) for t in range(T)]
        else:
            cands = [(int(j), None) for j in changed.any(0).nonzero().flatten().tolist()] + [(-1, None)]
        feat = torch.zeros((B, T, s.d_sae) if per_pos else (B, s.d_sae), dtype=df.dtype, device=df.device)
        err = torch.zeros((B, T) if per_pos else (B,), dtype=df.dtype, device=df.device)
        for chunk in chunks(cands, max(1, ctx.max_rows // B)):
            shift = torch.zeros((len(chunk), B, T, s.W_dec.shape[1]), dtype=df.dtype, device=df.device)
            for i, (j, t) in enumerate(chunk):
                d = derr if j < 0 else df[..., j, None] * s.W_dec[j]
                if t is None:
                    shift[i] = d
                else:
                    shift[i, :, t] = d[:, t]
            shift = shift.flatten(0, 1)
            m = ctx.metric_with(
                [(s.hook, lambda act, hook, shift=shift, s=s: act + s.unflat(shift))], repeat=len(chunk)
            )
            effect = (m.view(len(chunk), B) - m0(len(chunk))).T  # [b, chunk]
            for i, (j, t) in enumerate(chunk):
                target = err if j < 0 else feat[..., j]
                if t is None:
                    target[:] = effect[:, i]
                else:
                    target[:, t] = effect[:, i]
        feats[s.name], errs[s.name] = feat, err
    return NodeEffects(feats, errs, None)
