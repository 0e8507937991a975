"""Comparison statistics against hand computations: Wilson, exact McNemar, Wilcoxon, Holm, and the
seeds × questions bootstrap on cases whose answer is known."""

import math

import numpy as np
import pytest

from cotdistill.evaluate.stats import (
    PairedDifference,
    accuracy_interval,
    decide_family,
    hierarchical_bootstrap,
    holm,
    mcnemar_exact_p,
    paired_accuracy_difference,
    paired_metric_difference,
    sign_flip_p,
    verdict,
    wilcoxon_p,
    wilson_interval,
)


def test_wilson_k3_n10_by_hand():
    # z = 1.959964, z² = 3.841459, p̂ = 0.3, n = 10
    # centre = (p̂ + z²/2n) / (1 + z²/n) = (0.3 + 0.192073) / 1.384146 = 0.355507
    # half   = z / (1 + z²/n) · sqrt(p̂(1−p̂)/n + z²/4n²) = 1.416010 · sqrt(0.021 + 0.009604) = 0.247716
    lo, hi = wilson_interval(3, 10)
    assert lo == pytest.approx(0.355507 - 0.247716, abs=2e-6)
    assert hi == pytest.approx(0.355507 + 0.247716, abs=2e-6)
    # k = 0 of 40: upper = z² / (n + z²) = 3.841459 / 43.841459 = 0.087621 (a bootstrap would say [0, 0])
    assert wilson_interval(0, 40) == pytest.approx((0.0, 0.087621), abs=2e-6)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_accuracy_interval_rule():
    # < 100 questions: Wilson with n = questions, k = mean accuracy × questions (seeds do not multiply n)
    one_seed = np.array([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0]])
    two_seeds = np.array([[1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]])  # 0.2, 0.4 → 3 of 10
    for m in (one_seed, two_seeds):
        lo, hi, how = accuracy_interval(m)
        assert how == "wilson" and (lo, hi) == pytest.approx(wilson_interval(3, 10))
    # ≥ 100 questions: bootstrap, and seeds enter it. Seed 0 gets all 100 right, seed 1 none: a resample of
    # the two seeds is {0,0}, {0,1} or {1,1} (p = 1/4, 1/2, 1/4) → accuracy 0, 0.5 or 1 whatever the
    # questions → 95% interval [0, 1]. Averaging each question over seeds first would give [0.5, 0.5].
    lo, hi, how = accuracy_interval(np.array([[1] * 100, [0] * 100]), n_boot=2000)
    assert how == "bootstrap" and (lo, hi) == pytest.approx((0.0, 1.0))


def test_seed_pairs_versus_independent_seeds():
    # Seed 0 of both methods gets all 100 questions right, seed 1 none. Same seed labels: a seed is drawn as
    # a pair, Δ* = 0 in every replicate → [0, 0]. Different labels: A's and B's seeds are drawn apart,
    # Δ* = mean(A*) − mean(B*) ∈ {−1, …, 1} with P(−1) = P(+1) = 1/4 · 1/4 = 1/16 > 2.5% → [−1, 1].
    m = np.array([[1.0] * 100, [0.0] * 100])
    r = paired_accuracy_difference(m, m, seeds_a=[0, 1], seeds_b=[0, 1], n_boot=2000)
    assert r.ci_method == "hierarchical bootstrap over seed pairs and questions" and r.ci95 == (0.0, 0.0)
    r = paired_accuracy_difference(m, m[::-1], seeds_a=[0, 1], seeds_b=[1, 0], n_boot=2000)  # rows reordered
    assert r.ci95 == (0.0, 0.0)
    r = paired_accuracy_difference(m, m, seeds_a=[0, 1], seeds_b=[7, 8], n_boot=2000)
    assert r.ci_method == "hierarchical bootstrap over seeds and questions"
    assert r.ci95 == pytest.approx((-1.0, 1.0))


def test_hierarchical_bootstrap_resamples_seeds():
    reps = hierarchical_bootstrap(np.array([[1.0] * 30, [0.0] * 30]), n_boot=4000, seed=1)
    values, counts = np.unique(reps.round(12), return_counts=True)
    assert values.tolist() == [0.0, 0.5, 1.0]
    assert counts / 4000 == pytest.approx([0.25, 0.5, 0.25], abs=0.03)


