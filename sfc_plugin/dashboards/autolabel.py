"""The ``auto`` label of a feature's dashboard record, and the rule it states about where the feature fires.

No network and no language model: the label names the tokens on which the feature fires most (the strongest
token of each top context, most frequent first; ``…`` when there are others; ``after X:`` when the firing token
varies but the token before it does not) and, when the decoder direction's direct logit effect stands out, the
tokens it promotes (``↑``) or suppresses (``↓``). Example: ``"likes / helps … ↑ were, are"``.

:func:`label_rule` is the testable part of the label — "fires on these tokens" or "fires after this token" —
which :mod:`.scoring` measures on contexts the label was not made from. A leaf module (no package imports).
"""

from __future__ import annotations

from collections import Counter

STANDOUT = 3.0  # name promoted/suppressed tokens when the strongest is this many standard deviations out,
MIN_LOGIT = 1.0  # moves its logit by at least this much at the feature's largest activation,
SHARE = 0.5  # and each named token has at least this share of the strongest one's effect
AFTER_SHARE = 0.6  # "after X:" when X precedes the firing token in at least this share of the top contexts
LOW = 0.7  # scores (AUROC, see .scoring) below this are flagged in figures and the viewer
MIN_FIRING = 10  # fewer firing held-out tokens than this: scored but not flagged
SCORE_CONTEXTS = 1024  # default number of held-out contexts a label is scored on


def clean(token) -> str:
    """A token as labels show it: whitespace collapsed (``" likes"`` and ``"likes"`` read the same)."""
    text = str(token)
    return " ".join(text.split()) or {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(text[:1], repr(text))


def _ranked(tokens: list[str]) -> list[str]:
    counts = Counter(tokens)
    first = {t: i for i, t in reversed(list(enumerate(tokens)))}
    return sorted(counts, key=lambda t: (-counts[t], first[t]))


def label_rule(record: dict, n_tokens: int = 2) -> dict | None:
    """What the label claims about where the feature fires: ``{"tokens": [...], "after": None}`` (it fires on one
    of these tokens) or ``{"tokens": [...], "after": "X"}`` (it fires right after ``X``); tokens as :func:`clean`
    writes them. None for a feature that never fires."""
    top = record.get("top") or []
    if not top:
        return None
    fired = [clean(c["tokens"][c["position"]]) for c in top]
    ranked = _ranked(fired)
    shown = sum(t in ranked[:n_tokens] for t in fired)
    after = None
    if shown < len(fired) / 2:  # the firing token varies: say what precedes it when that is constant
        before = [clean(c["tokens"][c["position"] - 1]) for c in top if c["position"] > 0]
        prev = _ranked(before)
        if before and sum(t == prev[0] for t in before) >= AFTER_SHARE * len(top):
            after = prev[0]
    return {"tokens": ranked[:n_tokens], "more": len(ranked) > n_tokens, "after": after}


def auto_label(record: dict, n_tokens: int = 2, n_logits: int = 2, standout: float = STANDOUT) -> str:
    """The label of one ``sfc-dashboards/1`` feature record (deterministic in the record)."""
    rule = label_rule(record, n_tokens)
    if rule is None:
        return "(never fires on the corpus)"
    label = " / ".join(rule["tokens"]) + (" …" if rule["more"] else "")
    if rule["after"] is not None:
        label = f"after {rule['after']}: {label}"
    std = record.get("logit_std") or 0.0
    for sign, key in (("↑", "promoted"), ("↓", "suppressed")):
        items = record.get(key) or []
        if (
            std > 0
            and items
            and abs(items[0]["value"]) >= standout * std
            and abs(items[0]["value"]) * record.get("max", 0.0) >= MIN_LOGIT
        ):
            named = [clean(p["token"]) for p in items if abs(p["value"]) >= SHARE * abs(items[0]["value"])]
            label += f" {sign} " + ", ".join(named[:n_logits])
            break
    return label
