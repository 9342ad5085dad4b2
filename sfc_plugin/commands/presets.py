"""``sfc presets``: the presets, each with its model and the submodule each SAE becomes."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    r = subparsers.add_parser("presets", help="list the presets (model, SAEs and the submodule each SAE becomes)")
    r.set_defaults(func=run)


def run(args) -> int:
    from ..presets import PRESETS

    for p in PRESETS.values():
        print(f"{p.name}: {p.description}")
        print(f"  model: {p.model}")
        for (spec, hook), name in zip(p.saes, p.submodules()):
            print(f"  {name:<9} {hook:<28} {spec}")
    return 0
