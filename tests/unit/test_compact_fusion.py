"""COMPACT fusion (METHODS.md §3.4) and the two MCC modes (§3.5) against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from cotdistill.config import Config
from cotdistill.errors import CotdistillError
from cotdistill.methods.compact import CompactMethod
from cotdistill.methods.compact.fusion import fixed_weights, fuse, zscore
from cotdistill.methods.compact.method import position_aligned_symkl

EPS = 1e-4


def _softmax(xs):
    z = sum(math.exp(x) for x in xs)
    return [math.exp(x) / z for x in xs]


def test_zscore_unbiased_and_k1():
    assert zscore(torch.tensor([1.0, 2.0, 3.0]), EPS).tolist() == pytest.approx([-1 / (1 + EPS), 0.0, 1 / (1 + EPS)])
    # unbiased std of [0, 2] is sqrt(2)
    assert zscore(torch.tensor([0.0, 2.0]), EPS).tolist() == pytest.approx([-1 / (2**0.5 + EPS), 1 / (2**0.5 + EPS)])
    assert zscore(torch.tensor([5.0]), EPS).tolist() == [1.0]  # K <= 1: ones (authors' code)
    assert zscore(torch.tensor([4.0, 4.0, 4.0]), EPS).tolist() == [0.0, 0.0, 0.0]  # constant -> eps keeps it finite


def test_fuse_hand():
    f = fuse(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([7.0, 7.0, 7.0]), torch.tensor([3.0, 1.0, 2.0]))
    score = [(-1 - 0.5 * 1) / (1 + EPS), (0 + 0.5) / (1 + EPS), (1 - 0) / (1 + EPS)]
    assert f.score.tolist() == pytest.approx(score, rel=1e-5)
    assert f.alpha.tolist() == pytest.approx(_softmax(score), rel=1e-5)
    f2 = fuse(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([7.0, 7.0, 7.0]), torch.tensor([3.0, 1.0, 2.0]), temperature=2.0)
    assert f2.alpha.tolist() == pytest.approx(_softmax([s / 2 for s in score]), rel=1e-5)


def test_fuse_beta_zero_ablations():
    mi, cons, ppl = torch.tensor([1.0, 5.0, 2.0]), torch.tensor([0.3, 0.1, 0.2]), torch.tensor([1.0, 2.0, 4.0])
    only_cons = fuse(mi, cons, ppl, beta_mi=0.0, beta_consensus=1.0, beta_difficulty=0.0)
    assert only_cons.alpha.tolist() == pytest.approx(_softmax([0.1 / (0.1 + EPS), -0.1 / (0.1 + EPS), 0.0]), rel=1e-4)
    none = fuse(mi, cons, ppl, beta_mi=0.0, beta_consensus=0.0, beta_difficulty=0.0)
    assert none.alpha.tolist() == pytest.approx([1 / 3] * 3)
    k1 = fuse(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([9.0]))
    assert k1.alpha.tolist() == [1.0] and k1.z_mi.tolist() == [1.0]


def test_fixed_weights():
    assert fixed_weights("uniform", ["a", "b", "c", "d"]).tolist() == [0.25] * 4
    assert fixed_weights("best_single", ["gpt4o", "llama", "gpt4o/level3"], "gpt4o").tolist() == [0.5, 0.0, 0.5]
    assert fixed_weights("best_single", ["llama"], "gpt4o").tolist() == [0.0]
    with pytest.raises(CotdistillError, match="best_teacher"):
        CompactMethod(Config(method="compact", compact={"weighting": "best_single"}))


# ----------------------------------------------------------------------------- MCC


def _sym_kl(lp, lq):
    p, q = _softmax(lp), _softmax(lq)
    return sum(a * (math.log(a) - math.log(b)) + b * (math.log(b) - math.log(a)) for a, b in zip(p, q))


LOGITS = torch.tensor(
    [
        [[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.5, 0.5, 2.0], [0.0, 0.0, 0.0]],
        [[1.0, 0.0, 2.0], [0.0, 2.0, 0.0], [2.0, 0.5, 0.0], [1.0, 1.0, 0.0]],
        [[0.0, 0.0, 1.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0], [0.0, 3.0, 0.0]],
    ]
)
ANSWER_MASK = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)  # read at t = 1, 2


def _method(**compact):
    return CompactMethod(Config(method="compact", compact=compact))


def test_answer_span_mcc_hand():
    m = _method(mcc_mode="answer_span")
    alpha = torch.tensor([0.5, 0.3, 0.2])
    batch = {"answer_mask": ANSWER_MASK}
    L = LOGITS.tolist()

    def d(i, j):
        return sum(_sym_kl(L[i][t], L[j][t]) for t in (1, 2)) / 2

    got = m._mcc(LOGITS, batch, torch.arange(3), alpha, torch.tensor([True, True, True]))
    want = 0.5 * (d(0, 1) + d(0, 2)) / 2 + 0.3 * (d(1, 0) + d(1, 2)) / 2 + 0.2 * (d(2, 0) + d(2, 1)) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)
    # a truncated answer span leaves the term: path 2 has no partner term, the others only pair with each other
    got = m._mcc(LOGITS, batch, torch.arange(3), alpha, torch.tensor([True, True, False]))
    assert got.item() == pytest.approx(0.5 * d(0, 1) + 0.3 * d(1, 0), rel=1e-5)
    assert m._mcc(LOGITS, batch, torch.arange(3), alpha, torch.tensor([True, False, False])).item() == 0.0


def test_position_aligned_mcc_hand():
    m = _method(mcc_mode="position_aligned")
    attn = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    L = LOGITS.tolist()

    def d(i, j):
        ts = [t for t in range(4) if attn[i, t] and attn[j, t]]
        return sum(_sym_kl(L[i][t], L[j][t]) for t in ts) / len(ts)

    alpha = torch.tensor([0.5, 0.3, 0.2])
    got = m._mcc(LOGITS, {"attention_mask": attn}, torch.arange(3), alpha, torch.ones(3, dtype=torch.bool))
    want = 0.15 * d(0, 1) + 0.1 * d(0, 2) + 0.06 * d(1, 2)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # pairs below compact.mcc_min_pair_weight (1e-4) are skipped
    alpha = torch.tensor([0.9, 0.0999, 0.0001])
    got = m._mcc(LOGITS, {"attention_mask": attn}, torch.arange(3), alpha, torch.ones(3, dtype=torch.bool))
    assert got.item() == pytest.approx(0.9 * 0.0999 * d(0, 1), rel=1e-5)


def test_position_aligned_chunking_and_both_sides_get_gradients():
    li = LOGITS[0].clone().requires_grad_(True)
    lj = LOGITS[1].clone().requires_grad_(True)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0])
    whole = position_aligned_symkl(li, lj, mask, chunk=100)
    chunked = position_aligned_symkl(li, lj, mask, chunk=1)
    assert chunked.item() == pytest.approx(whole.item(), rel=1e-6)
    chunked.backward()
    assert li.grad.abs().sum() > 0 and lj.grad.abs().sum() > 0
    assert li.grad[3].abs().sum() == 0  # masked position gets nothing
