"""``sfc export CIRCUIT --format FMT -o FILE``: write a circuit as DOT, a figure, JSON or viewer JSON."""

from __future__ import annotations

from pathlib import Path

from ..errors import SFCError

_SUFFIXES = {".dot": "dot", ".gv": "dot", ".svg": "svg", ".png": "png", ".pdf": "pdf", ".json": "json"}


def _format(args) -> str:
    """``--format``, else from the ``-o`` suffix: a built-in's (``.svg``, ``.neuronpedia.json``, ...) or a registered
    exporter named like the suffix (``-o table.csv`` → a plugin's ``csv`` exporter)."""
    if args.format:
        return args.format
    if args.out:
        name = Path(args.out).name.lower()
        if name.endswith(".neuronpedia.json"):
            return "neuronpedia"
        suffix = Path(args.out).suffix.lower()
        fmt = _SUFFIXES.get(suffix)
        if fmt:
            return fmt
        from ..plugins import registry

        if suffix[1:] and suffix[1:] in registry("exporter"):
            return suffix[1:]
        raise SFCError(f"cannot tell the format from {args.out!r}: give --format")
    return "svg"


def label_options(pairs: list[str] | None) -> dict:
    """``--label-option key=value`` (repeatable) as keyword arguments; values read as JSON when they parse
    (numbers, true/false, lists), else kept as text."""
    import json

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SFCError(f"--label-option {pair!r}: expected key=value with a keyword name as key")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def labels(circuit, spec: str, options: dict, circuit_path=None, dashboards=None, force: bool = False):
    """``--labels``: an annotation file (JSON lines: ``sfc-annotations/1`` records or the paper's format), or the
    name of a label provider, given ``options``; ``force``: use annotations made on another SAE (recorded)."""
    from ..export import apply_labels
    from ..plugins import registry

    if Path(spec).is_file():
        return apply_labels(circuit, "annotations", path=spec, **{**options, **({"force": True} if force else {})})
    if spec == "auto":  # labels from feature dashboards (--dashboards DIR, or computed for toy circuits)
        from ..dashboards.labels import default_dashboards

        return apply_labels(circuit, spec, dashboards=default_dashboards(circuit_path, circuit, dashboards), **options)
    if spec in registry("label_provider"):
        import inspect

        from ..plugins import lookup

        try:
            inspect.signature(lookup("label_provider", spec)).bind(circuit, **options)
        except TypeError as exc:  # an option the provider does not take
            raise SFCError(f"label provider {spec!r} does not take these --label-option values: {exc}") from None
        return apply_labels(circuit, spec, **options)
    raise SFCError(
        f"--labels {spec!r}: no such file (nor a label provider: {', '.join(sorted(registry('label_provider')))})"
    )


def add_label_options(p) -> None:
    """``--labels``, ``--label-option`` and ``--force`` (``sfc export`` and ``sfc view``)."""
    p.add_argument(
        "--labels",
        help="feature labels: an annotation file (sfc-annotations/1 records from 'sfc annotate': accepted labels, "
        'marked with status and author; or the paper\'s {"Name", "Annotation"} lines) or a label provider name '
        "such as auto (scored) or neuronpedia",
    )
    p.add_argument(
        "--label-option",
        action="append",
        metavar="KEY=VALUE",
        help="an option for the --labels provider (repeatable; values read as JSON when they parse), e.g. "
        "status=accepted,proposed or status=all for annotations",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="use annotations made on another SAE than the circuit's (refused by default; recorded)",
    )


def target_threshold(circuit, target: float, node_threshold: float | None) -> float:
    """``--target-faithfulness``: the node threshold of the smallest circuit on the recorded held-out curve whose
    faithfulness reaches ``target`` (printed with its size and faithfulness)."""
    from ..curve import smallest_reaching
    from ..validation import threshold

    threshold(target, "--target-faithfulness")
    if node_threshold is not None:
        raise SFCError("give --node-threshold or --target-faithfulness, not both")
    if circuit.evaluation is None:
        raise SFCError(
            "--target-faithfulness: the circuit records no held-out evaluation (circuits from sfc discover do, "
            "unless --no-evaluate)"
        )
    point = smallest_reaching(circuit.evaluation, target)
    print(
        f"target faithfulness {target:g}: node threshold {point['node_threshold']:.4g}, {point['n_nodes']} nodes, "
        f"faithfulness {point['faithfulness']:.3f} (the smallest circuit on the recorded curve that reaches it)"
    )
    return point["node_threshold"]


