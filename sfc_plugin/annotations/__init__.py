"""Reviewed interpretations of features: ``sfc-annotations/1`` records, review, merge, and their labels.

    from sfc_plugin import annotations
    rec = annotations.make_record("resid_2/173", sha256, "RC verb, plural subject", "alice")
    annotations.append_annotations("team.jsonl", [rec])
    records = annotations.read_annotations("team.jsonl")
    annotations.append_annotations("team.jsonl", [annotations.review_record(records, "resid_2/173", "accepted", "bob")])
    apply_labels(circuit, "annotations", path="team.jsonl")          # accepted labels, marked with their status

``sfc annotate add|review|list|merge`` is the command line; the format is documented in docs/formats.md.
"""

from __future__ import annotations

from .merge import Conflict, merge
from .provider import annotation_labels, shown_statuses
from .records import (
    DECISIONS,
    MARKS,
    SCHEMA,
    STATUSES,
    append_annotations,
    check_record,
    feature_id,
    fingerprint_mismatch,
    history,
    is_annotations_file,
    latest,
    make_record,
    read_annotations,
    review_record,
    sae_fingerprints,
    write_annotations,
)

__all__ = [
    "SCHEMA",
    "STATUSES",
    "DECISIONS",
    "MARKS",
    "Conflict",
    "annotation_labels",
    "append_annotations",
    "check_record",
    "feature_id",
    "fingerprint_mismatch",
    "history",
    "is_annotations_file",
    "latest",
    "make_record",
    "merge",
    "read_annotations",
    "review_record",
    "sae_fingerprints",
    "shown_statuses",
    "write_annotations",
]
