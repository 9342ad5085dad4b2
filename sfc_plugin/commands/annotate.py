"""``sfc annotate add|review|list|merge``: reviewed feature labels in ``sfc-annotations/1`` files.

    sfc annotate add team.jsonl resid_2/173 "RC verb, plural main subject" --author alice --circuit sfc-out/circuit.json
    sfc annotate review team.jsonl resid_2/173 --accept --reviewer bob --note "matches the top contexts"
    sfc annotate list team.jsonl [--status proposed] [--history] [--dashboards sfc-out/dashboards]
    sfc annotate merge team.jsonl from-viewer.jsonl -o team.jsonl     # exits 1 listing conflicts, writes nothing

Every write appends records and replaces the file atomically; nothing is ever edited in place.
"""

from __future__ import annotations

import json
import os

from ..errors import SFCError


def _author(value: str | None, option: str) -> str:
    """``--author`` / ``--reviewer``, else ``$SFC_AUTHOR``, else the login name."""
    import getpass

    name = value or os.environ.get("SFC_AUTHOR")
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = None
    if not name or not name.strip():
        raise SFCError(f"give {option} NAME (or set SFC_AUTHOR)")
    return name.strip()


def _fingerprint(args, feature: str) -> str:
    from ..annotations import sae_fingerprints
    from ..circuit import Circuit

    sub = feature.rsplit("/", 1)[0]
    if args.sae_fingerprint:
        return args.sae_fingerprint.strip().lower()
    if args.circuit:
        fps = sae_fingerprints(Circuit.from_json(args.circuit).provenance)
        if sub not in fps:
            raise SFCError(f"circuit {args.circuit!r} records no SAE for submodule {sub!r} (has: {', '.join(fps)})")
        return fps[sub]
    raise SFCError(
        "which SAE is this label for? give --circuit CIRCUIT.json (its SAEs' fingerprints) or --sae-fingerprint SHA256"
    )


def _add(args) -> int:
    from ..annotations import append_annotations, feature_id, make_record

    fid = feature_id(args.feature)
    rec = make_record(
        fid,
        _fingerprint(args, fid),
        args.label,
        _author(args.author, "--author"),
        description=args.description or "",
        evidence=args.evidence or [],
        decision=args.decision,
    )
    records = append_annotations(args.file, [rec])
    print(f"{args.file}: {fid} proposed {rec['label']!r} by {rec['author']} ({len(records)} records)")
    return 0


def _review(args) -> int:
    from ..annotations import append_annotations, read_annotations, review_record

    if args.accept == args.reject:
        raise SFCError("give --accept or --reject")
    records = read_annotations(args.file)
    rec = review_record(
        records,
        args.feature,
        "accepted" if args.accept else "rejected",
        _author(args.reviewer, "--reviewer"),
        note=args.note,
        self_review=args.self_review,
    )
    append_annotations(args.file, [rec])
    print(f"{args.file}: {rec['feature']} {rec['label']!r} {rec['status']} by {rec['reviewer']}")
    return 0


def _list(args) -> int:
    from ..annotations import MARKS, feature_id, latest, read_annotations, shown_statuses

    records = read_annotations(args.file)
    if args.feature:
        fid = feature_id(args.feature)
        records = [r for r in records if r["feature"] == fid]
    rows = records if args.history else list(latest(records).values())
    if args.status:
        keep = shown_statuses(args.status)
        rows = [r for r in rows if r["status"] in keep]
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    cards = None
    if args.dashboards:
        from ..dashboards import feature_card, load_dashboards

        cards = load_dashboards(args.dashboards)["features"]
    for r in rows:
        who = r["author"] + (f", {r['status']} by {r['reviewer']}" if r["reviewer"] else "")
        print(f"{MARKS[r['status']]} {r['feature']:<14} {r['label']}  [{r['status']}; {who}; {r['created']}]")
        for extra in (
            r["description"],
            r["note"] and f"note: {r['note']}",
            "decision" in r and f"decision: {r['decision']}",
        ):
            if extra:
                print(f"    {extra}")
        if r["evidence"]:
            print(f"    evidence: {', '.join(r['evidence'])}")
        if cards is not None and r["feature"] in cards:
            card = feature_card(cards[r["feature"]], n_top=3, n_quantile=0, annotation=r)
            print("\n".join("    | " + line for line in card.splitlines()))
    summary = {s: sum(r["status"] == s for r in latest(records).values()) for s in MARKS}
    print(f"{len(latest(records))} features: " + ", ".join(f"{n} {s}" for s, n in summary.items()))
    return 0


