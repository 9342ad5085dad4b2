"""``sfc discover``: a circuit for a dataset's pairs (default: across-RC agreement on the shipped toy world)."""

from __future__ import annotations

import time

from . import options as opt


def add_parser(subparsers) -> None:
    from ..config import DiscoverConfig

    d = subparsers.add_parser(
        "discover", help="discover a circuit (default: across-RC agreement on the shipped toy world)"
    )
    opt.add_options(
        d,
        DiscoverConfig,
        help={"model": "TransformerLens model name, Hugging Face model directory, or sfc model directory"},
    )
    opt.add_overwrite(d)
    d.add_argument(
        "--allow-unk", action="store_true", help="accept words outside the tokenizer's vocabulary (unknown token)"
    )
    d.add_argument("--config", help="TOML file with any of these options (keys as the long option names)")
    opt.add_quiet(d)
    d.set_defaults(func=run)


def run(args) -> int:
    from .. import distributed

    group = distributed.init()  # under torchrun: data parallel over ranks, rank 0 writes
    try:
        return _discover(args, group)
    finally:
        distributed.shutdown()


def _discover(args, group) -> int:
    from ..config import DiscoverConfig
    from ..data import load_dataset
    from ..discovery import discover
    from ..files import check_output_dir, write_set

    s = opt.settings(args, "discover")
    check_output_dir(s["out"], overwrite=args.overwrite)  # before any expensive work
    started = time.perf_counter()
    main = group is None or group.is_main
    device = s["device"] or (group.device if group is not None and group.backend == "nccl" else None)
    world = opt.load_world(s, device)
    records = load_dataset(s["data"], s["split"])
    circuit = discover(
        world,
        records,
        **DiscoverConfig(**s).pipeline_kwargs(),
        progress=not args.quiet and main,
        distributed=group is not None,
        allow_unk=args.allow_unk,
        provenance={"dataset": s["data"], "split": s["split"], "model_source": world.source, "preset": s["preset"]},
    )
    if not main:
        return 0
    files = {"circuit.json": circuit.to_json() + "\n", "circuit.dot": circuit.to_dot()}
    from ..export.render import dot_binary, render

    if dot_binary():  # Graphviz installed: the figure too
        files["circuit.svg"] = render(circuit, "svg")
    written = write_set(s["out"], files, overwrite=args.overwrite)  # all three land together, or none
    print(circuit.summary())
    print(f"time: {time.perf_counter() - started:.1f}s")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
