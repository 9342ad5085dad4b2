"""Which SAE features (or activation dimensions) the probe's signed logit depends on: ``ig`` under zero ablation.

With ``atp`` and ``ig`` (the methods that work from gradients) each batch runs the model once up to the probe
layer, keeps the features sparse (:func:`~sfc_plugin.attribution.context.encode`) and takes the interpolated
gradients in passes the memory budget sizes; other methods go through
:func:`~sfc_plugin.attribution.engine.zero_ablation` (dense features). Examples per batch come from the
budget too; the running sums are checkpointed, so an interrupted attribution resumes.
"""

from __future__ import annotations

import copy
import sys

import torch

from ..attribution.context import AttributionContext, encode, zero_sparse_acts
from ..attribution.engine import zero_ablation
from ..attribution.methods import atp, ig
from ..plugins import lookup
from ..splicing import Acts, Submodule, frozen, read_hooks
from .probe import pool
from .records import Labelled


def attribution_rows(model, subs: list[Submodule], width: int, budget, cap: int) -> int:
    """Examples per attribution batch: one integrated-gradients row each must fit 60 % of ``budget``."""
    if budget is None:
        return cap
    per_row = budget.forward_row(width, model.cfg.n_layers, width, grad=True, extra_d=2 * len(subs))
    return budget.rows(per_row, "probe-attribution", share=0.6, cap=cap)


def _batch_effects(model, subs, part, sign, forward, method_fn, steps, neurons, budget, tokens_per_chunk, layer):
    metric = lambda out, b: out * sign.repeat(len(out) // len(sign))  # noqa: E731
    alphas = [0.0] if method_fn is atp else [k / steps for k in range(steps)]
    hooks = {s.hook for s in subs} | {s.read_hook for s in subs}  # a transcoder's features come from its input
    with read_hooks(model, subs):
        _, cache = model.run_with_cache(part.clean, names_filter=lambda n: n in hooks, stop_at_layer=layer + 1)
    if neurons:
        clean = {s.name: Acts(s.flat(cache[s.hook]), None, None) for s in subs}
        patch = {name: Acts(torch.zeros_like(a.x), None, None) for name, a in clean.items()}
    else:
        clean = {s.name: encode(s, s.flat(cache[s.hook]), tokens_per_chunk, s.read(cache[s.read_hook])) for s in subs}
        patch = zero_sparse_acts(subs, clean)
    del cache
    ctx = AttributionContext(model, subs, part, metric, clean, patch, steps, "sum", forward=forward, budget=budget)
    grads = ctx.gradients(alphas)
    out = {}
    for s in subs:
        if neurons:
            out[s.name] = (grads[s.name] * -clean[s.name].x).sum((0, 1))
        else:
            feats, _ = ctx.submodule_effects(s, grads[s.name])
            out[s.name] = torch.sparse.sum(feats, 0).to_dense() if feats._nnz() else feats.new_zeros(s.d_sae).to_dense()
    return out


def attribute(
    model,
    subs: list[Submodule],
    data: Labelled,
    hook: str,
    probe,
    signs: torch.Tensor,
    *,
    method="ig",
    steps: int = 10,
    batch_size: int = 16,
    neurons: bool = False,
    pm=None,
    progress: bool = True,
    budget=None,
    store=None,
    key: str | None = None,
    desc: str = "probe attribution",
):
    """Mean over examples of each feature's (or, with ``neurons``, each activation dimension's) effect on
    the signed probe logit under zero ablation, summed over positions: ``{submodule: [F] or [d]}``.

    ``budget`` (a :class:`~sfc_plugin.budget.MemoryBudget`) caps the examples per batch at ``batch_size`` or
    fewer; ``store``/``key`` (:class:`~.checkpoints.Checkpoints`) reuse a finished result and resume a partial one."""
    from tqdm.auto import tqdm

    if store is not None and key is not None:
        found = store.get("attribution", key)
        if found is not None:
            return found[0]
        loop = store.loop("attribution", key)
    else:
        loop = None
    probe = copy.deepcopy(probe).to(dtype=model.cfg.dtype, device=data.y.device)
    layer = int(hook.split(".")[1])
    method_fn = lookup("method", method, pm) if isinstance(method, str) else method
    if neurons and method_fn not in (atp, ig):
        method_fn = ig  # neurons need a gradient method: integrated gradients unless atp was asked for
    fast = method_fn in (atp, ig)
    size = min(batch_size, attribution_rows(model, subs, data.batch.clean.shape[1], budget, batch_size))
    tokens_per_chunk = (
        budget.rows(budget.encode_row(max(s.d_sae for s in subs)), "SAE encoding", share=0.25) if budget else 4096
    )

    def forward(tokens, fwd_hooks, batch):
        seen = {}
        model.run_with_hooks(
            tokens, fwd_hooks=fwd_hooks + [(hook, lambda act, hook: seen.setdefault("x", act))], stop_at_layer=layer + 1
        )
        return probe(pool(seen["x"], batch))[:, 0]

    done = loop.done if loop is not None else 0
    totals: dict[str, torch.Tensor] = dict(loop.state) if loop is not None and done else {}
    n = len(data.batch)
    bar = tqdm(total=n, initial=done, desc=desc, file=sys.stderr, disable=not progress, leave=False)
    lo = 0
    with frozen(model), torch.no_grad(), bar:
        for part, _, _ in data.split(size):
            if lo < done:
                lo += len(part)
                continue
            sign = signs[lo : lo + len(part)].to(model.cfg.dtype)
            if fast:
                eff = _batch_effects(
                    model, subs, part, sign, forward, method_fn, steps, neurons, budget, tokens_per_chunk, layer
                )
            else:
                metric = lambda out, b, sign=sign: out * sign.repeat(len(out) // len(sign))  # noqa: E731
                eff = zero_ablation(
                    model, subs, part, metric, method_fn, steps=steps, sum_examples=True, forward=forward, pm=pm
                ).features
            for name, t in eff.items():
                t = t.detach().float().cpu()
                totals[name] = totals[name] + t if name in totals else t
            lo += len(part)
            bar.update(len(part))
            if loop is not None:
                loop.step(lo, totals)
    result = {name: t / n for name, t in totals.items()}
    if store is not None and key is not None:
        store.put("attribution", key, result)
    return result


def top_units(
    effects: dict[str, torch.Tensor], k: int | None = None, threshold: float | None = None, signed: bool = False
) -> list[tuple[str, int, float]]:
    """``(submodule, index, effect)`` ranked by |effect| (``signed``: most negative first, the units whose
    ablation lowers the signed logit most — those that help the probe): the top ``k`` or those above ``threshold``."""
    flat = [(name, i, float(v)) for name, t in effects.items() for i, v in enumerate(t.tolist())]
    score = (lambda x: -x[2]) if signed else (lambda x: abs(x[2]))  # noqa: E731
    flat.sort(key=lambda x: (-score(x), x[0], x[1]))
    if threshold is not None:
        flat = [x for x in flat if score(x) > threshold]
    return flat[:k] if k is not None else flat