def test_mcnemar_exact_b1_c6_by_hand():
    # 7 discordant pairs, split 1 : 6 under H0 ~ Binomial(7, 1/2):
    # p = 2 · P(X ≤ 1) = 2 · (C(7,0) + C(7,1)) / 2^7 = 2 · 8 / 128 = 0.125
    assert mcnemar_exact_p(1, 6) == pytest.approx(0.125)
    assert mcnemar_exact_p(6, 1) == pytest.approx(0.125)
    assert mcnemar_exact_p(7, 0) == pytest.approx(2 / 128)
    assert mcnemar_exact_p(0, 0) == 1.0


def test_wilcoxon_all_positive_by_hand():
    # 10 distinct positive differences: W+ = 55 is the single most extreme of 2^10 sign patterns
    # → two-sided exact p = 2 / 1024
    x = np.arange(10.0) + np.linspace(0.1, 1.0, 10)
    assert wilcoxon_p(x, np.arange(10.0)) == pytest.approx(2 / 1024)
    assert wilcoxon_p(np.ones(5), np.ones(5)) == 1.0


def test_holm_three_pvalues_by_hand():
    # sorted 0.01, 0.03, 0.04 → × 3, 2, 1 = 0.03, 0.06, 0.04 → running max 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # None is outside the family: a family of two, 0.01 × 2, max(0.04 × 1, 0.02)
    assert holm([0.01, None, 0.04]) == [pytest.approx(0.02), None, pytest.approx(0.04)]


def test_identical_methods_give_zero():
    rng = np.random.default_rng(0)
    a = (rng.random((3, 120)) < 0.4).astype(float)
    for b in (a, a[:1]):  # same seeds, or the single "base" row
        r = paired_accuracy_difference(a[: len(b)], b, n_boot=500)
        assert r.delta == 0.0 and r.ci95 == (0.0, 0.0) and r.p_combined == 1.0 and r.verdict == "not separable"
    r = paired_accuracy_difference(a[:1], a[:1], n_boot=500)  # one seed each: scipy's paired bootstrap
    assert r.ci_method.startswith("paired bootstrap") and r.ci95 == (0.0, 0.0)


def test_deterministic_shift_of_a_continuous_metric():
    b = np.random.default_rng(3).gamma(2.0, 1.0, size=(1, 150))  # per-question mean token NLL of the base
    for a in (b - 0.25, np.repeat(b - 0.25, 3, axis=0)):  # one seed (scipy) and three seeds (hierarchical)
        r = paired_metric_difference(a, b, n_boot=500)
        assert r.delta == pytest.approx(-0.25)
        assert r.ci95 == pytest.approx((-0.25, -0.25))
        # 150 positive differences, all of one sign: Wilcoxon p ≈ 0; lower NLL is better
        assert r.test == "Wilcoxon signed-rank" and r.p_combined < 1e-20 and r.verdict == "better"
    assert paired_metric_difference(b + 0.25, b, n_boot=200).verdict == "worse"


def test_pairing_over_questions():
    # A = B except one question B misses and A gets right. Every resample's Δ = (copies of that question)/200
    # ≥ 0: the paired interval starts at 0 and stays within a few questions (an unpaired one is ±10 points).
    b = np.array([[1.0, 0.0] * 100])
    a = b.copy()
    a[0, 1] = 1.0
    for aa in (a, np.repeat(a, 2, axis=0)):
        r = paired_accuracy_difference(aa, b, n_boot=2000)
        assert r.delta == pytest.approx(1 / 200)
        assert r.ci95[0] == 0.0 and r.ci95[1] <= 0.025
        assert [(s["a_only"], s["b_only"], s["p"]) for s in r.per_seed] == [(1, 0, 1.0)] * len(aa)


def test_sign_flip_is_mcnemar_on_one_seed():
    # differences in {−1, 0, +1}: flipping signs of the 7 discordant questions (1 × −1, 6 × +1) is the sign
    # test, i.e. the exact McNemar test: 2 · (1 + 7) / 2^7 = 0.125; the zeros change nothing
    d = np.array([-1.0] + [1.0] * 6 + [0.0] * 13)
    assert sign_flip_p(d) == pytest.approx(0.125) == pytest.approx(mcnemar_exact_p(6, 1))
    assert sign_flip_p(np.zeros(5)) == 1.0
    assert sign_flip_p(np.array([0.0, 1.0, 0.0])) == 1.0 == mcnemar_exact_p(1, 0)


