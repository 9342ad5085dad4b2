"""``sfc edit-report EDIT.json``: what a saved edit costs elsewhere; options shared with ``sfc shift``.

The main CLI calls :func:`add_parser` with its argparse sub-parsers; bad input raises
:class:`sfc_plugin.errors.SFCError` (exit 2 in the main CLI).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_side_effect_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", metavar="FILE", help="text for the next-token loss, one document per line "
                   "(default: the toy corpus for the toy model; for sfc shift on other models, the training texts)")
    p.add_argument("--agreement-data", action="append", metavar="NAME|FILE",
                   help="pair dataset for agreement accuracy, test split of named ones (repeatable; "
                        "default: toy/sva-* for the toy model)")
    p.add_argument("--circuit", metavar="FILE|none", help="circuit.json to count ablated features in "
                   "(default: the toy world's default across-RC circuit for the toy model; 'none' to skip)")


def side_effect_options(args) -> dict:
    circuit = args.circuit
    return {"text": args.text, "agreement": args.agreement_data,
            "circuit": False if circuit is not None and circuit.lower() == "none" else circuit}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("edit-report", help="side effects of a saved edit (edit.json): loss, agreement, circuit overlap",
                              description="For a saved sfc-edit/1 edit: the change in next-token loss, in agreement "
                                          "accuracy per dataset, and how many ablated features are in a circuit.")
    p.add_argument("edit", help="edit.json written by sfc shift (or FeatureEdit.to_json)")
    p.add_argument("--model", help="model directory or TransformerLens name (default: the toy world)")
    p.add_argument("--sae", action="append", help="SAE directory or release:sae_id (repeatable)")
    add_side_effect_options(p)
    p.add_argument("--device", help="torch device")
    p.add_argument("-o", "--out", default="sfc-out", help="output directory for edit-report.json (default ./sfc-out)")
    p.set_defaults(func=cmd_edit_report)


def cmd_edit_report(args) -> int:
    from ..circuit import write_atomic
    from ..cli import _load_world
    from ..models import saes_by_hook
    from ..splicing import build_submodules
    from .edit import FeatureEdit
    from .side_effects import format_side_effects, measure_side_effects

    (model, saes), _ = _load_world(args.model, args.sae, args.device)
    saes = saes_by_hook(saes)
    edit = FeatureEdit.from_json(args.edit, {s.name: s for s in build_submodules(model, saes)})
    name = Path(args.edit).stem
    report = measure_side_effects(model, {name: edit}, saes=saes, **side_effect_options(args))
    report["edit_file"] = str(args.edit)
    path = write_atomic(Path(args.out) / "edit-report.json", json.dumps(report, indent=1) + "\n")
    print(format_side_effects(report))
    print(f"wrote {path}")
    return 0
