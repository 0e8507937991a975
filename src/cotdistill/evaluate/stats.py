"""Statistics for comparison tables: is method A better than method B on the same questions?

Every evaluated question is answered by every method and every training seed, so the design is
*paired* over questions (the same question is hard for A and for B) and *crossed* with seeds (every
seed answers the same questions). The functions here keep both facts:

* :func:`wilson_interval` — one accuracy on few questions (statsmodels' Wilson score interval).
* :func:`accuracy_interval` — one row's accuracy: Wilson below :data:`WILSON_BELOW_QUESTIONS` questions,
  otherwise a bootstrap over seeds and questions.
* :func:`hierarchical_bootstrap` — bootstrap replicates of mean(A) − mean(B) resampling seeds and questions.
* :func:`paired_accuracy_difference` — 0/1 outcomes: Δ, hierarchical CI, exact McNemar p per seed and
  a sign-flip permutation p over all seeds.
* :func:`paired_metric_difference` — a continuous per-question metric (e.g. mean token NLL of held-out
  rationales, lower is better): Δ, hierarchical CI, Wilcoxon signed-rank p per seed and over seeds.
* :func:`decide_family` — Holm over the methods compared with one target, and the verdict word.

Array shapes: ``a`` is ``[n_seeds_a, n_questions]`` and ``b`` is ``[n_seeds_b, n_questions]``, the
columns being the same questions in the same order. ``b`` may have one row (the base student, which
has no training seed); it then stands against every seed of ``a``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

ALPHA = 0.05
"""Significance level of every test and 1 − the coverage of every interval here."""

WILSON_BELOW_QUESTIONS = 100
"""Rows scored on fewer questions get a Wilson interval: a percentile bootstrap on a few dozen 0/1
outcomes under-covers (40 questions all wrong give the bootstrap interval [0, 0], Wilson [0, 8.8%])."""

N_BOOT = 10_000
"""Bootstrap replicates and random sign flips: Holm over 7 methods asks for p < 0.05/7 ≈ 0.007, which
10 000 flips resolve (smallest p ≈ 2e-4), and the interval's 2.5% tail rests on 250 replicates."""

VERDICTS = ("better", "worse", "not separable")


