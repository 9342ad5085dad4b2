"""Behaviours at scale: cluster the contexts where a model predicts confidently, a circuit per cluster.

Pipeline (one module per stage, data flowing one way)::

    ../corpus.py documents: the toy world's (labelled) or any text source (sfc_plugin.corpus.documents)
    contexts.py  low-loss next-token predictions (prefix, answer)
    vectors.py   behaviour vectors: SAE-feature effects on log p(answer), stored sparse (top-k)
    grouping.py  k-means / spectral clustering on cosine similarity (scikit-learn)
    pipeline.py  find_clusters(): the resumable, torch.distributed-aware run directory
    page.py      index.html for browsing

``from sfc_plugin.clusters import find_clusters, ClusterConfig``; the command is ``sfc clusters``.
Imports nothing heavy at module level.
"""

from __future__ import annotations

__all__ = ["ClusterConfig", "find_clusters", "format_summary"]


def __getattr__(name):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
