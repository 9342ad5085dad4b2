"""``sfc evaluate CIRCUIT``: faithfulness and completeness of a circuit over node thresholds."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import SFCError
from . import options as opt


def add_parser(subparsers) -> None:
    from ..config import EvaluateConfig

    e = subparsers.add_parser("evaluate", help="faithfulness and completeness of a circuit over node thresholds")
    e.add_argument("circuit", help="circuit.json written by sfc discover")
    opt.add_options(e, EvaluateConfig)
    opt.add_config_option(
        e,
        "evaluate",
        "TOML file: its [evaluate] table, else the model/sae/preset/device/dtype/batch_size of a discover config",
    )
    opt.add_overwrite(e)
    e.add_argument(
        "--force",
        action="store_true",
        help="evaluate with SAEs or a model other than the circuit's (recorded in faithfulness.json)",
    )
    e.add_argument("--allow-unk", action="store_true", help="accept words outside the tokenizer's vocabulary")
    opt.add_quiet(e)
    e.set_defaults(func=run)


def check_overlap(records: list[dict], prov: dict, data: str, split: str | None) -> None:
    """Refuse evaluation pairs the circuit was discovered on (``provenance["pair_hashes"]``; older circuits:
    the same dataset and split)."""
    from ..data import pair_fingerprint

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


def run(args) -> int:
    from ..circuit import Circuit
    from ..config import EvaluateConfig
    from ..data import load_dataset
    from ..evaluation import evaluate, format_table, write_report
    from ..files import check_output_dir

    s = opt.settings(args, "evaluate")  # bad options and config values before the circuit is read
    circuit = Circuit.from_json(args.circuit)
    prov = circuit.provenance
    if s["data"] is None and prov.get("dataset") not in (None, "(in memory)"):
        s["data"] = prov["dataset"]  # the circuit's dataset, its held-out split
    s = opt.fill_world(s, prov)
    check_output_dir(s["out"], overwrite=args.overwrite)
    world = opt.load_world(s)
    data = s["data"]
    if not data:
        raise SFCError("the circuit does not name its dataset: give --data")
    split = None if Path(str(data)).is_file() else s["split"]  # named datasets: the held-out split by default
    records = load_dataset(data, split)
    if s["n_examples"] is not None:
        records = records[: int(s["n_examples"])]
    if not s["allow_overlap"]:
        check_overlap(records, prov, data, split)
    result = evaluate(
        world,
        circuit,
        records,
        **EvaluateConfig(**s).pipeline_kwargs(),
        progress=not args.quiet,
        force=args.force,
        allow_unk=args.allow_unk,
    )
    result.update(dataset=data, split=split, circuit_file=str(args.circuit))
    if result["provenance_check"]["status"] == "forced":
        print(f"sfc: warning: --force: {result['provenance_check']['mismatches'][0]}", file=sys.stderr)
    paths = write_report(result, s["out"], title=f"{data}: {s['ablation']} ablation", overwrite=args.overwrite)
    print(format_table(result))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
