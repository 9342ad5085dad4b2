"""``sfc diff A.json B.json [-o DIR]``: compare two circuits (overlap, rank correlation, nodes in one only)."""

from __future__ import annotations

from pathlib import Path

from ..diff import MIN_COSINE
from ..errors import SFCError


def _decoders(circuit, path: str) -> dict | None:
    """``{submodule: W_dec}`` of the SAEs the circuit records (loaded from its specs; None, said, when they cannot be)."""
    from ..world import World, recorded_specs

    try:
        world = World.load(**recorded_specs(circuit.provenance))
    except SFCError as exc:
        print(f"{path}: its SAEs cannot be loaded to match features ({exc})")
        return None
    return {name: sub.W_dec for name, sub in world.by_name.items()}


def run(args) -> int:
    from ..circuit import Circuit
    from ..diff import comparability, compare, figure, lines
    from ..files import strict_json, write_atomic

    if args.n_only < 0:
        raise SFCError(f"--n-only must be at least 0, got {args.n_only}")
    if not 0 < args.min_cosine <= 1:
        raise SFCError(f"--min-cosine must be in (0, 1], got {args.min_cosine}")
    a, b = Circuit.from_json(args.a), Circuit.from_json(args.b)
    decoders = None
    if not comparability(a, b)[0] and not args.no_match:
        decoders = _decoders(a, args.a), _decoders(b, args.b)
        if None in decoders:
            decoders = None
    result = compare(a, b, (args.a, args.b), n_only=args.n_only, decoders=decoders, min_cosine=args.min_cosine)
    print("\n".join(lines(result)))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SFCError(f"output {str(out)!r} exists and is not a directory")
    written = [write_atomic(out / "diff.json", strict_json(result, indent=1) + "\n")]
    if "nodes" in result and not args.no_figure:
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
    p.add_argument(
        "--no-match",
        action="store_true",
        help="on other SAEs, do not load them to match features by decoder direction",
    )
    p.add_argument(
        "--min-cosine",
        type=float,
        default=MIN_COSINE,
        help=f"on other SAEs, match each feature to the closest decoder direction if at least this similar "
        f"(default {MIN_COSINE})",
    )
    p.set_defaults(func=run)
