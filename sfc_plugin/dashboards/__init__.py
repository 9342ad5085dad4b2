"""Feature dashboards: what each SAE feature responds to and what it writes, computed locally.

    from sfc_plugin import dashboards
    data = dashboards.compute_dashboards(World.load(), ["resid_2/173", "attn_1/5"])  # the toy world and corpus
    print(dashboards.feature_card(data["features"]["resid_2/173"]))
    dashboards.write_dashboards(data, "dash/")           # dash/dashboards.json (sfc-dashboards/1)

The JSON (``sfc-dashboards/1``) has ``model``, ``corpus``, ``settings`` and ``features``: one record
per feature id with ``density``, ``n_firing``, ``n_tokens``, ``max``, ``mean`` (over tokens where it
fires), ``histogram`` (log10 bins of non-zero activations), ``top`` and ``quantiles`` (contexts:
``tokens``, per-token ``acts``, ``position`` of the strongest token, ``context`` index, ``start``
offset), ``promoted`` / ``suppressed`` tokens (direct logit effect; see ``logit_note``).
"""

from __future__ import annotations

from ..errors import SFCError
from .card import feature_card
from .records import FILENAME, SCHEMA, load_dashboards, parse_id, write_dashboards

__all__ = [
    "SCHEMA",
    "FILENAME",
    "compute_dashboards",
    "circuit_dashboards",
    "feature_ids",
    "write_dashboards",
    "load_dashboards",
    "feature_card",
    "parse_id",
]


def compute_dashboards(model, saes=None, ids=None, corpus=None, **kw) -> dict:
    """``sfc-dashboards/1`` data for feature ids ``"<submodule>/<feature>"`` (``compute_dashboards(world, ids,
    corpus)`` or ``compute_dashboards(model, saes, ids, corpus)``): see
    :func:`sfc_plugin.dashboards.compute.compute_dashboards` for the options."""
    from .compute import compute_dashboards as compute

    return compute(model, saes, ids, corpus, **kw)


def feature_ids(circuit) -> list[str]:
    """The circuit's feature node ids without position suffixes, in circuit order."""
    return list(dict.fromkeys(n.id.split("@", 1)[0] for n in circuit.nodes if n.kind == "feature"))


def circuit_dashboards(circuit, model, saes=None, corpus=None, **kw) -> dict:
    """:func:`compute_dashboards` for every feature node of ``circuit`` (``circuit_dashboards(circuit, world,
    corpus)`` or ``circuit_dashboards(circuit, model, saes, corpus)``)."""
    from ..world import world_args

    ids = feature_ids(circuit)
    if not ids:
        raise SFCError("the circuit has no feature nodes")
    world, corpus = world_args(model, saes, corpus)
    return compute_dashboards(world, ids, corpus, **kw)
