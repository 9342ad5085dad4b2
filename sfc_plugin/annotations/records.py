"""``sfc-annotations/1``: reviewed interpretations of features, one JSON record per line (no heavy imports).

A record is a whole state of one feature's interpretation::

    {"schema": "sfc-annotations/1", "feature": "resid_2/173", "sae_fingerprint": "9e9d…",
     "label": "RC verb, plural main subject", "description": "", "author": "alice",
     "created": "2025-01-02T10:00:00Z", "status": "proposed", "reviewer": null, "note": null,
     "evidence": ["context:812"]}

A file is a history: adding a label or reviewing one appends a record, nothing is edited in place, and the
last record of a feature in the file is its current state (:func:`latest`). ``status`` is ``proposed``,
``accepted`` or ``rejected``; accepted and rejected records name their ``reviewer``. ``sae_fingerprint`` is the
SHA-256 of the SAE's weights as circuits record it (``provenance.saes[i].fingerprint.sha256``), so a label
never silently moves to another SAE. ``decision`` (optional, ``ablate`` or ``keep``) is what SHIFT's ``file``
judge reads. Files are written atomically (:func:`sfc_plugin.files.write_atomic`).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from ..errors import SFCError

SCHEMA = "sfc-annotations/1"
STATUSES = ("proposed", "accepted", "rejected")
DECISIONS = ("ablate", "keep")
FIELDS = (
    "schema",
    "feature",
    "sae_fingerprint",
    "label",
    "description",
    "author",
    "created",
    "status",
    "reviewer",
    "note",
    "evidence",
)
OPTIONAL = ("decision",)  # fields a record may add
_FEATURE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)/(\d+)$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
MARKS = {"accepted": "✓", "proposed": "?", "rejected": "✗"}  # how figures and the viewer mark a status


def now() -> str:
    """The current UTC time as ``created`` writes it (ISO 8601, seconds, ``Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def feature_id(value) -> str:
    """A feature id as records hold it: ``<submodule>/<index>`` (``resid_2/0173@4`` reads as ``resid_2/173``)."""
    base = str(value).strip().split("@", 1)[0]
    found = _FEATURE.match(base)
    if not found:
        raise SFCError(f"feature {value!r} is not '<submodule>/<feature index>' (e.g. resid_2/173)")
    return f"{found.group(1)}/{int(found.group(2))}"


def _text(rec: dict, key: str, where: str, *, required: bool, empty: bool = True) -> None:
    value = rec.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise SFCError(f"{where}: {key!r} must be a {'non-empty ' if not empty else ''}string, got {value!r}")


def check_record(rec, where: str = "record") -> dict:
    """``rec`` as a valid record (fields in the documented order); one-line :class:`SFCError` naming the bad value."""
    if not isinstance(rec, dict):
        raise SFCError(f"{where}: not a JSON object")
    if rec.get("schema", SCHEMA) != SCHEMA:
        raise SFCError(f"{where}: schema {rec.get('schema')!r} is not {SCHEMA!r}")
    unknown = sorted(set(rec) - set(FIELDS) - set(OPTIONAL))
    if unknown:
        raise SFCError(f"{where}: unknown field {unknown[0]!r}")
    missing = [k for k in FIELDS if k not in rec and k != "schema"]
    if missing:
        raise SFCError(f"{where}: lacks field {missing[0]!r}")
    out = {"schema": SCHEMA, **{k: rec[k] for k in FIELDS if k != "schema"}}
    out["feature"] = feature_id(rec["feature"]) if isinstance(rec["feature"], str) else None
    if out["feature"] is None:
        raise SFCError(f"{where}: 'feature' must be a string such as 'resid_2/173', got {rec['feature']!r}")
    fp = rec["sae_fingerprint"]
    if not isinstance(fp, str) or not _FINGERPRINT.match(fp):
        raise SFCError(f"{where}: 'sae_fingerprint' must be 64 lowercase hex digits (an SAE's sha256), got {fp!r}")
    _text(rec, "label", where, required=True, empty=False)
    _text(rec, "description", where, required=True)
    _text(rec, "author", where, required=True, empty=False)
    _text(rec, "reviewer", where, required=False, empty=False)
    _text(rec, "note", where, required=False)
    created = rec["created"]
    if not isinstance(created, str) or parse_time(created) is None:
        raise SFCError(f"{where}: 'created' must be an ISO 8601 time such as '2025-01-02T10:00:00Z', got {created!r}")
    if rec["status"] not in STATUSES:
        raise SFCError(f"{where}: status {rec['status']!r} (known: {', '.join(STATUSES)})")
    if rec["status"] != "proposed" and not rec.get("reviewer"):
        raise SFCError(f"{where}: an {rec['status']} record names its reviewer")
    ev = rec["evidence"]
    if not isinstance(ev, list) or not all(isinstance(e, str) for e in ev):
        raise SFCError(f"{where}: 'evidence' must be a list of strings (context ids or text), got {ev!r}")
    if "decision" in rec:
        if rec["decision"] not in DECISIONS + (None,):
            raise SFCError(f"{where}: decision {rec['decision']!r} (known: {', '.join(DECISIONS)})")
        if rec["decision"] is not None:
            out["decision"] = rec["decision"]
    return out


def parse_time(text: str) -> datetime | None:
    try:
        t = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def make_record(
    feature,
    sae_fingerprint: str,
    label: str,
    author: str,
    *,
    description: str = "",
    status: str = "proposed",
    reviewer: str | None = None,
    note: str | None = None,
    evidence=(),
    decision: str | None = None,
    created: str | None = None,
) -> dict:
    """A checked record (``created`` defaults to now)."""
    rec = {
        "schema": SCHEMA,
        "feature": feature,
        "sae_fingerprint": sae_fingerprint,
        "label": label,
        "description": description,
        "author": author,
        "created": created or now(),
        "status": status,
        "reviewer": reviewer,
        "note": note,
        "evidence": list(evidence),
    }
    if decision is not None:
        rec["decision"] = decision
    return check_record(rec, "new record")


def parse_lines(text: str, source: str) -> list[dict]:
    """The records of JSON-lines ``text`` (blank lines skipped); errors name ``source`` and the line."""
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError:
            raise SFCError(f"{source} line {i}: not JSON") from None
        out.append(check_record(raw, f"{source} line {i}"))
    return out


def read_annotations(path, missing_ok: bool = False) -> list[dict]:
    """Every record of the file, in file order (its history)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return []
        raise SFCError(f"annotations file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise SFCError(f"annotations file {str(path)!r} is a directory") from None
    except UnicodeDecodeError:
        raise SFCError(f"annotations file {str(path)!r} is not UTF-8 text") from None
    return parse_lines(text, f"annotations file {str(path)!r}")


def is_annotations_file(path) -> bool:
    """Whether the file's first record looks like ``sfc-annotations/1`` (has ``feature`` and ``status``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    return isinstance(rec, dict) and (rec.get("schema") == SCHEMA or {"feature", "status"} <= set(rec))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return False


def dumps(records) -> str:
    """JSON-lines text of ``records`` (one compact object per line, fields in the documented order)."""
    return "".join(json.dumps(check_record(r), ensure_ascii=False, allow_nan=False) + "\n" for r in records)


def write_annotations(path, records) -> Path:
    """Write ``records`` to ``path`` atomically (the whole file: a crash leaves the old one or the new one)."""
    from ..files import write_atomic

    return write_atomic(path, dumps(records))


def append_annotations(path, new) -> list[dict]:
    """Append records to the file (created if missing), atomically; returns the whole history."""
    records = read_annotations(path, missing_ok=True) + [check_record(r, "new record") for r in new]
    write_annotations(path, records)
    return records


def latest(records) -> dict[str, dict]:
    """``{feature: its last record}``: each feature's current state (features in order of first appearance)."""
    out: dict[str, dict] = {}
    for r in records:
        out[r["feature"]] = r
    return out


def history(records, feature) -> list[dict]:
    fid = feature_id(feature)
    return [r for r in records if r["feature"] == fid]


def review_record(
    records,
    feature,
    status: str,
    reviewer: str,
    note: str | None = None,
    label: str | None = None,
    self_review: bool = False,
    created: str | None = None,
) -> dict:
    """The record a review appends: the feature's current state with ``status`` (``accepted`` / ``rejected``),
    ``reviewer``, ``note`` and a new time. A review of one's own label is refused unless ``self_review``."""
    fid = feature_id(feature)
    if status not in ("accepted", "rejected"):
        raise SFCError(f"review status {status!r}: use accepted or rejected")
    current = latest(records).get(fid)
    if current is None:
        raise SFCError(f"no annotation of {fid!r} to review (add one with 'sfc annotate add')")
    if not self_review and reviewer.strip() == current["author"].strip():
        raise SFCError(
            f"reviewer {reviewer!r} wrote the label of {fid}: a review needs a second person "
            "(pass --self-review to record it anyway)"
        )
    rec = dict(current, status=status, reviewer=reviewer, note=note, created=created or now())
    if label is not None:
        rec["label"] = label
    return check_record(rec, "review")


def sae_fingerprints(provenance: dict) -> dict[str, str]:
    """``{submodule: SAE sha256}`` recorded in a circuit's (or shift.json's) provenance."""
    out = {}
    for s in provenance.get("saes") or []:
        if isinstance(s, dict) and isinstance(s.get("fingerprint"), dict) and s.get("submodule"):
            sha = s["fingerprint"].get("sha256")
            if isinstance(sha, str):
                out[s["submodule"]] = sha
    return out


def fingerprint_mismatch(record: dict, fingerprints: dict[str, str], what: str = "the circuit") -> str | None:
    """Why ``record`` does not belong to the SAEs ``{submodule: sha256}`` (None when it does)."""
    sub = record["feature"].rsplit("/", 1)[0]
    have = fingerprints.get(sub)
    if have is None:
        return f"{record['feature']}: {what} records no SAE fingerprint for {sub!r}"
    if have != record["sae_fingerprint"]:
        return (
            f"{record['feature']} was annotated on another SAE (fingerprint {record['sae_fingerprint'][:12]}, "
            f"{what}'s {sub} SAE is {have[:12]})"
        )
    return None
