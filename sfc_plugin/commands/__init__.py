"""The ``sfc`` command: one module per sub-command, each with ``add_parser(subparsers)`` and ``run(args)``.

Options come from the config dataclasses (:mod:`sfc_plugin.config`); every command that loads a model has
the same world options (:mod:`.options`). Bad input exits 2 with a one-line message; progress bars go to
stderr. Libraries never import this package; ``sfc_plugin.cli`` re-exports :func:`main` and :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import SFCError
from . import (
    annotate,
    bench,
    clusters,
    dashboards,
    diff,
    discover,
    edit_report,
    evaluate,
    export,
    plugins,
    presets,
    shift,
    toy,
    view,
)

# in the order `sfc --help` lists them
COMMANDS = (
    discover,
    evaluate,
    shift,
    presets,
    bench,
    plugins,
    toy,
    export,
    clusters,
    edit_report,
    dashboards,
    diff,
    view,
    annotate,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sfc", description="Sparse Feature Circuits for SAELens / TransformerLens")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
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
