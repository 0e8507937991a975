"""Hand computations for the shared loss blocks (METHODS.md §0.3–§0.5)."""

import math

import torch

from cotdistill.methods.losses import (
    answer_log_probs,
    divergence,
    pairwise_divergence,
    sequence_ce,
    token_nll,
)


def test_sequence_ce_matches_hand_computation():
    # vocab 3, one sequence of 3 tokens; labels mask the first token (prompt)
    logits = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [0.0, 0.0, 5.0]]])
    labels = torch.tensor([[-100, 2, 0]])
    # position 0 predicts token 2 under uniform -> log 3; position 1 predicts token 0 under [1,2,3]
    nll1 = math.log(3)
    nll2 = -(1.0 - math.log(math.exp(1) + math.exp(2) + math.exp(3)))
    got = sequence_ce(logits, labels)
    assert torch.allclose(got, torch.tensor([(nll1 + nll2) / 2]), atol=1e-6)
    nll, mask = token_nll(logits, labels)
    assert mask.tolist() == [[True, True]]


def test_sequence_ce_empty_sequence_is_zero():
    logits = torch.randn(2, 4, 5)
    labels = torch.full((2, 4), -100)
    labels[1, 2] = 1
    ce = sequence_ce(logits, labels)
    assert ce[0] == 0 and ce[1] > 0


def test_answer_log_probs_reads_previous_position():
    logits = torch.zeros(1, 4, 2)
    logits[0, 1] = torch.tensor([2.0, 0.0])  # predicts position 2
    mask = torch.tensor([[False, False, True, False]])
    logp, span = answer_log_probs(logits, mask)
    assert span.tolist() == [[True]]
    expected = torch.log_softmax(torch.tensor([2.0, 0.0]), -1)
    assert torch.allclose(logp[0, 0], expected)
    logp_t, _ = answer_log_probs(logits, mask, temperature=2.0)
    assert torch.allclose(logp_t[0, 0], torch.log_softmax(torch.tensor([1.0, 0.0]), -1))


def test_divergences_hand_values():
    p = torch.tensor([[0.5, 0.5]])
    q = torch.tensor([[0.9, 0.1]])
    lp, lq = p.log(), q.log()
    kl_pq = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    kl_qp = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    m = [0.7, 0.3]
    js = 0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)) + 0.5 * (
        0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3)
    )
    assert math.isclose(divergence(lp, lq, "kl").item(), kl_pq, rel_tol=1e-5)
    assert math.isclose(divergence(lp, lq, "sym_kl").item(), kl_pq + kl_qp, rel_tol=1e-5)
    assert math.isclose(divergence(lp, lq, "js").item(), js, rel_tol=1e-5)
    assert divergence(lp, lq, "js").item() <= math.log(2)


def test_divergence_zero_prob_no_nan_and_mask():
    lp = torch.log(torch.tensor([[[1.0, 0.0], [0.5, 0.5]]]))  # [1, M=2, V=2] with a hard zero
    lq = torch.log(torch.tensor([[[0.5, 0.5], [0.5, 0.5]]]))
    d = divergence(lp, lq, "kl", mask=torch.tensor([[True, False]]))
    assert torch.isfinite(d).all()
    assert math.isclose(d.item(), math.log(2), rel_tol=1e-5)
    assert math.isclose(divergence(lp, lq, "js").item(), divergence(lq, lp, "js").item(), rel_tol=1e-6)


def test_pairwise_divergence_matrix():
    logp = torch.log_softmax(torch.randn(3, 2, 5), -1)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    d = pairwise_divergence(logp, mask, "js")
    assert d.shape == (3, 3)
    assert torch.allclose(d, d.T, atol=1e-6)
    assert torch.allclose(torch.diagonal(d), torch.zeros(3), atol=1e-6)
    # pair (0,1) only averages over the first token
    expect = divergence(logp[0, :1], logp[1, :1], "js", None)
    assert torch.allclose(d[0, 1], expect, atol=1e-6)


def test_topk_restriction_is_a_divergence():
    logp = torch.log_softmax(torch.randn(4, 10), -1)
    assert torch.allclose(divergence(logp, logp, "js", topk=3), torch.zeros(4), atol=1e-6)
