"""``sfc export CIRCUIT --format FMT -o FILE``: write a circuit as DOT, a figure, JSON or viewer JSON."""

from __future__ import annotations

from pathlib import Path

from ..errors import SFCError

_SUFFIXES = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".pdf": "pdf", ".json": "json"}


def _format(args) -> str:
    if args.format:
        return args.format
    if args.out:
        fmt = _SUFFIXES.get(Path(args.out).suffix.lower())
        if fmt:
            return fmt
        raise SFCError(f"cannot tell the format from {args.out!r}: give --format")
    return "svg"


def _labels(circuit, spec: str, circuit_path=None, dashboards=None):
    """``--labels``: an annotation file (JSON lines), or the name of a label provider that needs no arguments."""
    from ..plugins import registry
    from . import apply_labels

    if Path(spec).is_file():
        return apply_labels(circuit, "annotations", path=spec)
    if spec == "auto":  # labels from feature dashboards (--dashboards DIR, or computed for toy circuits)
        from ..dashboards.labels import default_dashboards

        return apply_labels(circuit, spec, dashboards=default_dashboards(circuit_path, circuit, dashboards))
    if spec in registry("label_provider"):
        return apply_labels(circuit, spec)
    raise SFCError(f"--labels {spec!r}: no such file (nor a label provider: {', '.join(sorted(registry('label_provider')))})")


def cmd_export(args) -> int:
    from ..circuit import Circuit
    from ..plugins import lookup
    from . import EXTENSIONS

    fmt = _format(args)
    exporter = lookup("exporter", fmt)  # unknown format: SFCError before any work
    circuit = Circuit.from_json(args.circuit)
    if args.node_threshold is not None or args.edge_threshold is not None:
        circuit = circuit.prune(args.node_threshold, args.edge_threshold)
    if args.labels:
        circuit = _labels(circuit, args.labels, args.circuit, args.dashboards)
    out = Path(args.out) if args.out else Path(args.circuit).with_suffix(EXTENSIONS.get(fmt, f".{fmt}"))
    if out.resolve() == Path(args.circuit).resolve():
        raise SFCError(f"output {str(out)!r} would overwrite the input circuit; give another -o")
    options = {}
    if args.max_edges is not None:
        options["max_edges"] = None if args.max_edges < 0 else args.max_edges
    if args.order is not None:
        options["order"] = args.order
    exporter(circuit, out, **options)
    print(f"wrote {out} ({fmt}, {sum(n.kind != 'metric' for n in circuit.nodes)} nodes, {len(circuit.edges)} edges)")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a circuit.json as dot, svg, png, pdf, json or neuronpedia graph JSON")
    p.add_argument("circuit", help="circuit file (sfc-circuit/1 JSON)")
    p.add_argument("--format", "-f", help="exporter name: dot, svg, png, pdf, json, neuronpedia or a plugin's "
                                          "(default: from the -o suffix, else svg)")
    p.add_argument("-o", "--out", help="output file (default: the circuit path with the format's suffix)")
    p.add_argument("--node-threshold", type=float, help="keep nodes with |effect| above this (at least the circuit's)")
    p.add_argument("--edge-threshold", type=float, help="keep edges with |weight| above this (at least the circuit's)")
    p.add_argument("--labels", help="feature labels: a JSON-lines annotation file ({\"Name\", \"Annotation\"}) "
                                    "or a label provider name such as auto or neuronpedia")
    p.add_argument("--dashboards", help="with --labels auto: an 'sfc dashboards' output directory (default: "
                                        "dashboards/ next to the circuit, computed there for toy-world circuits)")
    p.add_argument("--max-edges", type=int, help="figures (svg/png/pdf/dot) show at most the N strongest edges "
                                                 "(default: all in dot; 3 per node, at least 150, in figures; -1: all)")
    p.add_argument("--order", choices=["layout", "index"], help="order within a row: cut crossings (layout, default) "
                                                                "or by feature index")
    p.set_defaults(func=cmd_export)