def wilson_interval(k: float, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials (statsmodels ``proportion_confint``).

    ``k`` may be fractional (an accuracy averaged over seeds times the number of questions). ``n = 0``
    gives ``(nan, nan)``.
    """
    from statsmodels.stats.proportion import proportion_confint

    if n <= 0:
        return (math.nan, math.nan)
    lo, hi = proportion_confint(k, n, alpha=alpha, method="wilson")
    return (float(lo), float(hi))


def _matrix(x: Any, name: str) -> np.ndarray:
    m = np.asarray(x, dtype=float)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] == 0:
        raise ValueError(f"{name}: expected [n_seeds, n_questions], got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return m


def _resample_weights(rng: np.random.Generator, n_rep: int, n: int) -> np.ndarray:
    """[n_rep, n] resampling weights: how often each of n units is drawn in a resample of size n, / n."""
    idx = rng.integers(0, n, size=(n_rep, n)) + (np.arange(n_rep) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_rep * n).reshape(n_rep, n) / n


def hierarchical_bootstrap(a: Any, b: Any = None, *, paired_seeds: bool = False, n_boot: int = N_BOOT,
                           seed: int = 0, chunk: int = 1000) -> np.ndarray:
    """Bootstrap replicates of ``mean(a) − mean(b)`` (of ``mean(a)`` when ``b`` is None), shape [n_boot].

    Each replicate draws, with replacement, the seeds (level 1) and one resample of the questions
    (level 2) that every drawn seed of both methods is scored on. Hand-written: scipy's and
    statsmodels' bootstraps resample one index only.

    Why this scheme:

    * Seeds enter the variance: a method whose seeds disagree gets a wide interval. Averaging each
      question over seeds before resampling (the old table) hides that.
    * Questions are drawn once per replicate, not once per seed, because the design is crossed: every
      seed answers the same questions, so a hard question is hard for all of them, and redrawing
      questions per seed would shrink the question term as if each seed had seen fresh questions.
      Resampling both factors of a crossed design independently is Owen's (2007) "pigeonhole"
      bootstrap; it is mildly conservative.
    * The same question draw is used for A and B: the comparison is paired over questions.
    * With ``paired_seeds`` (A and B trained with the same seed numbers, row i of both = seed i) a
      seed is drawn as a pair: the same seed number gives both methods the same initialisation and
      data order, so their outcomes may be correlated, and the pair is the independent unit.
      Otherwise the seeds of A and of B are drawn independently (their numbers may differ; B may be
      the seedless base student, one row that every replicate keeps).

    Args:
        a: [n_seeds_a, n_questions] per-question outcomes (0/1 or float) of method A.
        b: [n_seeds_b, n_questions] of method B on the same questions, or None.
        paired_seeds: draw row i of ``a`` and of ``b`` together (needs n_seeds_a == n_seeds_b).
        n_boot: number of replicates.
        seed: seed of ``numpy.random.default_rng``.
        chunk: replicates drawn at once (memory: chunk × n_questions).
    """
    a = _matrix(a, "a")
    bm = None if b is None else _matrix(b, "b")
    if bm is not None and bm.shape[1] != a.shape[1]:
        raise ValueError(f"a and b must score the same questions: {a.shape[1]} vs {bm.shape[1]} columns")
    if paired_seeds and (bm is None or bm.shape[0] != a.shape[0]):
        raise ValueError("paired_seeds needs a and b with the same number of seed rows")
    rng = np.random.default_rng(seed)
    n_q = a.shape[1]
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        n = min(chunk, n_boot - start)
        wq = _resample_weights(rng, n, n_q)  # [n, Q], shared by both methods: paired
        wa = _resample_weights(rng, n, a.shape[0])  # [n, S_a] seed weights
        rep = ((wq @ a.T) * wa).sum(1)
        if bm is not None:
            wb = wa if paired_seeds else _resample_weights(rng, n, bm.shape[0])
            rep -= ((wq @ bm.T) * wb).sum(1)
        out[start:start + n] = rep
    return out


def _percentile_ci(replicates: np.ndarray, alpha: float) -> tuple[float, float]:
    lo, hi = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def accuracy_interval(m: Any, *, alpha: float = ALPHA, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, str]:
    """``(lo, hi, method)``: the (1 − alpha) interval of one row's accuracy, ``m`` = [n_seeds, n_questions] of 0/1.

    Rule: fewer than :data:`WILSON_BELOW_QUESTIONS` questions → Wilson score interval with
    n = questions and k = accuracy × questions (a question answered by three seeds is not three
    independent trials, so seeds do not multiply n); otherwise the percentile interval of
    :func:`hierarchical_bootstrap` (seeds and questions; with one seed, questions only). The rule
    counts questions, not questions × seeds, because questions are the independent units.
    """
    m = np.asarray(m, dtype=float)
    if m.ndim != 2 or m.size == 0:
        return (math.nan, math.nan, "none")
    n_q = m.shape[1]
    if n_q < WILSON_BELOW_QUESTIONS:
        lo, hi = wilson_interval(float(m.mean()) * n_q, n_q, alpha)
        return (lo, hi, "wilson")
    lo, hi = _percentile_ci(hierarchical_bootstrap(m, n_boot=n_boot, seed=seed), alpha)
    return (lo, hi, "bootstrap")


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p (statsmodels ``mcnemar(exact=True)``) from the discordant counts.

    ``a_only``: questions A answers correctly and B does not; ``b_only``: the reverse. No discordant
    pair gives p = 1.
    """
    from statsmodels.stats.contingency_tables import mcnemar

    if a_only + b_only == 0:
        return 1.0
    return float(mcnemar([[0, a_only], [b_only, 0]], exact=True).pvalue)


def wilcoxon_p(x: Any, y: Any) -> float:
    """Two-sided Wilcoxon signed-rank p of paired samples ``x``, ``y`` (shape [n]; scipy, zero
    differences dropped, exact for n ≤ 50 without ties). All differences zero gives p = 1."""
    from scipy.stats import wilcoxon

    d = np.asarray(x, dtype=float) - np.asarray(y, dtype=float)
    if not np.any(d != 0):
        return 1.0
    return float(wilcoxon(d, zero_method="wilcox").pvalue)


def holm(pvalues: Sequence[float | None], alpha: float = ALPHA) -> list[float | None]:
    """Holm-adjusted p-values (statsmodels ``multipletests(method="holm")``); None entries stay None
    and are not part of the family."""
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(pvalues) if p is not None]
    out: list[float | None] = [None] * len(pvalues)
    if idx:
        adj = multipletests([pvalues[i] for i in idx], alpha=alpha, method="holm")[1]
        for i, p in zip(idx, adj):
            out[i] = float(p)
    return out


