"""``sfc discover``: a circuit for a dataset's pairs (default: across-RC agreement on the shipped toy world)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

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


def held_out(s: dict, discovery: list[dict]) -> tuple[list[dict] | None, str | None, str | None, str]:
    """The held-out pairs discover evaluates on: ``(records, data, split, note)``; records None (with the note
    saying why) when there are none. Explicit choices that fail (``--eval-data``, ``--target-faithfulness``)
    raise SFCError; the default (the dataset's held-out split) is skipped with a note."""
    from ..data import load_dataset, pair_fingerprint
    from ..errors import SFCError

    if not s["evaluate"]:
        if s["target_faithfulness"] is not None:
            raise SFCError("--target-faithfulness needs the held-out evaluation: drop --no-evaluate")
        return None, None, None, "not evaluated (--no-evaluate)"
    explicit = s["eval_data"] is not None or s["target_faithfulness"] is not None
    data = s["eval_data"] or s["data"]
    split = None if Path(str(data)).is_file() else s["eval_split"]
    if s["eval_data"] is None and Path(str(data)).is_file():
        note = "not evaluated: --data is a file, give --eval-data FILE with held-out pairs"
        if explicit:
            raise SFCError(f"--target-faithfulness: {note[len('not evaluated: ') :]}")
        return None, None, None, note
    try:
        records = load_dataset(data, split)
    except SFCError as exc:
        if explicit:
            raise
        return None, None, None, f"not evaluated: no held-out pairs ({exc}); give --eval-data FILE"
    records = records[: s["n_eval"]] if s["n_eval"] else records
    used = {pair_fingerprint(r) for r in discovery}
    overlap = sum(pair_fingerprint(r) in used for r in records)
    if overlap:
        where = f"{data}" + (f", split {split}" if split else "")
        message = f"{overlap} of the {len(records)} held-out pairs ({where}) are discovery pairs"
        if explicit:
            raise SFCError(f"{message}: give --eval-data FILE with other pairs")
        return None, None, None, f"not evaluated: {message}; give --eval-data FILE"
    if not records:
        raise SFCError(f"no held-out pairs in {data}" + (f", split {split}" if split else ""))
    return records, str(data), split, ""


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
    eval_records, eval_data, eval_split, note = held_out(s, records[: s["n_examples"]] if s["n_examples"] else records)
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
    if eval_records is not None:
        circuit, note = _evaluate(args, s, world, circuit, eval_records, eval_data, eval_split)
    files = {"circuit.json": circuit.to_json() + "\n", "circuit.dot": circuit.to_dot()}
    from ..export.render import dot_binary, render

    if dot_binary():  # Graphviz installed: the figure too
        files["circuit.svg"] = render(circuit, "svg")
    written = write_set(s["out"], files, overwrite=args.overwrite)  # all three land together, or none
    print(circuit.summary(warnings=False))
    if note:
        print(note)
    for warning in circuit.warnings:
        print(f"sfc: warning: {warning}", file=sys.stderr)
    print(f"time: {time.perf_counter() - started:.1f}s")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _evaluate(args, s, world, circuit, records, data, split):
    """The held-out evaluation of ``circuit`` recorded in it (and, with ``--target-faithfulness``, the smallest
    circuit on the curve that reaches it); returns ``(circuit, note)``."""
    from ..curve import smallest_reaching
    from ..errors import SFCError
    from ..evaluation import attach, evaluate
    from ..paths import health_warnings

    started = time.perf_counter()
    try:
        result = evaluate(
            world,
            circuit,
            records,
            ablation="mean",
            batch_size=s["batch_size"],
            max_memory=s["max_memory"],
            progress=not args.quiet,
            allow_unk=args.allow_unk,
        )
    except SFCError as exc:
        if s["eval_data"] is not None or s["target_faithfulness"] is not None:
            raise
        return circuit, f"not evaluated: {exc}"
    attach(circuit, result, data, split)
    timings = circuit.provenance.get("timings")
    if isinstance(timings, dict):
        timings["evaluation_seconds"] = round(time.perf_counter() - started, 3)
    note = ""
    target = s["target_faithfulness"]
    if target is not None:
        point = smallest_reaching(circuit.evaluation, target)
        found = circuit.node_threshold
        circuit = circuit.prune(point["node_threshold"])
        circuit.evaluation["target_faithfulness"] = target
        circuit.evaluation["discovery_node_threshold"] = found
        note = (
            f"target faithfulness {target:g}: node threshold {point['node_threshold']:.4g}, {point['n_nodes']} nodes, "
            f"faithfulness {point['faithfulness']:.3f} (the smallest circuit on the held-out curve that reaches it)"
        )
    circuit.warnings = health_warnings(circuit)
    return circuit, note
