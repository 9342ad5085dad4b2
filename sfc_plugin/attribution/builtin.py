"""Registers the built-in attribution methods (imported lazily: plugin discovery stays light)."""

from ..plugins import hookimpl


@hookimpl
def sfc_attribution_methods():
    from .methods import atp, exact, ig

    return {"atp": atp, "ig": ig, "exact": exact}
