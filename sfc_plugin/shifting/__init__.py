"""SHIFT (paper §4) in one package, one module per stage, data flowing down this list:

- ``records``            candidate features, decisions, what a judge may see, the ``uses`` vocabulary
- ``probe``              the classifier: a linear probe on mean-pooled activations, accuracy rows
- ``probe_attribution``  features' effects on the probe's signed logit, ranking
- ``evidence``           a feature's evidence from unlabelled text (top contexts)
- ``judges``             built-in judges, registered through the ``sfc_feature_judges`` hook
- ``edit``               ``FeatureEdit``: the ablation as TransformerLens hooks, ``sfc-edit/1`` JSON
- ``pipeline``           :func:`shift`: the whole method and the paper's comparison table

The package is not called ``shift`` so that importing it never hides the function ``sfc_plugin.shift``.
Heavy modules load on first use of a name.
"""

from __future__ import annotations

__all__ = [
    "shift",
    "format_table",
    "public",
    "ROWS",
    "FeatureEdit",
    "FeatureInfo",
    "Decision",
    "JudgeContext",
    "Labelled",
]

_LAZY = {
    "shift": "pipeline",
    "format_table": "pipeline",
    "public": "pipeline",
    "ROWS": "pipeline",
    "FeatureEdit": "edit",
    "FeatureInfo": "records",
    "Decision": "records",
    "JudgeContext": "records",
    "Labelled": "records",
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
