"""The §6 pipeline (normalise, PCA, DPMM, t-SNE) on synthetic clustered data and tiny samples."""

from __future__ import annotations

import numpy as np
import pytest

from cotdistill.analysis.dpmm import analyze_features, l2_normalize, plot_tsne, reduce
from cotdistill.config import AnalysisConfig
from cotdistill.errors import CotdistillError


def _blobs(k: int, per: int, d: int = 96, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d))
    labels = np.repeat(np.arange(k), per)
    return centers[labels] + 0.3 * rng.normal(size=(k * per, d)), labels


@pytest.mark.parametrize("k,seed", [(5, 0), (5, 1), (8, 0), (8, 2)])
def test_recovers_synthetic_clusters(k, seed):
    x, labels = _blobs(k, 60, seed=seed)
    res = analyze_features(x, [f"p{i}" for i in labels], AnalysisConfig(), with_tsne=False)
    m = res.metrics
    assert abs(m["effective_clusters"] - k) <= 1, m["weights"]
    assert m["nmi"] > 0.9 and m["ari"] > 0.8
    assert m["silhouette_labels"] > 0.5
    assert m["exp_effective_entropy"] == pytest.approx(k, abs=1.0)  # balanced clusters: exp(H) ~ k
    assert m["exp_entropy"] >= m["exp_effective_entropy"] - 1e-9  # empty components only add entropy


def test_one_cluster_has_low_entropy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 32)) * 0.1 + 5.0
    m = analyze_features(x, None, with_tsne=False).metrics
    collapsed = _blobs(6, 40)[0]
    spread = analyze_features(collapsed, None, with_tsne=False).metrics
    assert m["exp_entropy"] < spread["exp_entropy"]
    assert m["nmi"] is None and m["silhouette_labels"] is None


def test_small_samples_are_clipped_not_crashing(tmp_path):
    x = np.random.default_rng(0).normal(size=(4, 10))
    res = analyze_features(x, ["a", "a", "b", "b"], AnalysisConfig())  # pca 50, 30 components, perplexity 30
    assert res.x_pca.shape == (4, 3)
    assert res.settings["dpmm"]["n_components"] == 4 and res.settings["tsne"]["perplexity"] == 3
    assert res.tsne.shape == (4, 2)
    plot_tsne(res, tmp_path / "t.png", "tiny")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one = analyze_features(x, ["a"] * 4)
    assert one.metrics["nmi"] is None and one.metrics["silhouette_labels"] is None
    with pytest.raises(CotdistillError):
        reduce(x[:1])
    with pytest.raises(CotdistillError):
        analyze_features(x, ["a"] * 3)


def test_l2_normalize_and_pca_dim():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    assert np.allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])
    z, info = reduce(np.random.default_rng(0).normal(size=(30, 8)), pca_dim=50)
    assert z.shape == (30, 8) and info["pca_dim"] == 8
