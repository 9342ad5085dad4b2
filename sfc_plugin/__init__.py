"""Sparse Feature Circuits for SAELens / TransformerLens, extensible through pluggy hooks."""

from .errors import SFCError
from .plugins import get_plugin_manager, hookimpl

__version__ = "0.1.0"

__all__ = [
    "discover",
    "evaluate",
    "shift",
    "World",
    "Circuit",
    "FeatureEdit",
    "load_dataset",
    "hookimpl",
    "get_plugin_manager",
    "splice",
    "SFCError",
    "__version__",
]

_LAZY = {  # name -> module; heavy modules load on first use, so `sfc --help` stays fast
    "discover": "discovery",
    "evaluate": "evaluation",
    "shift": "shifting",
    "World": "world",
    "Circuit": "circuit",
    "FeatureEdit": "shifting",
    "load_dataset": "data",
    "splice": "splicing",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
