"""Registers the built-in attribution methods (atp, ig, exact, linear) (lazy references: plugin discovery imports no torch)."""

from ..plugins import Lazy, hookimpl


@hookimpl
def sfc_attribution_methods():
    methods = {name: Lazy("sfc_plugin.attribution.methods", name) for name in ("atp", "ig", "exact")}
    methods["linear"] = Lazy("sfc_plugin.attribution.linear", "linear")  # circuit-tracer's convention
    return methods
