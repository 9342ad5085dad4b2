"""``sfc plugins``: the registered methods, metrics, datasets, exporters, ... and the plugins behind them."""

from __future__ import annotations

import warnings


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "plugins", help="list registered methods, metrics, datasets and exporters with their plugins"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..plugins import REGISTRIES, broken_plugins, get_plugin_manager, registry

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
