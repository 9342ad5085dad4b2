"""Labels from an ``sfc-annotations/1`` file, for the ``annotations`` label provider (``--labels FILE``).

Each feature's current record (the last in the file) labels its node when its status is shown: ``accepted``
by default, others with ``status=accepted,proposed`` or ``status=all``. Node info carries ``status``, ``author``,
``reviewer`` and ``source: "annotations"``, which figures and the viewer mark (``✓`` accepted, ``?`` proposed,
``✗`` rejected). A record made on another SAE than the circuit's (by fingerprint) is refused with one line
unless ``force``; a forced node's info says why (``forced``).
"""

from __future__ import annotations

from ..errors import SFCError
from .records import MARKS, STATUSES, fingerprint_mismatch, latest, read_annotations, sae_fingerprints


def shown_statuses(status) -> tuple[str, ...]:
    """``status`` option → the statuses to show: ``"accepted"``, ``"accepted,proposed"``, ``"all"`` or a list."""
    if status is None:
        return ("accepted",)
    items = status if isinstance(status, (list, tuple)) else str(status).replace("+", ",").split(",")
    items = [str(s).strip().lower() for s in items if str(s).strip()]
    if items == ["all"]:
        return STATUSES
    bad = [s for s in items if s not in STATUSES]
    if bad or not items:
        raise SFCError(f"label option status={status!r}: use accepted, proposed, rejected (comma-separated) or all")
    return tuple(dict.fromkeys(items))


def tooltip(rec: dict) -> str:
    """One annotation as hover text: the label with its mark, who wrote and reviewed it, description, note."""
    lines = [f"{MARKS[rec['status']]} {rec['label']}  ({rec['status']})", f"by {rec['author']}, {rec['created']}"]
    if rec.get("reviewer"):
        lines.append(f"{rec['status']} by {rec['reviewer']}" + (f": {rec['note']}" if rec.get("note") else ""))
    if rec.get("description"):
        lines.append(rec["description"])
    return "\n".join(lines)


def annotation_labels(circuit, path=None, status=None, force: bool = False, **_kw) -> dict:
    """``{node id: info}`` for the circuit's features annotated in ``path`` (see the module docstring)."""
    if path is None:
        raise SFCError("label provider 'annotations' needs path= (an sfc-annotations/1 file)")
    shown = shown_statuses(status)
    current = latest(read_annotations(path))
    fingerprints = sae_fingerprints(circuit.provenance)
    nodes = [(n, current.get(n.id.split("@", 1)[0])) for n in circuit.nodes if n.kind == "feature"]
    nodes = [(n, r) for n, r in nodes if r is not None]
    wrong = {n.id: why for n, r in nodes for why in [fingerprint_mismatch(r, fingerprints)] if why}
    if wrong and not force:
        more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
        raise SFCError(
            f"annotations {str(path)!r}: {next(iter(wrong.values()))}{more}; pass --force to use them anyway"
        )
    out = {}
    for n, rec in nodes:
        if rec["status"] not in shown:
            continue
        info = {
            "label": rec["label"],
            "tooltip": tooltip(rec),
            "source": "annotations",
            "status": rec["status"],
            "author": rec["author"],
            "reviewer": rec["reviewer"],
        }
        if n.id in wrong:
            info["forced"] = wrong[n.id]
        out[n.id] = info
    return out
