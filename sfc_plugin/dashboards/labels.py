"""The ``auto`` label provider: a short label from a feature's dashboard evidence alone, with its score.

The label is :func:`~.autolabel.auto_label`'s (``"likes / helps … ↑ were, are"``); its score (``score``: the AUROC
of the label's rule against where the feature fires on held-out contexts, see :mod:`.scoring`) comes from the
dashboards (``auto_label`` in each record) and ``score_low`` flags a label below :data:`.autolabel.LOW`. The
tooltip is the feature's text card with the score. A user who wants an LLM's labels registers another provider
through ``sfc_label_providers``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import SFCError
from ..world import World
from .autolabel import MIN_LOGIT, SHARE, STANDOUT, auto_label, clean, label_rule  # noqa: F401 - re-exported
from .card import feature_card
from .records import FILENAME, load_dashboards


def label_score(record: dict) -> dict | None:
    """The recorded score of the record's ``auto`` label (None when the dashboards predate scores or were made
    with another labelling)."""
    scored = record.get("auto_label")
    if not isinstance(scored, dict) or scored.get("label") != auto_label(record):
        return None
    return scored


def score_text(scored: dict | None) -> str:
    """One line on a label's score, for tooltips and cards."""
    if scored is None or scored.get("auroc") is None:
        return "label not scored" if scored is None else "label score: n/a (no held-out firing)"
    flag = " — LOW: the label does not say where this feature fires" if scored.get("low") else ""
    few = " (too few firings to flag)" if scored.get("low") is None else ""
    return (
        f"label score: AUROC {scored['auroc']:.2f} on {scored['n_contexts']} held-out contexts "
        f"({scored['rule']}: {scored['activation_recall']:.0%} of its activation, {scored['recall']:.0%} of "
        f"{scored['n_firing']} firing tokens; precision {scored['precision'] or 0:.2f}){few}{flag}"
    )


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
            scored = label_score(rec)
            out[n.id] = {
                "label": auto_label(rec),
                "tooltip": feature_card(rec, n_top=3, n_quantile=0, before=6) + "\n" + score_text(scored),
                "source": "auto",
            }
            if scored is not None and scored.get("auroc") is not None:
                out[n.id]["score"] = scored["auroc"]
                out[n.id]["score_low"] = scored.get("low")
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
