"""SHIFT decisions from an annotations file: what reviewed labels say to ablate, and who decided.

A feature is ablated when its current record (the last in the file) is ``accepted`` and says
``"decision": "ablate"`` (``sfc annotate add ... --decision ablate``, then a review). Every other case keeps it,
and the note says why: not annotated, proposed but not reviewed, rejected, or accepted without a decision. The
note names the annotation that decided (label, author, status, reviewer, time), which ``shift.json`` records
beside the decision. Records made on another SAE than the one being edited are refused with one line.
"""

from __future__ import annotations

from ..errors import SFCError
from .records import fingerprint_mismatch, latest, read_annotations


def describe(rec: dict) -> str:
    """One annotation as ``shift.json`` notes it: ``annotation 'label' by alice, accepted by bob (time)``."""
    review = f", {rec['status']} by {rec['reviewer']}" if rec.get("reviewer") else f", {rec['status']}"
    return f"annotation {rec['label']!r} by {rec['author']}{review} ({rec['created']})"


def file_decisions(path) -> dict[str, str]:
    """``{feature: "ablate" | "keep"}`` of the file's current accepted records that carry a decision."""
    return {
        fid: r["decision"]
        for fid, r in latest(read_annotations(path)).items()
        if r["status"] == "accepted" and r.get("decision")
    }


def annotation_decisions(path, feature_ids, fingerprints: dict[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """``{feature id: (decision, note)}`` for ``feature_ids`` (``<submodule>/<index>``); ``fingerprints``:
    ``{submodule: SAE sha256}`` of the SAEs being edited, checked against the records (None: not checked)."""
    current = latest(read_annotations(path))
    out = {}
    for fid in feature_ids:
        rec = current.get(fid)
        if rec is None:
            out[fid] = ("keep", f"not annotated in {path}: keep")
            continue
        if fingerprints is not None:
            why = fingerprint_mismatch(rec, fingerprints, "the SAE being edited")
            if why:
                raise SFCError(f"annotations {str(path)!r}: {why}")
        if rec["status"] != "accepted":
            out[fid] = ("keep", f"{describe(rec)}: not accepted, keep")
        elif not rec.get("decision"):
            out[fid] = ("keep", f"{describe(rec)}: no decision, keep")
        else:
            out[fid] = (rec["decision"], describe(rec))
    return out
