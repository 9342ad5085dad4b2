"""Merging annotation files: histories united, conflicting labels reported instead of one being picked.

Each input's current record of a feature is its *head*. A head that another input's history already holds
was seen and superseded there (that input reviewed or relabelled it), so it drops out. When the heads left
name different labels and more than one of them is not rejected, or one input accepted a label that another
rejected, the feature is a *conflict*: :func:`merge`
reports it and writes nothing for it until someone decides (``prefer=`` an input, whose head then wins and
the choice is recorded as a new record with a note). Otherwise the merged history is every distinct record
in time order, with each feature's winning head last (the latest non-rejected head; else the latest head).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import SFCError
from .records import check_record, now, parse_time


def _key(rec: dict) -> str:
    return json.dumps(rec, sort_keys=True, ensure_ascii=False)


@dataclass
class Conflict:
    """A feature whose inputs hold different current labels: ``heads`` as ``(source, record)``."""

    feature: str
    heads: list[tuple[str, dict]] = field(default_factory=list)

    def line(self) -> str:
        parts = [
            f"{r['label']!r} ({r['status']}, {r['author']}{', reviewer ' + r['reviewer'] if r['reviewer'] else ''}; "
            f"{source})"
            for source, r in self.heads
        ]
        return f"{self.feature}: " + " vs ".join(parts)

    def to_json(self) -> dict:
        return {"feature": self.feature, "heads": [{"source": s, **r} for s, r in self.heads]}


def merge(
    sources: list[tuple[str, list[dict]]], prefer: str | None = None, merger: str | None = None
) -> tuple[list[dict], list[Conflict]]:
    """``(merged records, conflicts)`` of ``[(name, records), ...]``; with conflicts the merged records are
    empty unless ``prefer`` (a source name) resolves every one. ``merger`` is named in the records a resolution adds.
    """
    names = [name for name, _ in sources]
    if prefer is not None and prefer not in names:
        raise SFCError(f"--prefer {prefer!r} is not one of the inputs ({', '.join(names)})")
    order: dict[str, int] = {}
    unique: dict[str, dict] = {}
    held: dict[str, set[str]] = {}  # source -> keys of its records
    for name, records in sources:
        held[name] = set()
        for r in records:
            r = check_record(r)
            k = _key(r)
            held[name].add(k)
            if k not in unique:
                order[k] = len(order)
                unique[k] = r
    heads: dict[str, list[tuple[str, dict]]] = {}
    for name, records in sources:
        last: dict[str, dict] = {}
        for r in records:
            last[check_record(r)["feature"]] = check_record(r)
        for fid, r in last.items():
            heads.setdefault(fid, []).append((name, r))
    conflicts, winners, resolutions = [], {}, []
    for fid, hs in heads.items():
        live = [(s, r) for s, r in hs if not any(_key(r) in held[t] and _key(r2) != _key(r) for t, r2 in hs if t != s)]
        distinct: dict[str, tuple[str, dict]] = {}
        for s, r in live:
            distinct.setdefault(_key(r), (s, r))
        live = list(distinct.values())
        standing = {r["label"] for _, r in live if r["status"] != "rejected"}
        disputed = any(  # one reviewer accepted a label another rejected
            {"accepted", "rejected"} <= {r["status"] for _, r in live if r["label"] == label} for label in standing
        )
        if len(standing) > 1 or disputed:
            chosen = next((r for s, r in live if s == prefer), None)
            if chosen is None:
                conflicts.append(Conflict(fid, live))
                continue
            others = "; ".join(f"{r['label']!r} ({r['author']}, {s})" for s, r in live if r is not chosen)
            note = f"merge: chose this label from {prefer} over {others}" + (f" ({merger})" if merger else "")
            resolutions.append(check_record(dict(chosen, created=now(), note=note)))
            continue
        pool = [x for x in live if x[1]["status"] != "rejected"] or live
        winners[fid] = max(pool, key=lambda x: (parse_time(x[1]["created"]), order[_key(x[1])]))[1]
    if conflicts and prefer is None:
        return [], conflicts
    merged = sorted(unique.values(), key=lambda r: (parse_time(r["created"]), order[_key(r)]))
    for fid, w in winners.items():  # each feature's winner is its last record
        rest = [r for r in merged if r["feature"] == fid]
        if rest and rest[-1] is not w:
            merged.remove(w)
            merged.append(w)
    return merged + resolutions, conflicts
