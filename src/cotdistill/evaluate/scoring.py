"""Accuracy with a seeded percentile-bootstrap 95% confidence interval."""

from __future__ import annotations

from collections.abc import Sequence


def bootstrap_ci(correct: Sequence[bool], *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of 0/1 outcomes.

    Draws ``n_boot`` resamples (with replacement, size n) with ``numpy.random.default_rng(seed)``;
    returns the ``(1-level)/2`` and ``(1+level)/2`` quantiles of the resampled accuracies.
    ``correct``: shape (n,). Empty input gives ``(0.0, 0.0)``.
    """
    import numpy as np

    x = np.asarray(correct, dtype=float)
    if x.size == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return (float(lo), float(hi))


def accuracy_summary(correct: Sequence[bool], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """``{"n", "correct", "accuracy", "ci95"}`` for 0/1 outcomes (accuracy 0.0 when n = 0)."""
    n = len(correct)
    k = int(sum(bool(c) for c in correct))
    lo, hi = bootstrap_ci(correct, n_boot=n_boot, seed=seed)
    return {"n": n, "correct": k, "accuracy": k / n if n else 0.0, "ci95": [lo, hi]}
