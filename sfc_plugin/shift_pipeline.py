"""SHIFT (paper §4): remove the SAE features a classifier should not use, and report the table.

Pipeline: train a linear probe on mean-pooled residual activations (ambiguous training data, where
the intended and the spurious attribute agree) → attribute its signed logit to SAE features (``ig``,
zero ablation, summed over positions) → rank → judges decide which to ablate → edit the model
(zero ablation, error kept) → optionally retrain the probe → accuracy table on balanced test data.
"""

from __future__ import annotations

import copy
import random
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .attribution.context import AttributionContext
from .data import Batch, tokenize
from .edit import FeatureEdit
from .errors import SFCError
from .models import saes_by_hook
from .plugins import lookup
from .splicing import Acts, Submodule, activations, build_submodules, frozen, zero_acts

ROWS = ("original", "shift", "shift_retrain", "random", "neuron_skyline", "feature_skyline", "oracle")


@dataclass
class FeatureInfo:
    id: str
    submodule: str
    feature: int
    effect: float
    contexts: list[str] = field(default_factory=list)
    label: str | None = None


@dataclass
class Decision:
    id: str
    decision: str  # "ablate" | "keep"
    judge: str
    note: str | None = None


@dataclass
class JudgeContext:
    """What a judge may consult: the model, submodules, labelled validation data, user options."""

    model: Any
    submodules: dict[str, Submodule]
    val: "Labelled"
    options: dict[str, Any]


@dataclass
class Labelled:
    """Tokenised texts with binary intended (``y``) and spurious (``z``) labels."""

    batch: Batch
    y: torch.Tensor
    z: torch.Tensor

    def split(self, size: int):
        for lo, part in zip(range(0, len(self.batch), size), self.batch.split(size)):
            yield part, self.y[lo:lo + size], self.z[lo:lo + size]


def _labelled(model, records: list[dict], intended: str, spurious: str, pos: tuple[str, str], device) -> Labelled:
    if not records:
        raise SFCError("SHIFT needs non-empty train, validation and test data")
    for i, r in enumerate(records):
        if "text" not in r or intended not in r or spurious not in r:
            raise SFCError(f"record {i} lacks one of 'text', {intended!r}, {spurious!r}")
    batch = tokenize(model, [{"clean_prefix": r["text"]} for r in records], device)
    y = torch.tensor([r[intended] == pos[0] for r in records], dtype=torch.float32, device=device)
    z = torch.tensor([r[spurious] == pos[1] for r in records], dtype=torch.float32, device=device)
    return Labelled(batch, y, z)


def _pool(act: torch.Tensor, batch: Batch) -> torch.Tensor:
    valid = batch.valid[..., None].to(act.dtype)
    return (act * valid).sum(1) / valid.sum(1)


