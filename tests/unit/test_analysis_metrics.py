"""Cluster metrics and linear CKA against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cotdistill.analysis.forgetting import accuracy_table, benchmark_role, linear_cka
from cotdistill.analysis.metrics import (
    agreement,
    cluster_metrics,
    effective_clusters,
    safe_silhouette,
    weight_entropy,
)
from cotdistill.errors import CotdistillError


def test_weight_entropy_by_hand():
    # H([.5, .25, .25]) = .5 ln 2 + 2 * .25 ln 4 = 1.5 ln 2; exp(H) = 2^1.5
    assert weight_entropy([0.5, 0.25, 0.25, 0.0]) == pytest.approx(1.5 * math.log(2))
    assert weight_entropy([1.0]) == 0.0
    assert weight_entropy([2.0, 2.0]) == pytest.approx(math.log(2))  # renormalised


def test_effective_clusters_threshold():
    assert effective_clusters([0.6, 0.3, 0.05, 0.009, 0.001], 0.01) == 3
    assert effective_clusters([0.6, 0.3, 0.05, 0.009, 0.001], 0.1) == 2


def test_silhouette_and_agreement_degenerate_cases_are_none():
    x = np.array([[0.0, 0], [0, 1], [5, 5], [5, 6]])
    assert safe_silhouette(x, [0, 0, 0, 0]) is None  # one label
    assert safe_silhouette(x, [0, 1, 2, 3]) is None  # every point alone
    s = safe_silhouette(x, [0, 0, 1, 1])
    # by hand for point (0,0): a = 1, b = mean(|(5,5)|, |(5,6)|); all four points are symmetric pairs
    b0 = (math.hypot(5, 5) + math.hypot(5, 6)) / 2
    b1 = (math.hypot(5, 4) + math.hypot(5, 5)) / 2
    assert s == pytest.approx(((1 - 1 / b0) + (1 - 1 / b1)) / 2, rel=1e-9)
    assert agreement(["a"] * 4, [0, 1, 0, 1]) == {"nmi": None, "ari": None}
    perfect = agreement(["a", "a", "b", "b"], [7, 7, 3, 3])
    assert perfect["nmi"] == pytest.approx(1.0) and perfect["ari"] == pytest.approx(1.0)


def test_cluster_metrics_fields():
    x = np.array([[0.0, 0], [0, 1], [5, 5], [5, 6], [5, 7]])
    m = cluster_metrics(x, np.array([0.495, 0.495, 0.01]), np.array([0, 0, 1, 1, 1]), ["p", "p", "q", "q", "q"], 0.05)
    assert m["effective_clusters"] == 2 and m["occupied_clusters"] == 2
    assert m["exp_effective_entropy"] == pytest.approx(2.0)
    assert m["weight_entropy"] == pytest.approx(-2 * 0.495 * math.log(0.495) - 0.01 * math.log(0.01))
    assert m["nmi"] == pytest.approx(1.0) and m["silhouette_labels"] == pytest.approx(m["silhouette_clusters"])
    one = cluster_metrics(x, np.array([1.0]), np.zeros(5, int), ["p"] * 5)
    assert one["silhouette_clusters"] is None and one["nmi"] is None and one["effective_clusters"] == 1


def test_linear_cka_hand_example():
    x = np.array([[1.0, 0], [0, 1], [-1, 0], [0, -1]])  # centred; XᵀX = 2I, ‖·‖_F = 2√2
    y = np.array([[1.0], [1], [-1], [-1]])  # YᵀY = 4; YᵀX = [2, 2], ‖·‖_F² = 8
    assert linear_cka(x, y) == pytest.approx(8 / (2 * math.sqrt(2) * 4))
    assert linear_cka(x, y + 3.0) == pytest.approx(1 / math.sqrt(2))  # columns are centred first


def test_linear_cka_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6))
    y = rng.normal(size=(20, 4))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert linear_cka(x, x @ q) == pytest.approx(1.0)
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x))
    assert 0.0 <= linear_cka(x, y) < 0.9
    assert linear_cka(x, np.ones((20, 3))) == 0.0
    with pytest.raises(CotdistillError):
        linear_cka(x, y[:10])


def test_accuracy_table_deltas_roles_and_averages():
    s = {
        "base": {"gsm8k": {"accuracy": 0.5, "ci95": [0.4, 0.6], "n": 100},
                 "csqa": {"accuracy": 0.6, "ci95": [0.5, 0.7], "n": 50}},
        "mind": {"csqa": {"accuracy": 0.5, "n": 50}, "gsm8k": {"accuracy": 0.7, "n": 100},
                 "svamp": {"accuracy": 0.9, "n": 10}},
    }
    t = accuracy_table(s, ood=["csqa"])
    assert t["base"] == "base"
    assert [b["name"] for b in t["benchmarks"]] == ["gsm8k", "svamp", "csqa"]  # ID first
    assert t["models"]["mind"]["gsm8k"]["delta"] == pytest.approx(0.2)
    assert t["models"]["mind"]["csqa"]["delta"] == pytest.approx(-0.1)
    assert t["models"]["mind"]["svamp"]["delta"] is None  # base has no svamp
    assert t["averages"]["mind"] == {"id": pytest.approx(0.8), "ood": pytest.approx(0.5)}
    assert benchmark_role("strategyqa") == "ood" and benchmark_role("gsm8k") == "id"
    assert benchmark_role("gsm8k", ood=["gsm8k"]) == "ood"
