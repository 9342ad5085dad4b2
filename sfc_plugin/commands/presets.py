"""``sfc presets``: the presets, each with its model, releases, the number, width and size of its dictionaries, how
to pick another variant, and the submodule each dictionary becomes."""

from __future__ import annotations


def add_parser(subparsers) -> None:
    r = subparsers.add_parser("presets", help="list the presets (model, SAEs and the submodule each SAE becomes)")
    r.set_defaults(func=run)


def run(args) -> int:
    from ..presets import PRESETS

    for p in PRESETS.values():
        print(f"{p.name}: {p.description}")
        for line in p.summary():
            print(f"  {line}")
        for (spec, hook), name in zip(p.saes, p.submodules()):
            print(f"  {name:<9} {hook:<28} {spec}")
    return 0
