"""``sfc edit-report EDIT.json``: what a saved edit costs elsewhere; options shared with ``sfc shift``.

The main CLI calls :func:`add_parser` with its argparse sub-parsers; bad input raises
:class:`sfc_plugin.errors.SFCError` (exit 2 in the main CLI).
"""

from __future__ import annotations

import argparse
from pathlib import Path


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
    p.add_argument("--model", help="model directory or TransformerLens name (default: the edit's, else the toy world)")
    p.add_argument("--sae", action="append", help="SAE directory or release:sae_id (repeatable; default: the edit's)")
    add_side_effect_options(p)
    p.add_argument("--device", help="torch device")
    p.add_argument(
        "--force", action="store_true", help="use SAEs or a model other than the edit's (recorded in edit-report.json)"
    )
    p.add_argument("-o", "--out", default="sfc-out", help="output directory for edit-report.json (default ./sfc-out)")
    p.set_defaults(func=cmd_edit_report)


def _recorded_text(prov: dict):
    """The training texts of the SHIFT run an edit came from (``None`` when it records no dataset)."""
    from ..data import load_dataset

    dataset = prov.get("dataset")
    if not isinstance(dataset, str) or dataset == "(in memory)":
        return None
    split = (prov.get("splits") or {}).get("train")
    n = (prov.get("n_examples") or {}).get("train")
    records = load_dataset(dataset, split)[: n if isinstance(n, int) else None]
    return [str(r.get("text", "")) for r in records]


def cmd_edit_report(args) -> int:
    import sys

    from ..cli import _fill_world, _load_world
    from ..corpus import is_toy
    from ..files import strict_json, write_atomic
    from ..models import saes_by_hook
    from ..splicing import build_submodules
    from .edit import FeatureEdit, read_edit
    from .side_effects import format_side_effects, measure_side_effects

    prov = read_edit(args.edit).get("provenance") or {}
    world = {"model": args.model, "sae": args.sae}
    if prov:  # what the command line leaves out comes from the edit
        world = _fill_world(world, prov, "edit")
    (model, saes), _ = _load_world(world["model"], world["sae"], args.device)
    saes = saes_by_hook(saes)
    edit = FeatureEdit.from_json(
        args.edit, {s.name: s for s in build_submodules(model, saes)}, model=model, force=args.force
    )
    options = side_effect_options(args)
    if options["text"] is None and not is_toy(model):
        options["text"] = _recorded_text(prov)  # the edit's own training texts
    name = Path(args.edit).stem
    report = measure_side_effects(model, {name: edit}, saes=saes, **options)
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
