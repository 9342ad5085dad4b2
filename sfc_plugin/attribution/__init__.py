"""Attribution: the loop (``engine``), node effects (``context``, ``methods``) and edge effects (``edges``).

Kept import-light (plugin discovery imports this package): import from the modules, e.g.
``from sfc_plugin.attribution.engine import attribute, zero_ablation`` or
``from sfc_plugin.attribution.context import AttributionContext, NodeEffects``.
"""
