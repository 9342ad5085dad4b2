"""Built-in SHIFT feature judges (``concept``, ``labelled``, ``file``, ``interactive``), registered through ``sfc_feature_judges``.

Each judge says what information it uses in its ``uses`` attribute (see ``records.USES``); only judges
that use ``"balanced_labels"`` are given the labelled validation data.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ..annotations.records import is_annotations_file
from ..errors import SFCError
from ..plugins import hookimpl
from .records import Decision

CHOICES = ("ablate", "keep")
DECISIONS = Path(__file__).resolve().parent / "decisions"  # shipped decision files, by name


def shipped_decisions() -> list[str]:
    """Names of the shipped decisions files (``marks2024-gemma-2-2b``: the authors' 43 Gemma-2-2B features)."""
    return sorted(p.stem for p in DECISIONS.glob("*.json"))


def decisions_path(spec: str | Path | None) -> str | Path | None:
    """A decisions file: ``spec`` itself, or the shipped file of that name when no such path exists."""
    if spec and not Path(spec).exists() and str(spec) in shipped_decisions():
        return DECISIONS / f"{spec}.json"
    return spec


def read_decisions(path: str | Path) -> dict[str, str]:
    """``{feature id: "ablate" | "keep"}`` from JSON (a mapping, a list of ``{id, decision}``, or a
    ``shift.json`` with ``features``), CSV with columns ``id,decision``, or an ``sfc-annotations/1`` file."""
    path = Path(path)
    if is_annotations_file(path):  # accepted sfc-annotations/1 records with a decision
        from ..annotations.decisions import file_decisions

        return file_decisions(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SFCError(f"decisions file {str(path)!r} cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SFCError(f"decisions file {str(path)!r} is not UTF-8 text") from None
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
            raise SFCError(
                f"decisions file {str(path)!r}: feature {fid!r} has decision {decision!r} (use ablate or keep)"
            )
        out[str(fid)] = decision
    return out


def file_judge(features, ctx):
    """Decisions from ``ctx.options["decisions"]`` (JSON/CSV, or a shipped name: :func:`shipped_decisions`);
    features it does not list are kept."""
    path = decisions_path(ctx.options.get("decisions"))
    if not path:
        raise SFCError("judge 'file' needs a decisions file (--decisions FILE)")
    if not Path(path).exists():  # write a template with every candidate's evidence card to fill in
        if not features:
            return []
        from .cards import evidence_cards, write_template

        write_template(path, features, evidence_cards(features, ctx))
        raise SFCError(f'wrote a decisions template to {str(path)!r}: set "decision" to ablate or keep, then rerun')
    if is_annotations_file(path):  # sfc-annotations/1: accepted records decide, and shift.json names them
        from ..annotations.decisions import annotation_decisions
        from ..fingerprints import sae_fingerprint

        fps = {f.submodule: sae_fingerprint(ctx.submodules[f.submodule].sae)["sha256"] for f in features}
        table = annotation_decisions(path, [f.id for f in features], fps)
        return [Decision(f.id, table[f.id][0], f"annotations:{path}", table[f.id][1]) for f in features]
    table = read_decisions(path)
    return [
        Decision(f.id, table.get(f.id, "keep"), f"file:{path}" if f.id in table else f"file:{path} (not listed: keep)")
        for f in features
    ]


def file_candidates(ctx) -> list[str]:
    """The features a decisions file marks ``ablate``: SHIFT adds them to the candidates when attribution did
    not rank them (so a file of someone else's selection, e.g. the authors', is applied in full)."""
    path = decisions_path(ctx.options.get("decisions"))
    if not path or not Path(path).exists():
        return []
    return [fid for fid, d in read_decisions(path).items() if d == "ablate"]


def interactive_judge(features, ctx):
    """A terminal review: each feature's label, top contexts and effect; ``a`` ablate, ``k`` keep,
    ``q`` keep the rest. Reads ``ctx.options["input"]`` (default stdin), writes ``ctx.options["output"]``."""
    from .cards import evidence_cards

    inp, out = ctx.options.get("input", sys.stdin), ctx.options.get("output", sys.stderr)
    decisions, rest = [], None
    cards = evidence_cards(features, ctx)
    for n, f in enumerate(features, 1):
        if rest is None:
            print(f"\n[{n}/{len(features)}] effect {f.effect:+.4f}", file=out)
            for line in cards[f.id][1].splitlines():
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


def labelled_judge(features, ctx):
    """A skyline, not SHIFT: ablate features whose mean activation predicts the spurious attribute better
    than the intended one on the balanced, labelled validation data (|Pearson r| with each binary
    label), and at least ``ctx.options["min_r"]`` (default 0.1) — features unrelated to both are kept.
    These labels disambiguate the two attributes, which SHIFT is meant to do without."""
    import torch

    from ..splicing import read_hooks
    from .encoding import encode_some

    if ctx.val is None:
        raise SFCError("judge 'labelled' needs the labelled validation data")
    by_sub: dict[str, list] = {}
    for f in features:
        by_sub.setdefault(f.submodule, []).append(f)
    scores = {}
    model = ctx.model
    subs = {name: ctx.submodules[name] for name in by_sub}
    idx = {n: torch.tensor([f.feature for f in by_sub[n]], device=s.W_dec.device) for n, s in subs.items()}
    stop = min(max(max(s.layer for s in subs.values()), 0) + 1, model.cfg.n_layers) if subs else 1
    hooks = {s.read_hook for s in subs.values()}  # features are encoded from the read hook (a transcoder's input)
    size = 64
    if ctx.budget is not None:
        per_row = ctx.budget.forward_row(ctx.val.batch.clean.shape[1], stop, 0, grad=False)
        size = ctx.budget.rows(per_row, "labelled-judge", share=0.5, cap=size)
    acts = {n: [] for n in subs}
    with torch.no_grad():
        for part, _, _ in ctx.val.split(size) if subs else ():  # one pass for every submodule
            with read_hooks(model, list(subs.values())):
                _, cache = model.run_with_cache(part.clean, names_filter=lambda h: h in hooks, stop_at_layer=stop)
            for name, sub in subs.items():
                a = encode_some(sub, sub.read(cache[sub.read_hook]), idx[name]) * part.valid[..., None]
                acts[name].append(a.sum(1) / part.valid.sum(1, keepdim=True))
        for name, feats in by_sub.items():
            a = torch.cat(acts[name]).double()
            for j, f in enumerate(feats):
                scores[f.id] = (_corr(a[:, j], ctx.val.y), _corr(a[:, j], ctx.val.z))
    min_r = float(ctx.options.get("min_r", 0.1))
    return [
        Decision(
            f.id,
            "ablate" if abs(rs) > abs(ri) and abs(rs) >= min_r else "keep",
            "labelled",
            f"r(intended)={ri:+.2f} r(spurious)={rs:+.2f}",
        )
        for f in features
        for ri, rs in [scores[f.id]]
    ]


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


def concept_judge(features, ctx):
    """SHIFT's judge without labels: ablate features whose evidence is about the spurious concept.

    The concept is a user's description (``ctx.options["concept"]``: words or short phrases, a file, or
    a shipped name such as ``gender``; see :mod:`.concept`). Evidence per feature, from unlabelled text
    (``ctx.options["evidence_text"]``: a file; default the toy corpus for the toy model, else the
    training texts): its 20 top-activating contexts and the 10 tokens its decoder direction promotes
    most through the unembedding. Scores: ``writes`` = share of promoted tokens that are concept
    words; ``reads`` = share of top contexts whose activating token is one. A feature is ablated when
    ``writes`` — or, for embedding features, ``reads`` — reaches ``ctx.options["concept_threshold"]``
    (default 0.3). Beyond the embedding, the token a feature fires on does not say what it is about
    (a feature may fire on "He" because of the workplace named before it), so there the judge goes by
    what the feature writes. No label of either attribute is read: ``ctx.val`` is not used.
    """
    from .concept import load_concept, reads_score, writes_score
    from .evidence import evidence_texts, feature_evidence

    concept = load_concept(ctx.options.get("concept"))
    threshold = float(ctx.options.get("concept_threshold", 0.3))
    if not 0 < threshold <= 1:
        raise SFCError(f"concept threshold must be in (0, 1], got {threshold!r}")
    if not features:
        return []
    texts, name = evidence_texts(ctx.model, ctx.options.get("evidence_text"), fallback=ctx.texts)
    evidence = feature_evidence(
        ctx.model,
        ctx.submodules,
        features,
        texts,
        n_top=int(ctx.options.get("n_top", 20)),
        n_promoted=int(ctx.options.get("n_promoted", 10)),
        budget=ctx.budget,
    )
    out = []
    for f in features:
        ev = evidence[f.id]
        reads, writes = reads_score(concept, ev), writes_score(concept, ev)
        score = max(writes, reads) if f.submodule == "embed" else writes
        hits = [t.strip() for t in ev.promoted if t.strip().lower() in concept.words]
        top = " | ".join(_snippet(c.tokens) for c in ev.top[:2]) or "never fires"
        note = (
            f"writes {writes:.0%} concept words"
            + (f" ({', '.join(hits)})" if hits else "")
            + f", reads {reads:.0%}"
            + ("" if f.submodule == "embed" else " (not counted past the embedding)")
            + f"; top contexts in {name}: {top}"
        )
        out.append(Decision(f.id, "ablate" if score >= threshold else "keep", f"concept:{concept.source}", note))
    return out


def _snippet(tokens: list[str], before: int = 3) -> str:
    words = [t.strip() for t in tokens]
    return " ".join(words[-before - 1 : -1] + [f"[{words[-1]}]"])


file_judge.uses = ("human_review",)
file_judge.candidates = file_candidates
interactive_judge.uses = ("human_review",)
labelled_judge.uses = ("balanced_labels",)
concept_judge.uses = ("concept_description", "unlabelled_text")


@hookimpl
def sfc_feature_judges():
    return {"concept": concept_judge, "labelled": labelled_judge, "file": file_judge, "interactive": interactive_judge}
