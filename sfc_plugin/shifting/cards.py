"""The evidence a human judge reads: each candidate feature's dashboard card (label and top contexts).

The cards come from :mod:`sfc_plugin.dashboards` — the same records, labels and text cards as
``sfc dashboards``, ``sfc export --labels auto`` and the viewer — computed over the judge's unlabelled
evidence texts (``ctx.texts``), so the ``interactive`` judge's screen and the ``file`` judge's
decisions template show the same thing.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SFCError


def evidence_cards(features, ctx, n_top: int = 5) -> dict[str, tuple[str | None, str]]:
    """``{feature id: (label, card text)}`` for the candidate ``features`` (one pass over ``ctx.texts``)."""
    from ..corpus import Corpus
    from ..dashboards import compute_dashboards, feature_card
    from ..dashboards.labels import auto_label
    from ..world import World

    if not features:
        return {}
    texts = ctx.texts
    if texts is None:
        raise SFCError("no evidence texts for the feature cards (the judge context has no texts)")
    bos = getattr(ctx.model.tokenizer, "bos_token_id", None)  # BOS activations say nothing about a feature
    corpus = Corpus.from_batch(texts, "SHIFT evidence texts", bos)
    subs = list(ctx.submodules.values())  # checked when the run's World was loaded: wrapped, not loaded again
    world = World(ctx.model, {s.key: s.sae for s in subs}, subs)
    data = compute_dashboards(world, [f.id for f in features], corpus, k=n_top, progress=False)
    out = {}
    for f in features:
        rec = data["features"][f.id]
        label = f.label or auto_label(rec)
        out[f.id] = (label, feature_card(rec, n_top=n_top, label=label))
    return out


def write_template(path: str | Path, features, cards: dict) -> Path:
    """A decisions file to fill in: each candidate with its effect, label, evidence and ``"decision": "keep"``
    (readable by the ``file`` judge as it is; change a decision to ``"ablate"``)."""
    from ..files import strict_json, write_atomic

    rows = [
        {
            "id": f.id,
            "decision": "keep",
            "effect": f.effect,
            "label": cards[f.id][0],
            "evidence": cards[f.id][1].splitlines(),
        }
        for f in features
    ]
    return write_atomic(path, strict_json(rows, indent=1, ensure_ascii=False) + "\n")
