"""``sfc view CIRCUIT.json [--dashboards DIR] -o SITE/ [--serve]``."""

from __future__ import annotations

from pathlib import Path

from ..errors import SFCError


def _dashboards(args, circuit):
    """``--dashboards DIR``; else ``dashboards/`` next to the circuit or, for toy circuits, computed there;
    else none (the cards then show effects and edges only)."""
    from ..dashboards.labels import default_dashboards

    if args.no_dashboards:
        return None
    try:
        return default_dashboards(args.circuit, circuit, args.dashboards, progress=not args.quiet)
    except SFCError:
        if args.dashboards:
            raise
        print(
            "note: no dashboards for this circuit (run 'sfc dashboards' and pass --dashboards DIR): cards show "
            "effects and edges only"
        )
        return None


def _annotation_records(spec: str) -> list | None:
    """The history of an ``sfc-annotations/1`` ``--labels`` file: the site carries it, so a reader's proposals and
    reviews download as the whole file with their records appended."""
    from ..annotations import is_annotations_file, read_annotations

    return read_annotations(spec) if Path(spec).is_file() and is_annotations_file(spec) else None


def run(args) -> int:
    from ..circuit import Circuit
    from ..viewer import build_site, serve
    from .export import label_options, labels

    options = label_options(args.label_option)
    if (options or args.force) and not args.labels:
        raise SFCError("--label-option and --force need --labels")
    circuit = Circuit.from_json(args.circuit)
    if args.node_threshold is not None or args.edge_threshold is not None:
        circuit = circuit.prune(args.node_threshold, args.edge_threshold)
    annotations = None
    if args.labels:
        circuit = labels(circuit, args.labels, options, args.circuit, args.dashboards, args.force)
        annotations = _annotation_records(args.labels)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SFCError(f"output {str(out)!r} exists and is not a directory")
    data = _dashboards(args, circuit)
    index = build_site(circuit, out, data, args.title, annotations=annotations)
    size = sum(
        p.stat().st_size
        for p in out.iterdir()
        if p.is_file() and p.name in ("index.html", "viewer.js", "viewer.css", "data.js")
    )
    print(
        f"wrote {index} ({sum(n.kind != 'metric' for n in circuit.nodes)} nodes, {len(circuit.edges)} edges, "
        f"{size / 1e6:.2f} MB); open it in a browser: file://{index.resolve()}"
    )
    if args.serve:
        serve(out, args.port)
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("view", help="a static site to explore a circuit (opens from file://)")
    p.add_argument("circuit", help="circuit file (sfc-circuit/1 JSON)")
    p.add_argument(
        "--dashboards",
        help="'sfc dashboards' output directory or file (default: dashboards/ next to the "
        "circuit; computed there for toy-world circuits)",
    )
    p.add_argument("--no-dashboards", action="store_true", help="cards without contexts (no dashboards needed)")
    from .export import add_label_options

    add_label_options(p)
    p.add_argument("--node-threshold", type=float, help="start from a pruned circuit (|effect| above this)")
    p.add_argument("--edge-threshold", type=float, help="start from a pruned circuit (|weight| above this)")
    p.add_argument("--title", help="page title (default: dataset and metric)")
    p.add_argument("-o", "--out", default="sfc-out/site", help="output directory (default ./sfc-out/site)")
    p.add_argument("--serve", action="store_true", help="then serve it on http://127.0.0.1:PORT")
    p.add_argument("--port", type=int, default=8000, help="port for --serve (default 8000; 0 picks a free one)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