def test_per_seed_mcnemar_and_combined_p_by_hand():
    # 20 questions; the base gets q0–q4 right.
    b = np.zeros((1, 20))
    b[0, :5] = 1
    s0 = b[0].copy()
    s0[0] = 0
    s0[5:11] = 1  # loses q0 (b_only = 1), gains q5–q10 (a_only = 6): p = 0.125, Δ = 5/20
    s1 = b[0].copy()
    s1[5:12] = 1  # gains q5–q11 (a_only = 7): p = 2/128, Δ = 7/20
    r = paired_accuracy_difference(np.stack([s0, s1]), b, seeds_a=[11, 12], n_boot=1000)
    assert r.delta == pytest.approx(0.30)
    assert [(s["seed"], s["a_only"], s["b_only"]) for s in r.per_seed] == [("11", 6, 1), ("12", 7, 0)]
    assert [s["p"] for s in r.per_seed] == pytest.approx([0.125, 2 / 128])
    assert [s["delta"] for s in r.per_seed] == pytest.approx([0.25, 0.35])
    # Over seeds: per-question differences of seed means, q0: −0.5, q5–q10: +1 (×6), q11: +0.5, rest 0.
    # 8 nonzero → all 2^8 = 256 sign patterns. Observed sum 6 of a possible 7; a pattern reaches ≥ 6 only
    # if the magnitudes it makes negative sum to ≤ 0.5: none, {q0} or {q11} → P = 3/256, two-sided 6/256.
    assert r.p_combined == pytest.approx(6 / 256)
    assert r.ci95[0] > 0 and r.verdict == "better"
    d = r.as_dict()
    assert d["ci95"] == list(r.ci95) and d["seeds_a"] == 2 and d["seeds_b"] == 1


def test_seed_pairing_by_label():
    a = np.ones((3, 10))
    b = np.zeros((2, 10))
    r = paired_accuracy_difference(a, b, seeds_a=[0, 1, 2], seeds_b=[2, 1], n_boot=200)
    assert [(s["seed"], s["seed_b"]) for s in r.per_seed] == [("1", "1"), ("2", "2")]
    # no seed in common: no per-seed McNemar, but the test over seed means still runs (10 × +1: 2/2^10)
    r = paired_accuracy_difference(a, b, seeds_a=[0, 1, 2], seeds_b=[5, 6], n_boot=2000)
    assert r.per_seed == [] and r.p_combined == pytest.approx(2 / 1024) and r.verdict == "better"


def _result(delta, ci, p):
    return PairedDifference(delta, ci, "test", "exact McNemar", "sign flip", 100, 3, 1, p_combined=p)


def test_decide_family_holm_and_verdicts():
    # Holm of 0.01, 0.04, 0.03 = 0.03, 0.06, 0.06 (as above); only the first stays below 0.05
    fam = {"mind": _result(0.10, (0.04, 0.16), 0.01), "sbs": _result(0.06, (0.01, 0.11), 0.04),
           "mode": _result(-0.08, (-0.12, -0.02), 0.03)}
    decide_family(fam)
    assert [fam[m].p_holm for m in fam] == pytest.approx([0.03, 0.06, 0.06])
    assert [fam[m].verdict for m in fam] == ["better", "not separable", "not separable"]
    assert decide_family({"mode": _result(-0.08, (-0.12, -0.02), 0.03)})["mode"].verdict == "worse"
    # the interval must agree: a small p with an interval covering 0 (seed variance) is not separable
    assert verdict(0.05, (-0.01, 0.11), 0.001) == "not separable"
    assert verdict(-0.3, (-0.4, -0.2), 0.001, higher_is_better=False) == "better"


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="same questions"):
        paired_accuracy_difference(np.ones((1, 4)), np.ones((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        paired_metric_difference(np.array([[1.0, np.nan]]), np.ones((1, 2)))