def _merge(args) -> int:
    from ..annotations import merge, read_annotations, write_annotations

    sources = [(str(p), read_annotations(p)) for p in args.files]
    merged, conflicts = merge(sources, prefer=args.prefer, merger=args.author)
    if conflicts:
        for c in conflicts:
            print(f"conflict: {c.line()}")
        print(
            f"{len(conflicts)} conflicting label{'s' if len(conflicts) > 1 else ''}: nothing written. Review them in one "
            "file (sfc annotate review), or pass --prefer FILE to keep that file's labels (recorded)"
        )
        return 1
    write_annotations(args.out, merged)
    n_in = sum(len(r) for _, r in sources)
    print(f"wrote {args.out}: {len(merged)} records ({n_in} read from {len(sources)} files), no conflicts")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("annotate", help="reviewed feature labels: add, review, list and merge annotation files")
    sub = p.add_subparsers(dest="action", required=True)

    a = sub.add_parser("add", help="propose a label for a feature (appends a record)")
    a.add_argument("file", help="annotations file (sfc-annotations/1 JSON lines; created if missing)")
    a.add_argument("feature", help="feature id, e.g. resid_2/173")
    a.add_argument("label", help="the label")
    a.add_argument("--description", help="a longer description")
    a.add_argument("--author", help="who wrote the label (default $SFC_AUTHOR, else the login name)")
    a.add_argument("--circuit", help="circuit.json whose SAE the feature belongs to (its recorded fingerprint)")
    a.add_argument("--sae-fingerprint", metavar="SHA256", help="the SAE's fingerprint (as circuits record it)")
    a.add_argument(
        "--evidence",
        action="append",
        metavar="TEXT",
        help="evidence: a dashboard context id (context:812) or text (repeatable)",
    )
    a.add_argument("--decision", choices=["ablate", "keep"], help="what SHIFT's file judge does with this feature")
    a.set_defaults(func=_add)

    r = sub.add_parser("review", help="accept or reject a feature's current label (appends a record)")
    r.add_argument("file", help="annotations file")
    r.add_argument("feature", help="feature id")
    r.add_argument("--accept", action="store_true", help="accept the current label")
    r.add_argument("--reject", action="store_true", help="reject the current label")
    r.add_argument("--reviewer", help="who reviews (default $SFC_AUTHOR, else the login name)")
    r.add_argument("--note", help="why")
    r.add_argument("--self-review", action="store_true", help="record a review of your own label (refused by default)")
    r.set_defaults(func=_review)

    li = sub.add_parser("list", help="each feature's current label, status, author and reviewer")
    li.add_argument("file", help="annotations file")
    li.add_argument("--status", help="only these statuses (proposed, accepted, rejected, comma-separated)")
    li.add_argument("--feature", help="only this feature")
    li.add_argument("--history", action="store_true", help="every record, oldest first (default: the current ones)")
    li.add_argument("--dashboards", help="'sfc dashboards' directory: print each feature's evidence card")
    li.add_argument("--json", action="store_true", help="the records as JSON")
    li.set_defaults(func=_list)

    m = sub.add_parser(
        "merge", help="merge annotation files; conflicting labels are listed (exit 1) instead of one being picked"
    )
    m.add_argument("files", nargs="+", help="annotation files (e.g. the team's and a viewer download)")
    m.add_argument("-o", "--out", required=True, help="merged file (may be one of the inputs)")
    m.add_argument("--prefer", metavar="FILE", help="on conflicts, keep this input's labels (the choice is recorded)")
    m.add_argument("--author", help="who merges (named in the records a --prefer choice adds)")
    m.set_defaults(func=_merge)
