"""Reduction and clustering of response features: L2-normalise, PCA, Dirichlet-process mixture, t-SNE.

METHODS.md §6.3-§6.6. scikit-learn does the work; this module only wires the config keys
(``analysis.pca_dim``, ``analysis.dpmm.*``, ``analysis.tsne.*``) and clips them to small samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cotdistill.analysis.metrics import cluster_metrics
from cotdistill.config import AnalysisConfig, DpmmConfig, TsneConfig
from cotdistill.errors import CotdistillError


@dataclass
class LatentResult:
    """One latent analysis: reduced points, DPMM fit and metrics.

    Attributes:
        x_pca: ``[N, P]`` PCA coordinates (P = clipped ``pca_dim``).
        weights: ``[K]`` DPMM mixture weights.
        assignments: ``[N]`` hard cluster of each point.
        labels: ``[N]`` given labels (or None).
        metrics: JSON-ready metrics (see :func:`cluster_metrics`) plus the effective settings.
        tsne: ``[N, 2]`` t-SNE embedding, or None when not computed.
    """

    x_pca: np.ndarray
    weights: np.ndarray
    assignments: np.ndarray
    labels: np.ndarray | None
    metrics: dict[str, Any]
    tsne: np.ndarray | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``x`` ``[N, D]`` scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


def reduce(features: np.ndarray, pca_dim: int = 50, seed: int = 0) -> tuple[np.ndarray, dict]:
    """L2-normalise then PCA ``[N, D] -> [N, P]`` with ``P = min(pca_dim, N - 1, D)``.

    Returns the reduced points and ``{"pca_dim": P, "explained_variance": float}``.
    """
    from sklearn.decomposition import PCA

    x = l2_normalize(features)
    n, d = x.shape
    if n < 2:
        raise CotdistillError(f"analysis: need at least 2 responses for PCA, got {n}")
    p = max(1, min(pca_dim, n - 1, d))
    pca = PCA(n_components=p, random_state=seed)
    z = pca.fit_transform(x)
    return z, {"pca_dim": int(p), "explained_variance": float(pca.explained_variance_ratio_.sum())}


def fit_dpmm(x: np.ndarray, cfg: DpmmConfig | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Fit the truncated Dirichlet-process Gaussian mixture on ``x`` ``[N, P]``.

    ``n_components`` is clipped to N (sklearn needs N >= components). Returns
    ``(weights [K], assignments [N], info)`` where info records the effective settings and convergence.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    cfg = cfg or DpmmConfig()
    k = max(1, min(cfg.n_components, x.shape[0]))
    gm = BayesianGaussianMixture(
        n_components=k,
        weight_concentration_prior_type="dirichlet_process",
        weight_concentration_prior=cfg.weight_concentration_prior,
        covariance_type=cfg.covariance_type,
        max_iter=cfg.max_iter,
        random_state=cfg.random_state,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reported in info instead
        gm.fit(x)
    info = {
        "n_components": int(k),
        "weight_concentration_prior": cfg.weight_concentration_prior,
        "covariance_type": cfg.covariance_type,
        "converged": bool(gm.converged_),
        "n_iter": int(gm.n_iter_),
    }
    return np.asarray(gm.weights_), np.asarray(gm.predict(x)), info


def tsne_embed(x: np.ndarray, cfg: TsneConfig | None = None) -> np.ndarray:
    """2-D t-SNE of ``x`` ``[N, P]`` with perplexity clipped to ``N - 1``; returns ``[N, 2]``."""
    from sklearn.manifold import TSNE

    cfg = cfg or TsneConfig()
    n = x.shape[0]
    if n < 3:
        # t-SNE is meaningless on 1-2 points; place them on a line so plots still render
        return np.stack([np.arange(n, dtype=np.float64), np.zeros(n)], axis=1)
    perplexity = float(min(cfg.perplexity, n - 1))
    init = cfg.init if x.shape[1] >= 2 else "random"
    tsne = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=cfg.seed)
    return tsne.fit_transform(np.asarray(x, dtype=np.float64))


def analyze_features(
    features: np.ndarray,
    labels: list | np.ndarray | None = None,
    cfg: AnalysisConfig | None = None,
    *,
    with_tsne: bool = True,
) -> LatentResult:
    """The §6 pipeline on one feature matrix: normalise, PCA, DPMM, metrics, optional t-SNE.

    Args:
        features: ``[N, D]`` response features (hidden_mean or sbert).
        labels: ``[N]`` given labels (perspective / model tag) for NMI, ARI and silhouette, or None.
        cfg: the ``analysis`` config section (defaults when None).
        with_tsne: also compute the 2-D embedding for plotting.
    """
    cfg = cfg or AnalysisConfig()
    features = np.asarray(features)
    if features.ndim != 2:
        raise CotdistillError(f"analysis: features must be a 2-D matrix, got shape {features.shape}")
    if labels is not None and len(labels) != features.shape[0]:
        raise CotdistillError(f"analysis: {len(labels)} labels for {features.shape[0]} feature rows")
    x, pca_info = reduce(features, cfg.pca_dim, seed=cfg.dpmm.random_state)
    weights, assign, dpmm_info = fit_dpmm(x, cfg.dpmm)
    lab = None if labels is None else np.asarray([str(v) for v in labels])
    metrics = cluster_metrics(x, weights, assign, lab, cfg.effective_weight_threshold)
    metrics["weights"] = [float(w) for w in np.sort(weights)[::-1]]
    settings = {"pca": pca_info, "dpmm": dpmm_info}
    emb = None
    if with_tsne:
        emb = tsne_embed(x, cfg.tsne)
        settings["tsne"] = {"perplexity": float(min(cfg.tsne.perplexity, max(1, x.shape[0] - 1))),
                            "init": cfg.tsne.init, "seed": cfg.tsne.seed}
    metrics["settings"] = settings
    return LatentResult(x_pca=x, weights=weights, assignments=assign, labels=lab, metrics=metrics,
                        tsne=emb, settings=settings)


def plot_tsne(result: LatentResult, path, title: str = "") -> None:
    """Save a two-panel t-SNE figure (coloured by given label, and by DPMM cluster) as PNG."""
    from cotdistill.analysis.plotting import new_figure, save_figure

    if result.tsne is None:
        raise CotdistillError("analysis: t-SNE was not computed for this result")
    emb = result.tsne
    fig, axes = new_figure(1, 2, width=11, height=4.8)
    panels = [("label", result.labels), ("DPMM cluster", result.assignments.astype(str))]
    for ax, (name, lab) in zip(axes, panels):
        if lab is None:
            ax.scatter(emb[:, 0], emb[:, 1], s=12, alpha=0.8)
        else:
            uniq = sorted(set(lab.tolist()), key=_natural_key)
            cmap = _palette(len(uniq))
            for i, u in enumerate(uniq):
                m = lab == u
                ax.scatter(emb[m, 0], emb[m, 1], s=12, alpha=0.8, color=cmap[i], label=str(u))
            if len(uniq) <= 20:
                ax.legend(fontsize=7, markerscale=1.2, loc="best", frameon=False)
        ax.set_title(f"t-SNE coloured by {name}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)


def _natural_key(s: str):
    return (0, int(s)) if s.isdigit() else (1, s)


def _palette(n: int) -> list:
    import matplotlib

    base = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [base(i % base.N) for i in range(n)]
