"""The ``sfc`` console script (``sfc = sfc_plugin.cli:main``; also ``python -m sfc_plugin.cli``).

The commands live in :mod:`sfc_plugin.commands`, one module each; this module re-exports their entry points.
"""

from __future__ import annotations

import sys

from .commands import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
