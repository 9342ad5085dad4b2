"""Built-in SHIFT feature judges (``file``, ``interactive``, ``auto``), registered through ``sfc_feature_judges``.

Each judge says what information it uses in its ``uses`` attribute (see ``records.USES``); only judges
that use ``"balanced_labels"`` are given the labelled validation data.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ..errors import SFCError
from ..plugins import hookimpl
from .records import Decision

CHOICES = ("ablate", "keep")


def read_decisions(path: str | Path) -> dict[str, str]:
    """``{feature id: "ablate" | "keep"}`` from JSON (a mapping, a list of ``{id, decision}``, or a
    ``shift.json`` with ``features``) or CSV with columns ``id,decision``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SFCError(f"decisions file {str(path)!r} cannot be read ({exc.strerror})") from None
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        if rows and not {"id", "decision"} <= set(rows[0]):
            raise SFCError(f"decisions file {str(path)!r} needs CSV columns 'id' and 'decision'")
        pairs = [(r["id"], r["decision"]) for r in rows]
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SFCError(f"decisions file {str(path)!r} is not valid JSON ({exc.msg})") from None
        data = data.get("features", data) if isinstance(data, dict) else data
        pairs = list(data.items()) if isinstance(data, dict) else [(d.get("id"), d.get("decision")) for d in data]
    out = {}
    for fid, decision in pairs:
        decision = str(decision).strip().lower()
        if decision not in CHOICES:
            raise SFCError(f"decisions file {str(path)!r}: feature {fid!r} has decision {decision!r} (use ablate or keep)")
        out[str(fid)] = decision
    return out


def file_judge(features, ctx):
    """Decisions from ``ctx.options["decisions"]`` (JSON/CSV); features it does not list are kept."""
    path = ctx.options.get("decisions")
    if not path:
        raise SFCError("judge 'file' needs a decisions file (--decisions FILE)")
    table = read_decisions(path)
    return [Decision(f.id, table.get(f.id, "keep"), f"file:{path}" if f.id in table else f"file:{path} (not listed: keep)")
            for f in features]


def interactive_judge(features, ctx):
    """A terminal review: each feature's label, top contexts and effect; ``a`` ablate, ``k`` keep,
    ``q`` keep the rest. Reads ``ctx.options["input"]`` (default stdin), writes ``ctx.options["output"]``."""
    from .evidence import top_contexts

    inp, out = ctx.options.get("input", sys.stdin), ctx.options.get("output", sys.stderr)
    decisions, rest = [], None
    for n, f in enumerate(features, 1):
        if rest is None:
            sub = ctx.submodules[f.submodule]
            print(f"\n[{n}/{len(features)}] {f.id}  effect {f.effect:+.4f}" + (f"  label: {f.label}" if f.label else ""), file=out)
            for line in top_contexts(ctx.model, sub, f.feature, ctx.texts):
                print(f"    {line}", file=out)
            while True:
                print("  [a]blate / [k]eep / [q]uit (keep the rest)? ", end="", file=out, flush=True)
                key = (inp.readline() or "q").strip().lower()[:1]
                if key in ("a", "k", "q"):
                    break
            if key == "q":
                rest = "keep"
        choice = rest or ("ablate" if key == "a" else "keep")
        decisions.append(Decision(f.id, choice, "interactive" if rest is None else "interactive (quit: keep)"))
    return decisions


def auto_judge(features, ctx):
    """Ablate features whose mean activation predicts the spurious attribute better than the intended
    one on the labelled validation data (|Pearson r| with each binary label), and at least
    ``ctx.options["min_r"]`` (default 0.1) — features unrelated to both are kept."""
    import torch

    by_sub: dict[str, list] = {}
    for f in features:
        by_sub.setdefault(f.submodule, []).append(f)
    scores = {}
    with torch.no_grad():
        for name, feats in by_sub.items():
            sub = ctx.submodules[name]
            idx = torch.tensor([f.feature for f in feats], device=sub.W_dec.device)
            acts = []
            for part, _, _ in ctx.val.split(64):
                _, cache = ctx.model.run_with_cache(part.clean, names_filter=sub.hook)
                a = sub.encode(cache[sub.hook])[..., idx] * part.valid[..., None]
                acts.append(a.sum(1) / part.valid.sum(1, keepdim=True))
            acts = torch.cat(acts).double()
            for j, f in enumerate(feats):
                scores[f.id] = (_corr(acts[:, j], ctx.val.y), _corr(acts[:, j], ctx.val.z))
    min_r = float(ctx.options.get("min_r", 0.1))
    return [Decision(f.id, "ablate" if abs(rs) > abs(ri) and abs(rs) >= min_r else "keep", "auto",
                     f"r(intended)={ri:+.2f} r(spurious)={rs:+.2f}") for f in features for ri, rs in [scores[f.id]]]


def _corr(a, b) -> float:
    a, b = a - a.mean(), b.double() - b.double().mean()
    denom = (a.norm() * b.norm()).item()
    return float((a @ b).item() / denom) if denom else 0.0


def callable_judge(fn):
    """Wrap ``fn(feature_info) -> bool | "ablate" | "keep"`` as a judge named after it."""
    name = getattr(fn, "__name__", "callable")

    def judge(features, ctx):
        out = []
        for f in features:
            verdict = fn(f)
            verdict = ("ablate" if verdict else "keep") if isinstance(verdict, bool) else str(verdict)
            if verdict not in CHOICES:
                raise SFCError(f"judge {name!r} returned {verdict!r} for {f.id} (use True/False, 'ablate' or 'keep')")
            out.append(Decision(f.id, verdict, f"callable:{name}"))
        return out

    judge.__name__ = name
    judge.uses = tuple(getattr(fn, "uses", ("undeclared",)))
    return judge


file_judge.uses = ("human_review",)
interactive_judge.uses = ("human_review",)
auto_judge.uses = ("balanced_labels",)


@hookimpl
def sfc_feature_judges():
    return {"file": file_judge, "interactive": interactive_judge, "auto": auto_judge}