def run(args) -> int:
    from ..circuit import Circuit
    from ..export import EXTENSIONS
    from ..plugins import lookup

    fmt = _format(args)
    exporter = lookup("exporter", fmt)  # unknown format: SFCError before any work
    label_opts = label_options(args.label_option)
    if label_opts and not args.labels:
        raise SFCError("--label-option needs --labels NAME")
    circuit = Circuit.from_json(args.circuit)
    node_threshold = args.node_threshold
    if args.target_faithfulness is not None:
        node_threshold = target_threshold(circuit, args.target_faithfulness, args.node_threshold)
    if node_threshold is not None or args.edge_threshold is not None:
        circuit = circuit.prune(node_threshold, args.edge_threshold)
    if args.labels:
        circuit = labels(circuit, args.labels, label_opts, args.circuit, args.dashboards, args.force)
    elif args.force:
        raise SFCError("--force applies to --labels FILE (annotations of another SAE)")
    out = Path(args.out) if args.out else Path(args.circuit).with_suffix(EXTENSIONS.get(fmt, f".{fmt}"))
    if out.resolve() == Path(args.circuit).resolve():
        raise SFCError(f"output {str(out)!r} would overwrite the input circuit; give another -o")
    options = {}
    if args.max_edges is not None:
        options["max_edges"] = None if args.max_edges < 0 else args.max_edges
    if args.order is not None:
        options["order"] = args.order
    if args.max_nodes_per_row is not None:
        if args.max_nodes_per_row == 0:
            raise SFCError("--max-nodes-per-row 0 would show no nodes: give N >= 1, or -1 for all")
        options["max_nodes_per_row"] = None if args.max_nodes_per_row < 0 else args.max_nodes_per_row
    if args.wrap is not None:
        if args.wrap < 1:
            raise SFCError(f"--wrap {args.wrap}: give at least 1 node per line")
        options["wrap"] = args.wrap
    if args.keep_isolated:
        options["keep_isolated"] = True
    if args.no_legend:
        options["legend"] = False
    exporter(circuit, out, **options)
    print(f"wrote {out} ({fmt}, {sum(n.kind != 'metric' for n in circuit.nodes)} nodes, {len(circuit.edges)} edges)")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a circuit.json as dot, svg, png, pdf, json or neuronpedia graph JSON"
    )
    p.add_argument("circuit", help="circuit file (sfc-circuit/1 JSON)")
    p.add_argument(
        "--format",
        "-f",
        help="exporter name: dot, svg, png, pdf, json, neuronpedia (alias circuit-tracer) "
        "or a plugin's (default: from the -o suffix, else svg)",
    )
    p.add_argument("-o", "--out", help="output file (default: the circuit path with the format's suffix)")
    p.add_argument("--node-threshold", type=float, help="keep nodes with |effect| above this (at least the circuit's)")
    p.add_argument("--edge-threshold", type=float, help="keep edges with |weight| above this (at least the circuit's)")
    p.add_argument(
        "--target-faithfulness",
        type=float,
        metavar="F",
        help="prune to the smallest circuit on the recorded held-out curve whose faithfulness is at least F "
        "(exits 2 naming the best when none is)",
    )
    add_label_options(p)
    p.add_argument(
        "--dashboards",
        help="with --labels auto: an 'sfc dashboards' output directory (default: "
        "dashboards/ next to the circuit, computed there for toy-world circuits)",
    )
    p.add_argument(
        "--max-edges",
        type=int,
        help="figures (svg/png/pdf/dot) show at most the N strongest edges "
        "(default: all in dot; 3 per node, at least 150, in figures; -1: all)",
    )
    p.add_argument(
        "--max-nodes-per-row",
        type=int,
        help='figures show each row\'s N strongest nodes and a "+K more" '
        "marker (default: all in dot; 20 in figures; -1: all)",
    )
    p.add_argument("--wrap", type=int, metavar="N", help="figures continue rows longer than N nodes on further lines")
    p.add_argument("--keep-isolated", action="store_true", help="figures keep nodes without edges (default: left out)")
    p.add_argument("--no-legend", action="store_true", help="figures without the legend")
    p.add_argument(
        "--order",
        choices=["layout", "index"],
        help="order within a row: cut crossings (layout, default) or by feature index",
    )
    p.set_defaults(func=run)
