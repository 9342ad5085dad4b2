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


def check_overlap(train: list[dict], evaluation: dict[str, list[dict]], data: str, by_design=()) -> None:
    """Refuse validation or test examples that are training examples (by the hash of their text); splits in
    ``by_design`` are drawn from the training pool on purpose (``bias_in_bios``'s ``val``, as the authors')."""
    from ..data import example_fingerprint

    seen = {example_fingerprint(r) for r in train}
    for split, records in evaluation.items():
        if split in by_design:
            continue
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


def _check_out(out: Path, cache: Path, overwrite: bool) -> None:
    """The output directory check, where a cache of an interrupted run (``OUT/cache``) is no foreign file."""
    from ..files import check_output_dir
    from ..shifting.checkpoints import META

    own_cache = cache.parent == out and (cache / META).is_file()
    entries = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if own_cache and entries <= {cache.name}:
        return
    check_output_dir(out, overwrite=overwrite)


def run(args) -> int:
    import sys

    from ..config import ShiftConfig
    from ..data import load_dataset
    from ..files import strict_json, write_set
    from ..presets import get_preset
    from ..shifting.pipeline import format_table, public, shift
    from ..shifting.side_effects import format_side_effects

    s = opt.settings(args, "shift")
    out = Path(s["out"])
    cache = Path(s["cache"]) if s["cache"] else out / "cache"
    _check_out(out, cache, args.overwrite)
    splits = {"train": "train", "val": "val", "test": "test"}
    train, val, test = (load_dataset(s["data"], splits[name]) for name in ("train", "val", "test"))
    info = {name: getattr(d, "info", None) or {} for name, d in (("train", train), ("val", val), ("test", test))}
    counts = next((i["counts"] for i in info.values() if "counts" in i), None)
    if counts is not None and not args.quiet:
        from ..bias_in_bios import describe

        print(describe(counts), file=sys.stderr)
    world = opt.load_world(s)
    if s["layer"] is None and s["preset"]:
        s["layer"] = get_preset(s["preset"]).shift_layer
    train, val, test = train[: s["n_train"]], val[: s["n_eval"]], test[: s["n_eval"]]
    by_design = [name for name, i in info.items() if i.get("drawn_from") == "train"]
    if not s["allow_overlap"]:
        check_overlap(train, {"val": val, "test": test}, s["data"], by_design)
    provenance = {
        "dataset": s["data"],
        "splits": None if Path(str(s["data"])).is_file() else splits,
        "model_source": world.source,
        "preset": s["preset"],
        "allow_overlap": bool(s["allow_overlap"]),
    }
    if counts is not None:
        provenance["data_counts"] = counts
    if by_design:
        provenance["drawn_from_train"] = by_design  # these splits share the training pool on purpose
    result = shift(
        world,
        train,
        test,
        val,
        **ShiftConfig(**s).pipeline_kwargs(),
        progress=not args.quiet,
        side_effects=False if args.no_side_effects else side_effect_options(args),
        provenance=provenance,
        checkpoint_dir=cache,
    )
    write_set(
        out,
        {
            "shift.json": strict_json(public(result), indent=1) + "\n",
            "edit.json": strict_json(result["edit"].to_dict(), indent=1) + "\n",
        },
        overwrite=True,  # checked before the run (_check_out): the run's own cache is no foreign file
    )
    print(format_table(result))
    if "side_effects" in result:
        print()
        print(format_side_effects(result["side_effects"]))
    print(f"ablated {result['n_ablated']} of {len(result['features'])} candidate features ({s['judge']} judge)")
    n = result["provenance"]["n_examples"]
    rows = result["recipe"]["test_rows"]
    print(
        f"examples: train {n['train']:,}, val {n['val']:,}, test {n['test']:,} ({rows['balanced']:,} balanced: "
        f"profession and gender accuracy; all {rows['n']:,}: worst group); attribution on "
        f"{result['recipe']['n_attribution']['train']:,} train / {result['recipe']['n_attribution']['val']:,} val"
    )
    if result.get("checkpoints"):
        print(f"resumed from {cache}: " + ", ".join(f"{k} {v}" for k, v in sorted(result["checkpoints"].items())))
    print(f"wrote {out / 'shift.json'} and {out / 'edit.json'}")
    return 0
