"""EDIT: the edit alignment marks exactly the differing spans; KRSL matches a hand computation."""

import math

import torch

from cotdistill.methods.edit import key_token_masks, krsl_loss, krsl_token_weights, weighted_sequence_loss


def test_alignment_marks_replaced_span_on_both_sides():
    chosen = [1, 2, 3, 4, 5, 6]
    rejected = [1, 2, 9, 9, 5, 6]
    c, r = key_token_masks(chosen, rejected)
    assert c == [False, False, True, True, False, False]
    assert r == [False, False, True, True, False, False]


def test_alignment_deletion_and_insertion():
    chosen = [1, 2, 3, 7, 8, 4]  # chosen has an extra step "7 8"
    rejected = [1, 2, 3, 4]
    c, r = key_token_masks(chosen, rejected)
    assert c == [False, False, False, True, True, False]
    assert r == [False, False, False, False]  # nothing of rejected differs: inserts are dropped


def test_alignment_identical_and_disjoint():
    assert key_token_masks([1, 2], [1, 2]) == ([False, False], [False, False])
    c, r = key_token_masks([1, 2], [3, 4, 5])
    assert all(c) and sum(r) >= 2


def test_krsl_weights():
    key = torch.tensor([[False, True, True, False]])
    labels = torch.tensor([[-100, 5, 6, 7]])
    w = krsl_token_weights(key, labels, 1.0, 0.0)
    assert w.tolist() == [[0.0, 1.0, 1.0, 0.0]]
    w = krsl_token_weights(key, labels, -0.025, 0.0)
    assert torch.allclose(w, torch.tensor([[0.0, -0.025, -0.025, 0.0]]))


def test_weighted_sequence_loss_hand_value():
    # V = 2, T = 3; uniform logits: every CE = log 2
    logits = torch.zeros(1, 3, 2)
    labels = torch.tensor([[-100, 1, 0]])
    weights = torch.tensor([[0.0, 1.0, 0.0]])  # only token 1 counts, divided by n_valid = 2
    got = weighted_sequence_loss(logits, labels, weights)
    assert math.isclose(got.item(), math.log(2) / 2, rel_tol=1e-6)


def test_krsl_loss_and_threshold():
    v = 3
    chosen_logits = torch.zeros(1, 3, v)
    chosen_labels = torch.tensor([[-100, 1, 2]])
    wc = torch.tensor([[0.0, 1.0, 1.0]])
    rej_logits = torch.zeros(1, 3, v)
    rej_logits[0, 1] = torch.tensor([30.0, 0.0, 0.0])  # token 2 at position 2 has NLL ≈ 30 ≥ 20 → clipped
    rej_labels = torch.tensor([[-100, 1, 2]])
    wr = torch.tensor([[0.0, -0.025, -0.025]])
    loss, logs = krsl_loss(chosen_logits, chosen_labels, wc, rej_logits, rej_labels, wr, nll_threshold=20.0)
    lc = (math.log(3) + math.log(3)) / 2
    lr = (-0.025 * math.log(3)) / 2  # only the first rejected token keeps its weight
    assert math.isclose(logs["loss_chosen"], lc, rel_tol=1e-5)
    assert math.isclose(logs["loss_rejected"], lr, rel_tol=1e-5)
    assert math.isclose(loss.item(), lc + lr, rel_tol=1e-5)
    assert logs["rejected_clipped_frac"] == 0.5


def test_krsl_gradient_pushes_rejected_key_token_down():
    logits = torch.zeros(1, 2, 3, requires_grad=True)
    labels = torch.tensor([[-100, 1]])
    w = torch.tensor([[0.0, -1.0]])
    loss = weighted_sequence_loss(logits, labels, w)
    loss.backward()
    # minimising -CE raises CE: gradient descent lowers the logit of token 1
    assert logits.grad[0, 0, 1] > 0
