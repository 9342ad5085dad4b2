"""``sfc shift``: SHIFT — ablate the features a probe should not use, and print the accuracy table."""

from __future__ import annotations

from pathlib import Path

from ..errors import SFCError
from . import options as opt
from .edit_report import add_side_effect_options, side_effect_options


def add_parser(subparsers) -> None:
    from ..config import ShiftConfig

    h = subparsers.add_parser("shift", help="SHIFT: ablate features a probe should not use; print the accuracy table")
    opt.add_options(h, ShiftConfig)
    add_side_effect_options(h)
    h.add_argument("--no-side-effects", action="store_true", help="skip the side-effect report")
    opt.add_config_option(
        h,
        "shift",
        "TOML file: its [shift] table (keys as the long option names), else the "
        "model/sae/preset/device/dtype/batch_size of a discover config",
    )
    opt.add_overwrite(h)
    opt.add_quiet(h)
    h.set_defaults(func=run)


def check_overlap(train: list[dict], evaluation: dict[str, list[dict]], data: str) -> None:
    """Refuse validation or test examples that are training examples (by the hash of their text)."""
    from ..data import example_fingerprint

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


def run(args) -> int:
    from ..config import ShiftConfig
    from ..data import load_dataset
    from ..files import check_output_dir, strict_json, write_set
    from ..shifting.pipeline import format_table, public, shift
    from ..shifting.side_effects import format_side_effects

    s = opt.settings(args, "shift")
    check_output_dir(s["out"], overwrite=args.overwrite)
    world = opt.load_world(s)
    splits = {"train": "train", "val": "val", "test": "test"}
    train, val, test = (load_dataset(s["data"], splits[name]) for name in ("train", "val", "test"))
    train, val, test = train[: s["n_train"]], val[: s["n_eval"]], test[: s["n_eval"]]
    if not s["allow_overlap"]:
        check_overlap(train, {"val": val, "test": test}, s["data"])
    provenance = {
        "dataset": s["data"],
        "splits": None if Path(str(s["data"])).is_file() else splits,
        "model_source": world.source,
        "preset": s["preset"],
        "allow_overlap": bool(s["allow_overlap"]),
    }
    result = shift(
        world,
        train,
        test,
        val,
        **ShiftConfig(**s).pipeline_kwargs(),
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
