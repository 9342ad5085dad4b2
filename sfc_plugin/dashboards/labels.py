"""The ``auto`` label provider: a short label from a feature's dashboard evidence alone.

No network and no language model: the label names the tokens on which the feature fires most (the
strongest token of each top context, most frequent first; ``…`` when there are others) and, when
the decoder direction's direct logit effect stands out, the tokens it promotes (``↑``) or suppresses
(``↓``). Example: ``"likes / helps … ↑ were, are"``. The tooltip is the feature's text card.
A user who wants an LLM's labels registers another provider through ``sfc_label_providers``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import SFCError
from ..world import World
from .card import feature_card
from .records import FILENAME, load_dashboards

STANDOUT = 3.0  # name promoted/suppressed tokens when the strongest is this many standard deviations out,
MIN_LOGIT = 1.0  # moves its logit by at least this much at the feature's largest activation,
SHARE = 0.5  # and each named token has at least this share of the strongest one's effect


def _clean(token) -> str:
    text = str(token)
    return " ".join(text.split()) or {"\n": "⏎", " ": "␣", "\t": "⇥"}.get(text[:1], repr(text))


def _ranked(tokens: list[str]) -> list[str]:
    counts = Counter(tokens)
    first = {t: i for i, t in reversed(list(enumerate(tokens)))}
    return sorted(counts, key=lambda t: (-counts[t], first[t]))


def auto_label(record: dict, n_tokens: int = 2, n_logits: int = 2, standout: float = STANDOUT) -> str:
    """The label of one ``sfc-dashboards/1`` feature record (deterministic in the record)."""
    top = record.get("top") or []
    if not top:
        return "(never fires on the corpus)"
    fired = [_clean(c["tokens"][c["position"]]) for c in top]
    ranked = _ranked(fired)
    label = " / ".join(ranked[:n_tokens]) + (" …" if len(ranked) > n_tokens else "")
    shown = sum(t in ranked[:n_tokens] for t in fired)
    if shown < len(fired) / 2:  # the firing token varies: say what precedes it when that is constant
        before = [_clean(c["tokens"][c["position"] - 1]) for c in top if c["position"] > 0]
        prev = _ranked(before)
        if before and sum(t == prev[0] for t in before) >= 0.6 * len(top):
            label = f"after {prev[0]}: {label}"
    std = record.get("logit_std") or 0.0
    for sign, key in (("↑", "promoted"), ("↓", "suppressed")):
        items = record.get(key) or []
        if (
            std > 0
            and items
            and abs(items[0]["value"]) >= standout * std
            and abs(items[0]["value"]) * record.get("max", 0.0) >= MIN_LOGIT
        ):
            named = [_clean(p["token"]) for p in items if abs(p["value"]) >= SHARE * abs(items[0]["value"])]
            label += f" {sign} " + ", ".join(named[:n_logits])
            break
    return label


def _dashboards_for(circuit, dashboards, world, corpus, cache_dir, progress) -> dict:
    if dashboards is not None:
        return load_dashboards(dashboards) if isinstance(dashboards, (str, Path)) else dashboards
    if world is None:
        raise SFCError(
            "label provider 'auto' needs dashboards= (an 'sfc dashboards' directory or file) "
            "or world= (or model= and saes=) to compute them"
        )
    from . import circuit_dashboards

    return circuit_dashboards(circuit, world, corpus=corpus, cache_dir=cache_dir, progress=progress)


def auto(
    circuit,
    dashboards=None,
    model=None,
    saes=None,
    corpus=None,
    cache_dir=None,
    progress: bool = False,
    world=None,
    **_kw,
) -> dict:
    """Labels and text-card tooltips for the circuit's features from their dashboards
    (``dashboards``: data, a file or a directory; else computed from ``world`` (or ``model`` and ``saes``)
    over ``corpus``). Features without a dashboard are left unlabelled."""
    if world is None and dashboards is None and model is not None and saes is not None:
        world = World.load(model, saes)
    data = _dashboards_for(circuit, dashboards, world, corpus, cache_dir, progress)
    records = data["features"]
    out = {}
    for n in circuit.nodes:
        rec = records.get(n.id.split("@", 1)[0]) if n.kind == "feature" else None
        if rec is not None:
            out[n.id] = {"label": auto_label(rec), "tooltip": feature_card(rec, n_top=3, n_quantile=0, before=6)}
    return out


def default_dashboards(circuit_path: str | Path, circuit, dashboards: str | Path | None = None, progress: bool = True):
    """What the CLI hands the ``auto`` provider: ``dashboards`` if given, else ``dashboards/`` next to the
    circuit file if it holds ``dashboards.json``, else dashboards computed now on the toy world (cached
    in that directory) when the circuit comes from it."""
    if dashboards is not None:
        return load_dashboards(dashboards)
    here = Path(circuit_path).parent / "dashboards"
    if (here / FILENAME).is_file():
        data = load_dashboards(here)
        if all(i in data["features"] for i in _ids(circuit)):
            return data
    if circuit.provenance.get("model_source") not in (None, "toy"):
        raise SFCError(
            "labels 'auto' need dashboards: run 'sfc dashboards CIRCUIT --model ... --sae ... -o DIR' "
            "and pass --dashboards DIR"
        )
    from . import circuit_dashboards, write_dashboards

    data = circuit_dashboards(circuit, World.load(), cache_dir=here / "cache", progress=progress)
    write_dashboards(data, here)
    return data


def _ids(circuit) -> list[str]:
    from . import feature_ids

    return feature_ids(circuit)
