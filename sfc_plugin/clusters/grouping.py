"""Clustering sparse behaviour vectors with scikit-learn: k-means or spectral on cosine similarity.

Rows are L2-normalised, so k-means groups by direction (cosine) too. Spectral clustering uses a
symmetric k-nearest-neighbour graph weighted by cosine similarity (``n_neighbors`` per row, brute
force over the sparse rows), which keeps memory linear in the number of contexts. Cluster ids are
renumbered by size (largest first; ties by first member), so they are stable across runs.
"""

from __future__ import annotations

import numpy as np

from ..errors import SFCError

ALGORITHMS = ("kmeans", "spectral")


def sparse_matrix(indices: np.ndarray, values: np.ndarray, n_columns: int):
    """CSR ``[n, n_columns]`` from per-row top-k ``indices`` / ``values`` (zero values dropped)."""
    from scipy.sparse import csr_matrix

    n, k = indices.shape
    rows = np.repeat(np.arange(n), k)
    m = csr_matrix(
        (values.reshape(-1).astype(np.float64), (rows, indices.reshape(-1).astype(np.int64))), shape=(n, n_columns)
    )
    m.eliminate_zeros()
    return m


def _canonical(labels: np.ndarray) -> np.ndarray:
    ids, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = sorted(range(len(ids)), key=lambda i: (-counts[i], first[i]))
    remap = {int(ids[i]): new for new, i in enumerate(order)}
    return np.array([remap[int(x)] for x in labels], dtype=np.int64)


def cluster(matrix, k: int, algorithm: str = "kmeans", seed: int = 0, n_neighbors: int = 15) -> np.ndarray:
    """Cluster label per row (``0..k-1``, by decreasing size)."""
    from sklearn.preprocessing import normalize

    if algorithm not in ALGORITHMS:
        raise SFCError(f"unknown clustering algorithm {algorithm!r} (known: {', '.join(ALGORITHMS)})")
    n = matrix.shape[0]
    if not 1 <= k <= n:
        raise SFCError(f"k must be between 1 and the number of contexts ({n}), got {k}")
    X = normalize(matrix, norm="l2")
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    if algorithm == "kmeans":
        from sklearn.cluster import KMeans

        labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(X)
    else:
        from sklearn.cluster import SpectralClustering
        from sklearn.neighbors import kneighbors_graph

        graph = kneighbors_graph(X, n_neighbors=min(n_neighbors, n - 1), mode="distance", metric="cosine", n_jobs=1)
        graph.data = np.clip(1.0 - graph.data, 0.0, None)  # cosine similarity
        affinity = 0.5 * (graph + graph.T)
        labels = SpectralClustering(
            n_clusters=k, affinity="precomputed", random_state=seed, assign_labels="cluster_qr"
        ).fit_predict(affinity)
    return _canonical(labels)


def top_features(matrix, members: np.ndarray, names, n: int = 10, errors: bool = False) -> list[dict]:
    """The cluster's ``n`` SAE features (``errors``: error terms instead) of largest mean |effect| over
    its members (un-normalised vectors): ``{"id", "mean_effect", "frequency"}`` (frequency: share of
    members with the column among their top-k)."""
    sub = matrix[members]
    mean = np.asarray(sub.mean(0)).ravel()
    freq = np.asarray((sub != 0).mean(0)).ravel()
    out = []
    for j in np.argsort(-np.abs(mean), kind="stable"):
        if mean[j] == 0 or len(out) == n:
            break
        name = names(int(j))
        if name.endswith("/err") == errors:
            out.append({"id": name, "mean_effect": round(float(mean[j]), 6), "frequency": round(float(freq[j]), 4)})
    return out


def agreement(labels: np.ndarray, categories: list) -> dict:
    """Adjusted Rand index and normalised mutual information of the clusters against known categories."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "adjusted_rand_index": round(float(adjusted_rand_score(categories, labels)), 4),
        "normalized_mutual_info": round(float(normalized_mutual_info_score(categories, labels)), 4),
    }