@torch.no_grad()
def pooled(model, data: Labelled, hook: str, edit: FeatureEdit | None = None, batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled (padding-masked) activations at ``hook``: ``[n, d_model]``, with ``edit`` applied."""
    out = []
    for part, _, _ in data.split(batch_size):
        seen = {}
        hooks = (edit.hooks() if edit else []) + [(hook, lambda act, hook: seen.setdefault("x", act))]
        model.run_with_hooks(part.clean, fwd_hooks=hooks, stop_at_layer=int(hook.split(".")[1]) + 1)
        out.append(_pool(seen["x"], part).float())
    return torch.cat(out)


def train_probe(X: torch.Tensor, y: torch.Tensor, seed: int = 0, epochs: int = 400, lr: float = 0.01) -> torch.nn.Linear:
    """A logistic-regression probe (BCE, full-batch Adam, seeded) on standardised inputs."""
    gen = torch.Generator().manual_seed(seed)
    probe = torch.nn.Linear(X.shape[1], 1)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(probe.weight.shape, generator=gen) * 0.01)
        probe.bias.zero_()
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    X, y = X.detach().float().cpu(), y.detach().float().cpu()
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(probe(X)[:, 0], y).backward()
        opt.step()
    return probe.eval()


def accuracy_row(name: str, probe, X: torch.Tensor, data: Labelled) -> dict[str, Any]:
    """Intended-attribute, spurious-attribute and worst-group accuracy of ``probe`` (same direction)."""
    with torch.no_grad():
        pred = (probe(X.float().cpu())[:, 0] > 0).float()
    y, z = data.y.cpu(), data.z.cpu()
    groups = [(pred[(y == a) & (z == b)] == a).float().mean().item() for a in (0, 1) for b in (0, 1) if ((y == a) & (z == b)).any()]
    return {"name": name, "profession_acc": (pred == y).float().mean().item(),
            "gender_acc": (pred == z).float().mean().item(), "worst_group_acc": min(groups)}


def attribute(model, subs: list[Submodule], data: Labelled, hook: str, probe, signs: torch.Tensor, *, method="ig",
              steps: int = 10, batch_size: int = 16, neurons: bool = False, pm=None, progress: bool = True):
    """Mean over examples of each feature's (or, with ``neurons``, each activation dimension's) effect on
    the signed probe logit under zero ablation, summed over positions: ``{submodule: [F] or [d]}``."""
    from tqdm.auto import tqdm

    probe = copy.deepcopy(probe).to(dtype=model.cfg.dtype, device=data.y.device)
    layer = int(hook.split(".")[1])
    method_fn = lookup("method", method, pm) if isinstance(method, str) else method
    totals: dict[str, torch.Tensor] = {}

    def forward(tokens, fwd_hooks, batch):
        seen = {}
        model.run_with_hooks(tokens, fwd_hooks=fwd_hooks + [(hook, lambda act, hook: seen.setdefault("x", act))],
                             stop_at_layer=layer + 1)
        return probe(_pool(seen["x"], batch))[:, 0]

    lo = 0
    parts = list(data.split(batch_size))
    with frozen(model), torch.no_grad():
        for part, _, _ in tqdm(parts, desc="probe attribution", file=sys.stderr, disable=not progress, leave=False):
            sign = signs[lo:lo + len(part)].to(model.cfg.dtype)
            lo += len(part)
            metric = lambda out, b, sign=sign: out * sign.repeat(len(out) // len(sign))  # noqa: E731
            clean = activations(model, subs, part.clean)
            patch = ({s.name: Acts(torch.zeros_like(clean[s.name].x), clean[s.name].f, clean[s.name].err) for s in subs}
                     if neurons else zero_acts(subs, clean))
            ctx = AttributionContext(model, subs, part, metric, clean, patch, steps, "sum", forward=forward)
            if neurons:
                grads = ctx.gradients([k / steps for k in range(steps)])
                eff = {s.name: (grads[s.name] * -clean[s.name].x).sum((0, 1)) for s in subs}
            else:
                eff = {name: (t.sum((0, 1)) if t.dim() == 3 else t.sum(0)) for name, t in method_fn(ctx).features.items()}
            for name, t in eff.items():
                totals[name] = totals.get(name, 0) + t.detach()
    return {name: t / len(data.batch) for name, t in totals.items()}


def top_units(effects: dict[str, torch.Tensor], k: int | None = None, threshold: float | None = None) -> list[tuple[str, int, float]]:
    """``(submodule, index, effect)`` ranked by |effect|: the top ``k`` or those above ``threshold``."""
    flat = [(name, i, float(v)) for name, t in effects.items() for i, v in enumerate(t.tolist())]
    flat.sort(key=lambda x: (-abs(x[2]), x[0], x[1]))
    if threshold is not None:
        flat = [x for x in flat if abs(x[2]) > threshold]
    return flat[:k] if k is not None else flat


@torch.no_grad()
def top_contexts(model, sub: Submodule, feature: int, data: Labelled, n: int = 3, width: int = 6) -> list[str]:
    """The ``n`` strongest activations of a feature in ``data``: the preceding words, the token in [brackets]."""
    best: list[tuple[float, int, int]] = []
    lo = 0
    for part, _, _ in data.split(64):
        _, cache = model.run_with_cache(part.clean, names_filter=sub.hook)
        f = sub.encode(cache[sub.hook])[..., feature] * part.valid
        for (b, t), v in zip(f.nonzero().tolist(), f[f != 0].tolist()):
            best.append((v, lo + b, t))
        lo += len(part)
    best.sort(key=lambda x: -x[0])
    out = []
    for v, b, t in best[:n]:
        toks = [model.tokenizer.decode([i]) for i in data.batch.clean[b, max(1, t - width):t + 1].tolist()]
        out.append(f"{' '.join(toks[:-1])} [{toks[-1]}] ({v:.2f})")
    return out


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
    if callable(judge):
        from .judges import callable_judge

        judge_fn = callable_judge(judge)
    else:
        judge_fn = lookup("judge", judge, pm)
    device = next(model.parameters()).device
    tr, te, va = (_labelled(model, d, intended, spurious, (pos_intended, pos_spurious), device) for d in (train, test, val))
    ctx = JudgeContext(model, by_name, va, dict(judge_options or {}))
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


__all__ = ["shift", "FeatureInfo", "Decision", "JudgeContext", "train_probe", "pooled", "attribute", "accuracy_row",
           "format_table", "public", "ROWS"]