def sign_flip_p(d: Any, *, n_resamples: int = 9_999, seed: int = 0) -> float:
    """Two-sided paired sign-flip permutation p of "the per-question differences ``d`` (shape [n]) are
    symmetric about 0", statistic mean(d) (scipy ``permutation_test``, ``permutation_type="samples"``:
    swapping A and B within a question flips the sign of its difference).

    Zero differences are dropped (flipping them changes nothing). Exact when 2^(nonzero) ≤
    ``n_resamples``, else ``n_resamples`` random flips. On differences in {−1, 0, +1} (0/1 outcomes, one
    seed each) this is the sign test on the discordant pairs, i.e. the exact McNemar test.
    """
    from scipy.stats import permutation_test

    d = np.asarray(d, dtype=float)
    d = d[d != 0]
    if d.size <= 1:  # one nonzero difference: its two sign patterns are equally extreme
        return 1.0
    res = permutation_test((d, np.zeros_like(d)), lambda x, y, axis: np.mean(x - y, axis=axis),
                           permutation_type="samples", vectorized=True, n_resamples=n_resamples,
                           alternative="two-sided", rng=np.random.default_rng(seed))
    return float(min(1.0, res.pvalue))


@dataclass
class PairedDifference:
    """A − B on the same questions: the effect, its interval, per-seed tests and the decision.

    ``p_combined`` is the p of the test over all seeds (see :func:`paired_accuracy_difference`);
    ``p_holm`` and ``verdict`` are set by :func:`decide_family` (until then: a family of one).
    """

    delta: float
    ci95: tuple[float, float]
    ci_method: str
    test: str
    combined_test: str
    n_questions: int
    seeds_a: int
    seeds_b: int
    per_seed: list[dict[str, Any]] = field(default_factory=list)
    p_combined: float | None = None
    p_holm: float | None = None
    verdict: str = "not separable"
    higher_is_better: bool = True
    alpha: float = ALPHA

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN → None)."""
        d = asdict(self)
        d["ci95"] = [None if math.isnan(x) else x for x in self.ci95]
        if isinstance(self.delta, float) and math.isnan(self.delta):
            d["delta"] = None
        return d


def verdict(delta: float, ci: tuple[float, float], p_adjusted: float | None, *, alpha: float = ALPHA,
            higher_is_better: bool = True) -> str:
    """"better" / "worse" (for A against B) or "not separable".

    Separable only when the adjusted p is below ``alpha`` **and** the interval excludes 0 on the side
    of Δ: the test conditions on the trained students, the interval adds seed-to-seed training
    variance; a claim about the method needs both. (Requiring the interval as well only removes
    rejections, so Holm's family-wise error bound still holds.)
    """
    if p_adjusted is None or not p_adjusted < alpha or math.isnan(ci[0]):
        return "not separable"
    if ci[0] > 0 and delta > 0:
        return "better" if higher_is_better else "worse"
    if ci[1] < 0 and delta < 0:
        return "worse" if higher_is_better else "better"
    return "not separable"


def _seed_pairs(seeds_a: Sequence[str], seeds_b: Sequence[str]) -> list[tuple[str, int, int]]:
    """(label, row of a, row of b) for the per-seed tests: B's single row against each seed of A, else
    the seeds both have (same training seed number)."""
    if len(seeds_b) == 1:
        return [(str(s), i, 0) for i, s in enumerate(seeds_a)]
    where_b = {str(s): j for j, s in enumerate(seeds_b)}
    return [(str(s), i, where_b[str(s)]) for i, s in enumerate(seeds_a) if str(s) in where_b]


def _paired(a: Any, b: Any, seeds_a: Sequence[Any] | None, seeds_b: Sequence[Any] | None, *,
            per_seed_test: Callable[[np.ndarray, np.ndarray], dict[str, Any]], test: str,
            combined_test: Callable[[np.ndarray], float], combined_name: str,
            higher_is_better: bool, alpha: float, n_boot: int, seed: int) -> PairedDifference:
    a, b = _matrix(a, "a"), _matrix(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must score the same questions: {a.shape[1]} vs {b.shape[1]} columns")
    seeds_a = [str(s) for s in (seeds_a if seeds_a is not None else range(a.shape[0]))]
    seeds_b = [str(s) for s in (seeds_b if seeds_b is not None else range(b.shape[0]))]
    if len(seeds_a) != a.shape[0] or len(seeds_b) != b.shape[0]:
        raise ValueError("seeds_a / seeds_b must name each row of a / b")
    n_q = a.shape[1]
    if n_q == 0:
        return PairedDifference(math.nan, (math.nan, math.nan), "none", test, combined_name, 0, a.shape[0],
                                b.shape[0], higher_is_better=higher_is_better, alpha=alpha)
    delta = float(a.mean() - b.mean())
    if a.shape[0] == 1 and b.shape[0] == 1:
        # One seed each: the ordinary paired bootstrap over questions, which scipy does.
        from scipy.stats import bootstrap

        res = bootstrap((a[0], b[0]), lambda x, y, axis: x.mean(axis) - y.mean(axis), paired=True,
                        vectorized=True, n_resamples=n_boot, confidence_level=1 - alpha,
                        method="percentile", rng=np.random.default_rng(seed))
        ci = (float(res.confidence_interval.low), float(res.confidence_interval.high))
        ci_method = "paired bootstrap over questions (scipy)"
    else:
        same_seeds = len(seeds_b) > 1 and sorted(seeds_a) == sorted(seeds_b)
        b_rows = b[[seeds_b.index(s) for s in seeds_a]] if same_seeds else b
        ci = _percentile_ci(hierarchical_bootstrap(a, b_rows, paired_seeds=same_seeds, n_boot=n_boot, seed=seed),
                            alpha)
        ci_method = ("hierarchical bootstrap over seed pairs and questions" if same_seeds
                     else "hierarchical bootstrap over seeds and questions")
    per_seed = [{"seed": label, "seed_b": seeds_b[j], "delta": float(a[i].mean() - b[j].mean()),
                 **per_seed_test(a[i], b[j])} for label, i, j in _seed_pairs(seeds_a, seeds_b)]
    p_comb = combined_test(a.mean(0) - b.mean(0))  # per-question difference of the seed means, [Q]
    out = PairedDifference(delta, ci, ci_method, test, combined_name, n_q, a.shape[0], b.shape[0], per_seed,
                           p_comb, higher_is_better=higher_is_better, alpha=alpha)
    return decide_family({"_": out}, alpha)["_"]


def _mcnemar_seed(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    xa, ya = x.astype(bool), y.astype(bool)
    a_only, b_only = int((xa & ~ya).sum()), int((~xa & ya).sum())
    return {"a_only": a_only, "b_only": b_only, "p": mcnemar_exact_p(a_only, b_only)}


def _wilcoxon_seed(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    return {"p": wilcoxon_p(x, y)}


def paired_accuracy_difference(a: Any, b: Any, seeds_a: Sequence[Any] | None = None,
                               seeds_b: Sequence[Any] | None = None, *, alpha: float = ALPHA,
                               n_boot: int = N_BOOT, seed: int = 0) -> PairedDifference:
    """Δ = accuracy(A) − accuracy(B) on the same questions, with its interval and tests.

    Args:
        a: [n_seeds_a, n_questions] 0/1 correctness of method A (one row per training seed).
        b: [n_seeds_b, n_questions] of method B, same question columns; one row is broadcast over A's seeds.
        seeds_a, seeds_b: labels of the rows (training seed numbers); per-seed tests pair A's and B's
            rows with the same label (or B's single row with each of A's). Default: row numbers.
        alpha: test level and 1 − interval coverage.
        n_boot, seed: bootstrap replicates / permutations and their RNG seed.

    Interval: :func:`hierarchical_bootstrap` over seeds and questions (seeds drawn as pairs when A
    and B carry the same seed labels, independently otherwise), or with one seed on each side
    ``scipy.stats.bootstrap(paired=True)`` over questions; percentile intervals either way.

    Tests:

    * per seed (``per_seed``: ``a_only``, ``b_only``, ``p``): the exact McNemar test of that seed's
      student against B's student of the same seed (or the base);
    * over all seeds (``p_combined``, the one Holm adjusts): McNemar's sign test generalised to
      several seeds, the paired sign-flip permutation test (:func:`sign_flip_p`) on each question's
      difference of seed means; with one seed on each side it *is* the exact McNemar test. It uses
      every seed's answers without treating repeats of a question as independent pairs.

    Alternatives rejected: McNemar on the discordant pairs pooled over seeds counts the base's
    answer to each question once per seed as if the repeats were independent (anti-conservative);
    "every seed's McNemar must reject" (largest per-seed p) is valid but has little power at a few
    hundred questions. Neither test sees seed-to-seed training variance (they condition on the trained
    students); that enters the decision through the interval (see :func:`verdict`).
    """
    return _paired(a, b, seeds_a, seeds_b, per_seed_test=_mcnemar_seed, test="exact McNemar",
                   combined_test=lambda d: sign_flip_p(d, n_resamples=n_boot, seed=seed),
                   combined_name="paired sign-flip on seed means", higher_is_better=True, alpha=alpha,
                   n_boot=n_boot, seed=seed)


def paired_metric_difference(a: Any, b: Any, seeds_a: Sequence[Any] | None = None,
                             seeds_b: Sequence[Any] | None = None, *, lower_is_better: bool = True,
                             alpha: float = ALPHA, n_boot: int = N_BOOT, seed: int = 0) -> PairedDifference:
    """Δ = mean(A) − mean(B) of a continuous per-question metric (e.g. mean token NLL of a held-out
    rationale; lower is better by default), with its interval and tests.

    Shapes, seed pairing and interval are those of :func:`paired_accuracy_difference`. The test, per
    seed and over all seeds (on each question's difference of seed means), is the Wilcoxon
    signed-rank test. Why not the paired t-test: per-question NLL differences are heavy-tailed (a few
    long or garbled rationales carry most of the squared deviation), which the t-test's normal
    approximation handles badly and the rank test ignores. The test is about the location
    (pseudo-median) of the differences; Δ and its interval are about the mean, so the verdict also
    asks the interval to exclude 0.
    """
    return _paired(a, b, seeds_a, seeds_b, per_seed_test=_wilcoxon_seed, test="Wilcoxon signed-rank",
                   combined_test=lambda d: wilcoxon_p(d, np.zeros_like(d)),
                   combined_name="Wilcoxon signed-rank on seed means", higher_is_better=not lower_is_better,
                   alpha=alpha, n_boot=n_boot, seed=seed)


def decide_family(results: dict[str, PairedDifference], alpha: float | None = None) -> dict[str, PairedDifference]:
    """Holm over one family (the methods compared with the same target on the same benchmark): sets
    each result's ``p_holm`` and ``verdict`` in place and returns ``results``. Results without a
    combined p (no questions) stay outside the family and "not separable"."""
    names = list(results)
    if not names:
        return results
    a = alpha if alpha is not None else results[names[0]].alpha
    adjusted = holm([results[n].p_combined for n in names], alpha=a)
    for n, p in zip(names, adjusted):
        r = results[n]
        r.p_holm = p
        r.verdict = verdict(r.delta, r.ci95, p, alpha=a, higher_is_better=r.higher_is_better)
    return results
