"""Cluster-quality metrics for the latent-space analysis (METHODS.md §6.5).

All functions take plain numpy arrays and return plain Python floats (or None where a metric is
undefined, e.g. a silhouette with a single label), so results serialise straight to JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def weight_entropy(weights: Sequence[float] | np.ndarray) -> float:
    """Entropy ``H = -Σ w ln w`` (nats) of mixture weights ``[K]``; zero weights contribute 0.

    The weights are renormalised to sum to one first (the DPMM's truncated weights sum to ~1).
    """
    w = np.asarray(weights, dtype=np.float64)
    w = w[w > 0]
    if w.size == 0:
        return 0.0
    w = w / w.sum()
    return float(-(w * np.log(w)).sum())


def effective_clusters(weights: Sequence[float] | np.ndarray, threshold: float = 0.01) -> int:
    """Number of mixture components whose weight exceeds ``threshold`` (``analysis.effective_weight_threshold``)."""
    return int((np.asarray(weights, dtype=np.float64) > threshold).sum())


def safe_silhouette(x: np.ndarray, labels: Sequence) -> float | None:
    """Silhouette score of ``labels`` ``[N]`` on points ``x`` ``[N, D]`` (euclidean).

    Returns None where it is undefined: fewer than 2 distinct labels, or every point its own label.
    """
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    n_labels = len(np.unique(labels))
    if x.shape[0] < 3 or n_labels < 2 or n_labels > x.shape[0] - 1:
        return None
    return float(silhouette_score(x, labels))


def agreement(labels_true: Sequence, labels_pred: Sequence) -> dict[str, float | None]:
    """NMI and ARI between given labels and cluster assignments (each ``[N]``).

    Both are None when the given labels have a single value (agreement with one class is meaningless).
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels_true = np.asarray(labels_true)
    if len(labels_true) == 0 or len(np.unique(labels_true)) < 2:
        return {"nmi": None, "ari": None}
    return {
        "nmi": float(normalized_mutual_info_score(labels_true, labels_pred)),
        "ari": float(adjusted_rand_score(labels_true, labels_pred)),
    }


def cluster_metrics(
    x: np.ndarray,
    weights: np.ndarray,
    assignments: np.ndarray,
    labels: Sequence | None = None,
    threshold: float = 0.01,
) -> dict:
    """All §6.5 metrics for one DPMM fit.

    Args:
        x: ``[N, D]`` points in PCA space (silhouettes are computed here).
        weights: ``[K]`` fitted mixture weights.
        assignments: ``[N]`` hard cluster assignment of each point.
        labels: ``[N]`` given labels (perspective, model, ...), or None.
        threshold: weight above which a component counts as an effective cluster.

    Returns:
        dict with ``effective_clusters``, ``occupied_clusters`` (distinct hard assignments),
        ``weight_entropy`` (H over all DPMM weights, as METHODS.md §6.5), ``exp_entropy`` (exp H),
        ``effective_entropy`` / ``exp_effective_entropy`` (the same over the effective components only,
        renormalised: the truncated DP leaves a little prior mass on every empty component, which
        inflates exp H above the cluster count), ``nmi``, ``ari``, ``silhouette_labels``,
        ``silhouette_clusters``, ``n``.
    """
    h = weight_entropy(weights)
    w = np.asarray(weights, dtype=np.float64)
    h_eff = weight_entropy(w[w > threshold])
    out = {
        "n": int(x.shape[0]),
        "effective_clusters": effective_clusters(weights, threshold),
        "occupied_clusters": int(len(np.unique(assignments))),
        "weight_entropy": h,
        "exp_entropy": float(np.exp(h)),
        "effective_entropy": h_eff,
        "exp_effective_entropy": float(np.exp(h_eff)),
        "nmi": None,
        "ari": None,
        "silhouette_labels": None,
        "silhouette_clusters": safe_silhouette(x, assignments),
    }
    if labels is not None:
        out.update(agreement(labels, assignments))
        out["silhouette_labels"] = safe_silhouette(x, labels)
    return out
