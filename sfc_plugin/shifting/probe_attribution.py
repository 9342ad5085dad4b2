"""Which SAE features (or activation dimensions) the probe's signed logit depends on: ``ig`` under zero ablation."""

from __future__ import annotations

import copy
import sys

import torch

from ..attribution.engine import zero_ablation
from ..attribution.methods import ig
from ..splicing import Submodule, frozen
from .probe import pool
from .records import Labelled


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
):
    """Mean over examples of each feature's (or, with ``neurons``, each activation dimension's) effect on
    the signed probe logit under zero ablation, summed over positions: ``{submodule: [F] or [d]}``."""
    from tqdm.auto import tqdm

    probe = copy.deepcopy(probe).to(dtype=model.cfg.dtype, device=data.y.device)
    layer = int(hook.split(".")[1])
    totals: dict[str, torch.Tensor] = {}

    def forward(tokens, fwd_hooks, batch):
        seen = {}
        model.run_with_hooks(
            tokens, fwd_hooks=fwd_hooks + [(hook, lambda act, hook: seen.setdefault("x", act))], stop_at_layer=layer + 1
        )
        return probe(pool(seen["x"], batch))[:, 0]

    lo = 0
    parts = list(data.split(batch_size))
    with frozen(model), torch.no_grad():
        for part, _, _ in tqdm(parts, desc="probe attribution", file=sys.stderr, disable=not progress, leave=False):
            sign = signs[lo : lo + len(part)].to(model.cfg.dtype)
            lo += len(part)
            metric = lambda out, b, sign=sign: out * sign.repeat(len(out) // len(sign))  # noqa: E731
            eff = zero_ablation(
                model,
                subs,
                part,
                metric,
                ig if neurons else method,  # neurons: always integrated gradients
                steps=steps,
                units="neurons" if neurons else "features",
                sum_examples=True,
                forward=forward,
                pm=pm,
            )
            for name, t in eff.features.items():
                totals[name] = totals.get(name, 0) + t.detach()
    return {name: t / len(data.batch) for name, t in totals.items()}


def top_units(
    effects: dict[str, torch.Tensor], k: int | None = None, threshold: float | None = None
) -> list[tuple[str, int, float]]:
    """``(submodule, index, effect)`` ranked by |effect|: the top ``k`` or those above ``threshold``."""
    flat = [(name, i, float(v)) for name, t in effects.items() for i, v in enumerate(t.tolist())]
    flat.sort(key=lambda x: (-abs(x[2]), x[0], x[1]))
    if threshold is not None:
        flat = [x for x in flat if abs(x[2]) > threshold]
    return flat[:k] if k is not None else flat
