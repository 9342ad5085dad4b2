"""``sfc edit-report EDIT.json``: what a saved edit costs elsewhere; the side-effect options shared with ``sfc shift``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import options as opt


def add_side_effect_options(p: argparse.ArgumentParser) -> None:
    from ..corpus import TEXT_HELP

    p.add_argument(
        "--text",
        metavar="SOURCE",
        help=f"text for the next-token loss: {TEXT_HELP} "
        "(default: the toy corpus for the toy model; for other models the training texts: sfc shift's, or for "
        "sfc edit-report those recorded in the edit)",
    )
    p.add_argument(
        "--agreement-data",
        action="append",
        metavar="NAME|FILE",
        help="pair dataset for agreement accuracy, test split of named ones (repeatable; "
        "default: toy/sva-* for the toy model)",
    )
    p.add_argument(
        "--circuit",
        metavar="FILE|none",
        help="circuit.json to count ablated features in "
        "(default: the toy world's default across-RC circuit for the toy model; 'none' to skip)",
    )


def side_effect_options(args) -> dict:
    """The side-effect options as keyword arguments of :func:`~sfc_plugin.shifting.side_effects.measure_side_effects`."""
    circuit = args.circuit
    return {
        "text": args.text,
        "agreement": args.agreement_data,
        "circuit": False if circuit is not None and circuit.lower() == "none" else circuit,
    }


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "edit-report",
        help="side effects of a saved edit (edit.json): loss, agreement, circuit overlap",
        description="For a saved sfc-edit/1 edit: the change in next-token loss, in agreement "
        "accuracy per dataset, and how many ablated features are in a circuit. The "
        "model, SAEs and data recorded in the edit are used unless given here.",
    )
    p.add_argument("edit", help="edit.json written by sfc shift (or FeatureEdit.to_json)")
    opt.add_world_options(
        p,
        model="model directory or TransformerLens name (default: the edit's, else the toy world)",
        sae="SAELens SAE directory, directory of SAE directories, release:sae_id or release:* "
        "(repeatable; default: the edit's)",
    )
    add_side_effect_options(p)
    p.add_argument(
        "--force", action="store_true", help="use SAEs or a model other than the edit's (recorded in edit-report.json)"
    )
    p.add_argument("-o", "--out", default="sfc-out", help="output directory for edit-report.json (default ./sfc-out)")
    opt.add_config_option(p, "edit-report")
    p.set_defaults(func=run)


def recorded_text(prov: dict):
    """The training texts of the SHIFT run an edit came from (``None`` when it records no dataset)."""
    from ..data import load_dataset

    dataset = prov.get("dataset")
    if not isinstance(dataset, str) or dataset == "(in memory)":
        return None
    split = (prov.get("splits") or {}).get("train")
    n = (prov.get("n_examples") or {}).get("train")
    records = load_dataset(dataset, split)[: n if isinstance(n, int) else None]
    return [str(r.get("text", "")) for r in records]


def run(args) -> int:
    from ..corpus import is_toy
    from ..files import strict_json, write_atomic
    from ..shifting.edit import FeatureEdit, read_edit
    from ..shifting.side_effects import format_side_effects, measure_side_effects

    s = opt.settings(args, "edit-report")
    prov = read_edit(args.edit).get("provenance") or {}
    if prov:  # what the command line leaves out comes from the edit
        s = opt.fill_world(s, prov, "edit")
    world = opt.load_world(s)
    edit = FeatureEdit.from_json(args.edit, world.by_name, model=world.model, force=args.force)
    options = side_effect_options(args)
    if options["text"] is None and not is_toy(world.model):
        options["text"] = recorded_text(prov)  # the edit's own training texts
    name = Path(args.edit).stem
    report = measure_side_effects(world.model, {name: edit}, saes=world.saes, **options)
    report["edit_file"] = str(args.edit)
    report["provenance_check"] = edit.provenance_check
    status = edit.provenance_check["status"]
    if status == "forced":
        print(f"sfc: warning: --force: {edit.provenance_check['mismatches'][0]}", file=sys.stderr)
    path = write_atomic(Path(args.out) / "edit-report.json", strict_json(report, indent=1) + "\n")
    print(format_side_effects(report))
    print(f"model and SAEs: {status}" + (" — nothing was checked" if status.startswith("unchecked") else ""))
    print(f"wrote {path}")
    return 0
