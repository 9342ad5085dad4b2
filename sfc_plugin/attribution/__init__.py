"""Attribution: node effects (``context``, ``methods``) and edge effects (``edges``).

Kept import-light: ``from sfc_plugin.attribution.context import AttributionContext, NodeEffects``.
"""
