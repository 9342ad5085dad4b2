"""Sparse Feature Circuits for SAELens / TransformerLens, extensible through pluggy hooks."""

from __future__ import annotations

from .errors import SFCError
from .plugins import get_plugin_manager, hookimpl

__version__ = "0.1.0"

__all__ = ["discover", "Circuit", "load_dataset", "hookimpl", "get_plugin_manager", "splice", "SFCError", "__version__"]


def __getattr__(name):  # heavy modules load on first use, so `sfc --help` stays fast
    if name == "discover":
        from .discovery import discover

        return discover
    if name == "Circuit":
        from .circuit import Circuit

        return Circuit
    if name == "load_dataset":
        from .data import load_dataset

        return load_dataset
    if name == "splice":
        from .splice import splice

        return splice
    raise AttributeError(name)
