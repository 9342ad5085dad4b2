"""Registers the built-in attribution methods (lazy references: plugin discovery imports no torch)."""

from ..plugins import Lazy, hookimpl


@hookimpl
def sfc_attribution_methods():
    return {name: Lazy("sfc_plugin.attribution.methods", name) for name in ("atp", "ig", "exact")}
