"""``sfc diff A.json B.json [-o DIR]``: compare two circuits (overlap, rank correlation, nodes in one only)."""

from __future__ import annotations

from pathlib import Path

from ..errors import SFCError


def run(args) -> int:
    from ..circuit import Circuit
    from ..diff import compare, figure, lines
    from ..files import strict_json, write_atomic

    if args.n_only < 0:
        raise SFCError(f"--n-only must be at least 0, got {args.n_only}")
    a, b = Circuit.from_json(args.a), Circuit.from_json(args.b)
    result = compare(a, b, (args.a, args.b), n_only=args.n_only)
    print("\n".join(lines(result)))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SFCError(f"output {str(out)!r} exists and is not a directory")
    written = [write_atomic(out / "diff.json", strict_json(result, indent=1) + "\n")]
    if result["comparable"]["by_id"] and not args.no_figure:
        written.append(write_atomic(out / "diff.png", figure(result)))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "diff", help="compare two circuits: node and edge overlap at matched sizes, rank correlation of effects"
    )
    p.add_argument("a", help="circuit A (sfc-circuit/1 JSON)")
    p.add_argument("b", help="circuit B")
    p.add_argument("-o", "--out", default="sfc-out/diff", help="output directory (default ./sfc-out/diff)")
    p.add_argument("--n-only", type=int, default=50, help="list at most N nodes found in one circuit only (default 50)")
    p.add_argument("--no-figure", action="store_true", help="write diff.json only")
    p.set_defaults(func=run)
