"""SHIFT (paper §4): remove the SAE features a classifier should not use, and report the table.

Pipeline: train a linear probe on mean-pooled residual activations (ambiguous training data, where
the intended and the spurious attribute agree) → attribute its signed logit to SAE features (``ig``,
zero ablation, summed over positions) → rank → judges decide which to ablate → edit the model
(zero ablation, error kept) → optionally retrain the probe → accuracy table on balanced test data.
"""

from __future__ import annotations

import random
from typing import Callable

from ..errors import SFCError
from ..models import saes_by_hook
from ..plugins import lookup
from ..splicing import Submodule, build_submodules
from .edit import FeatureEdit
from .judges import callable_judge
from .probe import accuracy_row, labelled, pooled, train_probe
from .probe_attribution import attribute, top_units
from .records import FeatureInfo, JudgeContext, judge_uses

ROWS = ("original", "shift", "shift_retrain", "random", "neuron_skyline", "feature_skyline", "oracle")


def _edit_from(subs: dict[str, Submodule], units, neurons: bool = False) -> FeatureEdit:
    edit = FeatureEdit(subs)
    target = edit.neurons if neurons else edit.ablate
    for name, i, _ in units:
        target.setdefault(name, []).append(i)
    return edit


def shift(model, saes, train: list[dict], test: list[dict], val: list[dict], *, layer: int | None = None,
          judge: str | Callable = "auto", top_k: int | None = 50, threshold: float | None = None, method: str = "ig",
          steps: int = 10, intended: str = "profession", spurious: str = "gender", seed: int = 0,
          batch_size: int = 16, judge_options: dict | None = None, probe=None, pm=None, progress: bool = True) -> dict:
    """Run SHIFT and the paper's comparison rows: the ``shift.json`` structure (see :func:`public`) with
    the :class:`FeatureEdit` under ``"edit"`` and the probes under ``"probe"``/``"retrained_probe"``.

    ``train`` is ambiguous (intended and spurious attributes agree), ``val`` and ``test`` balanced;
    records are ``{"text", intended, spurious}``. ``val`` serves the ``auto`` judge, the skylines and
    the oracle probe; ``test`` only the table. ``probe``: your own module over pooled activations.
    """
    subs_all = build_submodules(model, saes_by_hook(saes))
    layer = max(s.layer for s in subs_all) if layer is None else int(layer)
    if not 0 <= layer < model.cfg.n_layers:
        raise SFCError(f"probe layer {layer} is not a layer of the model (0..{model.cfg.n_layers - 1})")
    hook = f"blocks.{layer}.hook_resid_post"
    subs = [s for s in subs_all if s.layer <= layer]
    by_name = {s.name: s for s in subs}
    values = sorted({r.get(intended) for r in train})
    if len(values) != 2:
        raise SFCError(f"SHIFT needs exactly two values of {intended!r} in the training data, got {values}")
    pos_intended = values[1]
    paired = [r[spurious] for r in train if r[intended] == pos_intended]
    pos_spurious = max(sorted(set(paired)), key=paired.count)
    if callable(judge) and not hasattr(judge, "uses"):
        judge_fn = callable_judge(judge)
    else:
        judge_fn = lookup("judge", judge, pm) if isinstance(judge, str) else judge
    device = next(model.parameters()).device
    tr, te, va = (labelled(model, d, intended, spurious, (pos_intended, pos_spurious), device) for d in (train, test, val))
    # a judge sees the labelled validation data only if it says it uses it
    ctx = JudgeContext(model, by_name, va if "balanced_labels" in judge_uses(judge_fn) else None,
                       dict(judge_options or {}), texts=tr.batch)
    judge_fn([], ctx)  # a misconfigured judge fails now, before the attribution runs
    kw = dict(method=method, steps=steps, batch_size=batch_size, pm=pm, progress=progress)

    X_tr, X_te, X_va = pooled(model, tr, hook), pooled(model, te, hook), pooled(model, va, hook)
    probe = probe if probe is not None else train_probe(X_tr, tr.y, seed)
    effects = attribute(model, subs, tr, hook, probe, 2 * tr.y - 1, **kw)
    ranked = top_units(effects, top_k, threshold)
    infos = [FeatureInfo(f"{name}/{j}", name, j, eff) for name, j, eff in ranked]
    decisions = {d.id: d for d in judge_fn(infos, ctx)}
    missing = [i.id for i in infos if i.id not in decisions]
    if missing:
        raise SFCError(f"judge {getattr(judge_fn, '__name__', judge)!r} gave no decision for feature {missing[0]!r}")
    chosen = [(i.submodule, i.feature, i.effect) for i in infos if decisions[i.id].decision == "ablate"]
    k = len(chosen)
    edit = _edit_from(by_name, chosen)

    rows = [accuracy_row("original", probe, X_te, te)]
    X_te_edit = pooled(model, te, hook, edit)
    rows.append(accuracy_row("shift", probe, X_te_edit, te))
    retrained = train_probe(pooled(model, tr, hook, edit), tr.y, seed)
    rows.append(accuracy_row("shift_retrain", retrained, X_te_edit, te))
    rng = random.Random(seed)
    pool = [(s.name, j) for s in subs for j in range(s.d_sae)]
    rand = _edit_from(by_name, [(n, j, 0.0) for n, j in rng.sample(pool, k)])
    rows.append(accuracy_row("random", probe, pooled(model, te, hook, rand), te))
    gender_probe = train_probe(X_va, va.z, seed)
    neuron_eff = attribute(model, subs, va, hook, gender_probe, 2 * va.z - 1, neurons=True, **kw)
    rows.append(accuracy_row("neuron_skyline", probe, pooled(model, te, hook, _edit_from(by_name, top_units(neuron_eff, k), neurons=True)), te))
    feat_eff = attribute(model, subs, va, hook, gender_probe, 2 * va.z - 1, **kw)
    rows.append(accuracy_row("feature_skyline", probe, pooled(model, te, hook, _edit_from(by_name, top_units(feat_eff, k))), te))
    rows.append(accuracy_row("oracle", train_probe(X_va, va.y, seed), X_te, te))
    return {
        "rows": rows,
        "features": [{"id": i.id, "effect": i.effect, "decision": decisions[i.id].decision, "judge": decisions[i.id].judge,
                      **({"note": decisions[i.id].note} if decisions[i.id].note else {})} for i in infos],
        "probe_hook": hook, "intended": [intended, pos_intended], "spurious": [spurious, pos_spurious],
        "n_ablated": k, "seed": seed, "edit": edit, "probe": probe, "retrained_probe": retrained,
    }


def format_table(result: dict) -> str:
    lines = [f"{'':<16}{'profession':>11}{'gender':>9}{'worst group':>13}"]
    for r in result["rows"]:
        lines.append(f"{r['name']:<16}{100 * r['profession_acc']:>10.1f}%{100 * r['gender_acc']:>8.1f}%{100 * r['worst_group_acc']:>12.1f}%")
    return "\n".join(lines)


def public(result: dict) -> dict:
    """The JSON-serialisable form of a :func:`shift` result (``shift.json``): the edit as a dict, no probes."""
    out = {k: v for k, v in result.items() if k not in ("probe", "retrained_probe")}
    out["edit"] = result["edit"].to_dict()
    return out


__all__ = ["shift", "format_table", "public", "ROWS"]
