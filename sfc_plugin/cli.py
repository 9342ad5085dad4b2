"""The ``sfc`` command. Bad input exits 2 with a one-line message; progress bars go to stderr."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

from .errors import SFCError

DEFAULTS = {
    "model": None,
    "sae": None,
    "data": "toy/sva-rc",
    "split": "train",
    "metric": None,
    "method": "ig",
    "steps": 10,
    "node_threshold": 0.1,
    "edge_threshold": 0.01,
    "aggregation": "sum",
    "batch_size": 16,
    "device": None,
    "n_examples": 40,
    "out": "sfc-out",
    "edges": True,
    "preset": None,
    "dtype": None,
    "max_memory": None,
}


EVALUATE_DEFAULTS = {
    "model": None,
    "sae": None,
    "data": None,
    "split": "test",
    "ablation": "mean",
    "thresholds": None,
    "n_thresholds": 15,
    "start_layer": 0,
    "features_only": False,
    "n_examples": DEFAULTS["n_examples"],
    "batch_size": None,
    "device": None,
    "out": "sfc-out",
    "allow_overlap": False,
}
# SHIFT trains and evaluates probes on whole splits by default (not discover's 40): with 40 balanced test
# examples worst-group accuracy rests on 10 per group, and the toy table then ranks the skylines below SHIFT.
SHIFT_DEFAULTS = {
    "model": None,
    "sae": None,
    "preset": None,
    "device": None,
    "dtype": None,
    "data": "toy/bios",
    "layer": None,
    "judge": "concept",
    "compare_judge": "labelled",
    "spurious_concept": None,
    "evidence_text": None,
    "concept_threshold": None,
    "decisions": None,
    "top_k": 50,
    "threshold": None,
    "steps": 10,
    "n_train": None,
    "n_eval": None,
    "batch_size": DEFAULTS["batch_size"],
    "seed": 0,
    "out": "sfc-out",
    "allow_overlap": False,
}
COMMANDS = {"discover": DEFAULTS, "evaluate": EVALUATE_DEFAULTS, "shift": SHIFT_DEFAULTS}
# top-level keys of a discover config that other commands reuse
SHARED = {
    "evaluate": ("model", "sae", "device", "batch_size"),
    "shift": ("model", "sae", "preset", "device", "batch_size"),
}


def _load_config(path: str | None, command: str = "discover") -> dict:
    """The ``[command]`` table of a TOML file, else its top-level keys (for evaluate and shift: only those they
    share with discover — model, sae, device, batch_size, and preset for shift — so one run.toml serves all)."""
    if not path:
        return {}
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    from .validation import read_text_lines

    try:
        raw = tomllib.loads("\n".join(line for _, line in read_text_lines(path, "config file")))
    except tomllib.TOMLDecodeError as exc:
        raise SFCError(f"config file {path!r} is not valid TOML ({exc})") from None
    known = COMMANDS[command]
    table = raw.get(command)
    if table is not None and not isinstance(table, dict):
        raise SFCError(f"config file {path!r}: {command!r} must be a table ([{command}])")
    top = {k.replace("-", "_"): v for k, v in raw.items() if k not in COMMANDS}
    if table is None and command != "discover":
        unknown = sorted(set(top) - set(DEFAULTS) - set(known))
        if unknown:
            raise SFCError(f"config file {path!r}: unknown key {unknown[0]!r}")
        return {k: v for k, v in top.items() if k in SHARED[command]}
    config = top if table is None else {k.replace("-", "_"): v for k, v in table.items()}
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise SFCError(
            f"config file {path!r}: unknown key {unknown[0]!r}" + (f" in [{command}]" if table is not None else "")
        )
    return config


def _settings(args, command: str = "discover", fallback: dict | None = None) -> dict:
    """Command line over config file over ``fallback`` (e.g. a circuit's provenance) over defaults."""
    config = _load_config(args.config, command)
    fallback = fallback or {}
    return {
        k: getattr(args, k) if getattr(args, k, None) is not None else config.get(k, fallback.get(k, default))
        for k, default in COMMANDS[command].items()
    }


def _provenance_world(prov: dict, what: str = "circuit") -> dict:
    """``{"model", "sae"}`` specs recorded in a circuit's (or an edit's) provenance; ``{}`` for the toy world."""
    model = prov.get("model_source") or prov.get("model_spec")
    saes = prov.get("sae_sources")
    if not saes:
        saes = [str(i["spec"]) for i in prov.get("saes") or [] if isinstance(i, dict) and i.get("spec")] or None
    if model == "toy" or saes == "toy" or (model is None and saes is None and prov.get("model") == "sfc-toy"):
        return {}
    if model is None or not saes:
        raise SFCError(
            f"the {what} does not record where its model and SAEs came from "
            f"(model {prov.get('model')!r}): give --model and --sae"
        )
    return {"model": str(model), "sae": [saes] if isinstance(saes, str) else [str(x) for x in saes]}


def _fill_world(s: dict, prov: dict, what: str = "circuit") -> dict:
    """Model and SAE specs not given (command line or config) taken from the circuit's provenance."""
    if s["model"] is None or not s["sae"]:
        recorded = _provenance_world(prov, what)
        s = dict(s, model=s["model"] or recorded.get("model"), sae=s["sae"] or recorded.get("sae"))
    return s


def _check_overlap(records: list[dict], prov: dict, data: str, split: str | None) -> None:
    """Refuse evaluation pairs the circuit was discovered on (``provenance["pair_hashes"]``; older circuits:
    the same dataset and split)."""
    from .data import pair_fingerprint

    used = set(prov.get("pair_hashes") or [])
    if used:
        overlap = sum(pair_fingerprint(r) in used for r in records)
    else:
        same_file = Path(str(data)).is_file() and str(data) == str(prov.get("dataset"))
        same_split = str(data) == str(prov.get("dataset")) and split == prov.get("split")
        overlap = len(records) if same_file or same_split else 0
    if overlap:
        where = f"{data}" + (f", split {split}" if split and not Path(str(data)).is_file() else "")
        raise SFCError(
            f"{overlap} of the {len(records)} evaluation pairs ({where}) are pairs the circuit was "
            "discovered on: evaluate on held-out pairs (--data, --split) or pass --allow-overlap"
        )


def _check_options(values: dict, config: str | None = None, from_config=()) -> None:
    """Validate options by their command-line names before anything is loaded (exit 2 naming the option)."""
    from . import validation as check

    for key, value in values.items():
        name = "--" + key.replace("_", "-") + (f" (config file {config!r})" if key in from_config else "")
        if value is None:
            continue
        if key in ("node_threshold", "edge_threshold", "threshold", "concept_threshold"):
            check.threshold(value, name)
        elif key in ("steps", "batch_size", "n_examples", "n_thresholds", "top_k", "n_train", "n_eval"):
            check.integer(value, name, minimum=1)
        elif key in ("start_layer", "seed", "layer"):
            check.integer(value, name, minimum=0)
        elif key == "thresholds":
            for t in value:
                check.threshold(t, name)
        elif key == "device":
            check.device(value, name)
        elif key in (
            "model",
            "data",
            "split",
            "metric",
            "method",
            "out",
            "preset",
            "dtype",
            "judge",
            "compare_judge",
            "spurious_concept",
            "evidence_text",
            "decisions",
        ) and not isinstance(value, str):
            raise SFCError(f"{name} must be a string, got {value!r}")
        elif key in ("edges", "allow_overlap") and not isinstance(value, bool):
            raise SFCError(f"{name} must be true or false, got {value!r}")


def _load_world(model: str | None, sae, device: str | None, dtype: str | None = None, preset: str | None = None):
    """The model and SAEs named on the command line or by a preset (the shipped toy world when none is given).

    ``--model`` / ``--sae`` given with ``--preset`` replace the preset's.
    """
    from .models import resolve_world

    processing = None
    if preset:
        from .presets import get_preset

        p = get_preset(preset)
        processing = p.processing if not sae else None
        model, sae = model or p.model, sae or p.sae_specs
    if model is None and not sae:
        from . import toy

        toy_model, toy_saes = toy.load(device=device)
        return resolve_world(toy_model, toy_saes, dtype=dtype), "toy"
    if model is None or not sae:
        raise SFCError("give both --model and --sae, or --preset (or none of them, for the toy world)")
    specs = [sae] if isinstance(sae, str) else list(sae)
    return resolve_world(model, specs, device=device, dtype=dtype, processing=processing), model


def cmd_discover(args) -> int:
    from . import distributed

    group = distributed.init()  # under torchrun: data parallel over ranks, rank 0 writes
    try:
        return _discover(args, group)
    finally:
        distributed.shutdown()


def _discover(args, group) -> int:
    from .data import load_dataset
    from .discovery import discover
    from .files import check_output_dir, write_set

    s = _settings(args)
    _check_options(s, args.config, {k for k in _load_config(args.config) if getattr(args, k, None) is None})
    check_output_dir(s["out"], overwrite=args.overwrite)  # before any expensive work
    started = time.perf_counter()
    main = group is None or group.is_main
    device = s["device"] or (group.device if group is not None and group.backend == "nccl" else None)
    (model, saes), model_name = _load_world(s["model"], s["sae"], device, s["dtype"], s["preset"])
    records = load_dataset(s["data"], s["split"])
    circuit = discover(
        model,
        saes,
        records,
        metric=s["metric"],
        method=s["method"],
        steps=s["steps"],
        node_threshold=s["node_threshold"],
        edge_threshold=s["edge_threshold"],
        aggregation=s["aggregation"],
        edges=s["edges"],
        batch_size=s["batch_size"],
        n_examples=s["n_examples"],
        progress=not args.quiet and main,
        distributed=group is not None,
        allow_unk=args.allow_unk,
        max_memory=s["max_memory"],
        provenance={"dataset": s["data"], "split": s["split"], "model_source": model_name, "preset": s["preset"]},
    )
    if not main:
        return 0
    files = {"circuit.json": circuit.to_json() + "\n", "circuit.dot": circuit.to_dot()}
    from .export.render import dot_binary, render

    if dot_binary():  # Graphviz installed: the figure too
        files["circuit.svg"] = render(circuit, "svg")
    written = write_set(s["out"], files, overwrite=args.overwrite)  # all three land together, or none
    print(circuit.summary())
    print(f"time: {time.perf_counter() - started:.1f}s")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_evaluate(args) -> int:
    from .circuit import Circuit
    from .data import load_dataset
    from .evaluation import evaluate, format_table, write_report
    from .files import check_output_dir

    _check_options(
        {
            k: getattr(args, k, None)
            for k in ("thresholds", "n_thresholds", "start_layer", "n_examples", "batch_size", "device")
        }
    )
    circuit = Circuit.from_json(args.circuit)
    prov = circuit.provenance
    recorded = prov.get("dataset")
    s = _settings(args, "evaluate", {"data": None if recorded in (None, "(in memory)") else recorded})
    if not args.preset:
        s = _fill_world(s, prov)
    check_output_dir(s["out"], overwrite=args.overwrite)
    (model, saes), _ = _load_world(s["model"], s["sae"], s["device"], args.dtype, args.preset)
    data = s["data"]
    if not data:
        raise SFCError("the circuit does not name its dataset: give --data")
    split = None if Path(str(data)).is_file() else s["split"]  # named datasets: the held-out split by default
    records = load_dataset(data, split)
    if s["n_examples"] is not None:
        records = records[: int(s["n_examples"])]
    if not s["allow_overlap"]:
        _check_overlap(records, prov, data, split)
    result = evaluate(
        model,
        saes,
        circuit,
        records,
        ablation=s["ablation"],
        thresholds=s["thresholds"],
        n_thresholds=s["n_thresholds"],
        start_layer=s["start_layer"],
        include_errors=not s["features_only"],
        batch_size=s["batch_size"],
        progress=not args.quiet,
        force=args.force,
        allow_unk=args.allow_unk,
        max_memory=args.max_memory,
    )
    result.update(dataset=data, split=split, circuit_file=str(args.circuit))
    if result["provenance_check"]["status"] == "forced":
        print(f"sfc: warning: --force: {result['provenance_check']['mismatches'][0]}", file=sys.stderr)
    paths = write_report(result, s["out"], title=f"{data}: {s['ablation']} ablation", overwrite=args.overwrite)
    print(format_table(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _check_shift_overlap(train: list[dict], evaluation: dict[str, list[dict]], data: str) -> None:
    """Refuse validation or test examples that are training examples (by the hash of their text)."""
    from .data import example_fingerprint

    seen = {example_fingerprint(r) for r in train}
    for split, records in evaluation.items():
        n = sum(example_fingerprint(r) in seen for r in records)
        if not n:
            continue
        if Path(str(data)).is_file():
            raise SFCError(
                f"{n} of the {len(records)} {split} examples are training examples: {data} is one file, so "
                "every split reads it; use a dataset with train, val and test splits or pass --allow-overlap"
            )
        raise SFCError(
            f"{n} of the {len(records)} {split} examples of {data} are training examples (SHIFT finds its "
            "features and trains its probe on those): give held-out splits or pass --allow-overlap"
        )


def cmd_shift(args) -> int:
    from .data import load_dataset
    from .files import check_output_dir, strict_json, write_set
    from .shifting.cli import side_effect_options
    from .shifting.pipeline import format_table, public, shift
    from .shifting.side_effects import format_side_effects

    s = _settings(args, "shift")
    _check_options(s, args.config, {k for k in _load_config(args.config, "shift") if getattr(args, k, None) is None})
    check_output_dir(s["out"], overwrite=args.overwrite)
    (model, saes), model_name = _load_world(s["model"], s["sae"], s["device"], s["dtype"], s["preset"])
    splits = {"train": "train", "val": "val", "test": "test"}
    train, val, test = (load_dataset(s["data"], splits[name]) for name in ("train", "val", "test"))
    train, val, test = train[: s["n_train"]], val[: s["n_eval"]], test[: s["n_eval"]]
    if not s["allow_overlap"]:
        _check_shift_overlap(train, {"val": val, "test": test}, s["data"])
    options = {"decisions": s["decisions"], "concept": s["spurious_concept"], "evidence_text": s["evidence_text"]}
    if s["concept_threshold"] is not None:
        options["concept_threshold"] = s["concept_threshold"]
    compare = None if str(s["compare_judge"]).lower() == "none" else s["compare_judge"]
    provenance = {
        "dataset": s["data"],
        "splits": None if Path(str(s["data"])).is_file() else splits,
        "model_source": model_name,
        "preset": s["preset"],
        "allow_overlap": bool(s["allow_overlap"]),
    }
    result = shift(
        model,
        saes,
        train,
        test,
        val,
        layer=s["layer"],
        judge=s["judge"],
        compare_judge=compare,
        top_k=s["top_k"],
        threshold=s["threshold"],
        steps=s["steps"],
        seed=s["seed"],
        batch_size=s["batch_size"],
        judge_options=options,
        progress=not args.quiet,
        side_effects=False if args.no_side_effects else side_effect_options(args),
        provenance=provenance,
    )
    out = Path(s["out"])
    write_set(
        out,
        {
            "shift.json": strict_json(public(result), indent=1) + "\n",
            "edit.json": strict_json(result["edit"].to_dict(), indent=1) + "\n",
        },
        overwrite=args.overwrite,
    )
    print(format_table(result))
    if "side_effects" in result:
        print()
        print(format_side_effects(result["side_effects"]))
    print(f"ablated {result['n_ablated']} of {len(result['features'])} candidate features ({s['judge']} judge)")
    print(f"wrote {out / 'shift.json'} and {out / 'edit.json'}")
    return 0


def cmd_plugins(args) -> int:
    from .plugins import REGISTRIES, broken_plugins, get_plugin_manager, registry

    with warnings.catch_warnings():  # broken plugins are listed below, with the reason
        warnings.simplefilter("ignore", UserWarning)
        pm = get_plugin_manager()
        for kind in REGISTRIES:
            print(f"{kind}s:")
            for name, entry in sorted(registry(kind, pm).items()):
                print(f"  {name:<24} {entry.plugin}")
    broken = broken_plugins(pm)
    if broken:
        print("broken plugins (skipped):")
        for name, why in sorted(broken.items()):
            print(f"  {name:<24} {why}")
    return 0


def cmd_presets(args) -> int:
    from .presets import PRESETS

    for p in PRESETS.values():
        print(f"{p.name}: {p.description}")
        print(f"  model: {p.model}")
        for (spec, hook), name in zip(p.saes, p.submodules()):
            print(f"  {name:<9} {hook:<28} {spec}")
    return 0


def _add_world_options(parser, model_help: str) -> None:
    """--model, --sae, --preset, --device, --dtype (shared by discover, evaluate and shift)."""
    parser.add_argument("--model", help=model_help)
    parser.add_argument(
        "--sae",
        action="append",
        help="SAELens SAE directory, directory of SAE directories, release:sae_id or release:* (repeatable)",
    )
    parser.add_argument(
        "--preset", help="model + SAEs by name (see sfc presets): pythia-70m-sfc, gemma-2-2b-sfc, gpt2-small-sfc"
    )
    parser.add_argument("--device", help="torch device, e.g. cuda, cuda:1, cpu (default: the model's)")
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16", "float16"], help="model dtype (effects accumulate in float32)"
    )


def cmd_bench(args) -> int:
    import torch

    from . import bench

    names = args.workload or ["toy"]
    unknown = [n for n in names if n not in bench.WORKLOADS]
    if unknown:
        raise SFCError(f"unknown workload {unknown[0]!r} (known: {', '.join(bench.WORKLOADS)})")
    for flag in ("d_sae", "n_pairs", "n_tokens", "layers", "steps", "n_nodes"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise SFCError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    device = args.device or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SFCError(f"--device {device!r}: CUDA is not available")
    rows = []
    for name in names:
        if name == "toy":
            w = bench.toy_workload(args.n_pairs or 100, device=device)
        elif name == "pythia":
            w = bench.pythia_workload(
                d_sae=args.d_sae or 32768, n_pairs=args.n_pairs or 20, n_tokens=args.n_tokens or 10, device=device
            )
        else:
            w = bench.gemma_workload(
                n_layers=args.layers or 4,
                d_sae=args.d_sae or 16384,
                n_pairs=args.n_pairs or 8,
                n_tokens=args.n_tokens or 10,
                device=device,
            )
        print(f"{name}: {w.description}", file=sys.stderr)
        rows += bench.run_workload(
            w,
            steps=args.steps or 10,
            batch_size=args.batch_size or 16,
            max_memory=args.max_memory,
            n_nodes=args.n_nodes or 200,
            baseline=not args.no_baseline,
            baseline_edges_only=args.baseline_edges_only,
            progress=not args.quiet,
        )
        del w
    print(bench.format_rows(rows))
    if args.out:
        print(f"wrote {bench.write_json(rows, args.out)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .corpus import TEXT_HELP

    parser = argparse.ArgumentParser(prog="sfc", description="Sparse Feature Circuits for SAELens / TransformerLens")
    sub = parser.add_subparsers(dest="command", required=True)

    d = sub.add_parser("discover", help="discover a circuit (default: across-RC agreement on the shipped toy world)")
    _add_world_options(d, "TransformerLens model name, Hugging Face model directory, or sfc model directory")
    d.add_argument("--data", help="dataset name (e.g. toy/sva-rc) or JSON-lines file of pair records")
    d.add_argument("--split", help="dataset split for named datasets (default train; evaluate uses test)")
    d.add_argument("--metric", help="metric name (default logit_diff with patch answers, else logprob)")
    d.add_argument("--method", help="attribution method: atp, ig, exact or a plugin's (default ig)")
    d.add_argument("--steps", type=int, help="integrated-gradient steps (default 10)")
    d.add_argument("--node-threshold", type=float, help="keep nodes with |effect| above this (default 0.1)")
    d.add_argument("--edge-threshold", type=float, help="keep edges with |weight| above this (default 0.01)")
    d.add_argument("--aggregation", choices=["sum", "none"], help="sum over positions, or keep positions (default sum)")
    d.add_argument("--batch-size", type=int, help="examples per batch (default 16)")
    d.add_argument(
        "--max-memory",
        help="working-memory budget that sizes every pass, e.g. 4GB "
        "(default: half the free GPU memory; on CPU at most 2GB)",
    )
    d.add_argument("--n-examples", type=int, help="use the first N examples (default 40)")
    d.add_argument("--no-edges", dest="edges", action="store_const", const=False, help="nodes only")
    d.add_argument("-o", "--out", help="output directory (default ./sfc-out)")
    d.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty output directory that sfc did not create"
    )
    d.add_argument(
        "--allow-unk", action="store_true", help="accept words outside the tokenizer's vocabulary (unknown token)"
    )
    d.add_argument("--config", help="TOML file with any of these options (keys as the long option names)")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_discover)

    e = sub.add_parser("evaluate", help="faithfulness and completeness of a circuit over node thresholds")
    e.add_argument("circuit", help="circuit.json written by sfc discover")
    _add_world_options(e, "model name or directory (default: the toy world)")
    e.add_argument("--data", help="dataset name or JSON-lines file (default: the circuit's dataset)")
    e.add_argument("--split", help="split of a named dataset (default test: held out from discovery)")
    e.add_argument("--ablation", help="mean, zero, resample or a plugin's (default mean)")
    e.add_argument(
        "--thresholds", type=float, nargs="+", help="node thresholds (default: log-spaced over the circuit's effects)"
    )
    e.add_argument("--n-thresholds", type=int, help="number of default thresholds (default 15)")
    e.add_argument("--start-layer", type=int, help="never ablate submodules below this layer (default 0)")
    e.add_argument(
        "--features-only", action="store_true", default=None, help="ablate every error term (features-only circuits)"
    )
    e.add_argument(
        "--n-examples", type=int, help=f"use the first N examples (default {DEFAULTS['n_examples']}, as discover)"
    )
    e.add_argument(
        "--allow-overlap",
        action="store_true",
        default=None,
        help="evaluate even on pairs the circuit was discovered on (refused by default)",
    )
    e.add_argument("--batch-size", type=int, help="examples per batch (default 32)")
    e.add_argument("--max-memory", help="working-memory budget that caps examples per pass, e.g. 4GB")
    e.add_argument("-o", "--out", help="output directory (default ./sfc-out)")
    e.add_argument(
        "--config", help="TOML file: its [evaluate] table, else the model/sae/device/batch_size of a discover config"
    )
    e.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty output directory that sfc did not create"
    )
    e.add_argument(
        "--force",
        action="store_true",
        help="evaluate with SAEs or a model other than the circuit's (recorded in faithfulness.json)",
    )
    e.add_argument("--allow-unk", action="store_true", help="accept words outside the tokenizer's vocabulary")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_evaluate)

    from .shifting.cli import add_parser as add_edit_report
    from .shifting.cli import add_side_effect_options

    h = sub.add_parser("shift", help="SHIFT: ablate features a probe should not use; print the accuracy table")
    _add_world_options(h, "model name or directory (default: the toy world)")
    h.add_argument(
        "--data",
        help="dataset with train (ambiguous), val and test (balanced) splits of "
        "{text, profession, gender} records (default toy/bios)",
    )
    h.add_argument("--layer", type=int, help="probe on blocks.<layer>.hook_resid_post (default: last layer with SAEs)")
    h.add_argument(
        "--judge", help="feature judge: concept (label-free, default), labelled, file, interactive or a plugin's"
    )
    h.add_argument(
        "--compare-judge",
        help="a second judge on the same candidates, reported beside "
        "SHIFT as shift_<name> rows (default labelled: a skyline that reads the balanced labels; 'none' to skip)",
    )
    h.add_argument(
        "--spurious-concept",
        metavar="WORDS|FILE",
        help="the spurious concept for the concept judge: words or "
        "short phrases ('he, she, his, her, Mr, Mrs'), a file of them, or a shipped name "
        "(default: the shipped description named like the spurious attribute, 'gender')",
    )
    h.add_argument(
        "--evidence-text",
        metavar="SOURCE",
        help=f"text the concept judge reads features' evidence from: {TEXT_HELP} "
        "(default: the toy corpus for the toy model, else the training texts)",
    )
    h.add_argument(
        "--concept-threshold",
        type=float,
        help="concept judge: ablate at this share of concept words among promoted tokens (default 0.3)",
    )
    h.add_argument("--decisions", help="decisions file (JSON or CSV: id,decision) for --judge file")
    h.add_argument("--top-k", type=int, help="candidate features: the top K by |effect| (default 50)")
    h.add_argument("--threshold", type=float, help="candidate features: |effect| above this")
    h.add_argument("--steps", type=int, help="integrated-gradient steps (default 10)")
    h.add_argument(
        "--n-train",
        type=int,
        help="use the first N training examples (default: the whole split; unlike discover's 40, a probe needs them)",
    )
    h.add_argument("--n-eval", type=int, help="use the first N validation and N test examples (default: whole splits)")
    h.add_argument(
        "--allow-overlap",
        action="store_true",
        default=None,
        help="run even when validation or test examples are training examples (refused by default)",
    )
    h.add_argument("--batch-size", type=int, help="examples per batch (default 16)")
    h.add_argument("--seed", type=int, help="seed of the probes and the random row (default 0)")
    add_side_effect_options(h)
    h.add_argument("--no-side-effects", action="store_true", help="skip the side-effect report")
    h.add_argument("-o", "--out", help="output directory (default ./sfc-out)")
    h.add_argument(
        "--config",
        help="TOML file: its [shift] table (keys as the long option names), else the "
        "model/sae/preset/device/batch_size of a discover config",
    )
    h.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty output directory that sfc did not create"
    )
    h.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    h.set_defaults(func=cmd_shift)

    r = sub.add_parser("presets", help="list the presets (model, SAEs and the submodule each SAE becomes)")
    r.set_defaults(func=cmd_presets)

    b = sub.add_parser(
        "bench", help="time our discovery path against the paper's algorithm (same process, same inputs)"
    )
    b.add_argument("--workload", action="append", help="toy (default), pythia or gemma (repeatable)")
    b.add_argument("--d-sae", type=int, help="SAE width for pythia/gemma (default 32768 / 16384)")
    b.add_argument("--n-pairs", type=int, help="examples (default: toy 100, pythia 20, gemma 8)")
    b.add_argument("--n-tokens", type=int, help="tokens per prompt for pythia/gemma (default 10)")
    b.add_argument("--layers", type=int, help="layers of the truncated gemma model (default 4)")
    b.add_argument("--steps", type=int, help="integrated-gradient steps (default 10)")
    b.add_argument("--n-nodes", type=int, help="circuit size for the random-weight workloads (default 200)")
    b.add_argument("--batch-size", type=int, help="examples per batch (default 16)")
    b.add_argument(
        "--max-memory",
        help="our working-memory budget, e.g. 4GB (default: half the free GPU memory; on CPU at most 2GB)",
    )
    b.add_argument("--device", help="torch device (default cpu)")
    b.add_argument("--no-baseline", action="store_true", help="time our path only")
    b.add_argument(
        "--baseline-edges-only",
        action="store_true",
        help="run only the baseline's edge phase, on our IG "
        "gradients (the same values; for widths where its node phase would take hours)",
    )
    b.add_argument("-o", "--out", help="directory for bench.json")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    b.set_defaults(func=cmd_bench)

    p = sub.add_parser("plugins", help="list registered methods, metrics, datasets and exporters with their plugins")
    p.set_defaults(func=cmd_plugins)

    from .clusters.cli import add_parser as add_clusters
    from .dashboards.cli import add_parser as add_dashboards
    from .export.cli import add_parser as add_export
    from .toy.cli import add_parser as add_toy
    from .viewer.cli import add_parser as add_view

    add_toy(sub)
    add_export(sub)
    add_clusters(sub)
    add_edit_report(sub)
    add_dashboards(sub)
    add_view(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        return args.func(args)
    except SFCError as exc:
        print(f"sfc: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `sfc plugins | head -1`: the reader has what it wanted
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail again
        return 0


if __name__ == "__main__":
    sys.exit(main())
