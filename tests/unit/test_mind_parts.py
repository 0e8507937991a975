"""MIND building blocks against hand computations: MetaNet masking, L_meta, selection, pair weights."""

import math

import torch

from cotdistill.methods.mind.calibration import LossEMA, calibration_loss
from cotdistill.methods.mind.metanet import MetaNet
from cotdistill.methods.mind.method import _pair_weights, batch_layout
from cotdistill.methods.mind.selection import select_and_weight, uniform_weights


def _net(**kw):
    torch.manual_seed(0)
    args = dict(enc_dim=16, d_model=32, n_attn_heads=4, n_score_heads=3, n_paths=4, dropout=0.0)
    args.update(kw)
    return MetaNet(**args).eval()


# ------------------------------------------------------------------ MetaNet


def test_metanet_shapes_and_heads_mean():
    net = _net()
    emb = torch.randn(2, 4, 16)
    s, S = net(emb, torch.ones(2, 4, dtype=torch.bool))
    assert s.shape == (2, 4) and S.shape == (2, 4, 3)
    assert torch.allclose(s, S.mean(-1))


def test_padded_path_changes_nothing_for_the_others():
    net = _net()
    emb = torch.randn(1, 4, 16)
    valid = torch.tensor([[True, True, True, False]])
    s1, _ = net(emb, valid)
    emb2 = emb.clone()
    emb2[0, 3] = 100 * torch.randn(16)  # garbage in the padded slot
    s2, _ = net(emb2, valid)
    assert torch.allclose(s1[0, :3], s2[0, :3], atol=1e-5)
    # the same three paths without any padding slot score the same
    s3, _ = net(emb[:, :3], valid[:, :3])
    assert torch.allclose(s1[0, :3], s3[0], atol=1e-5)
    # and the padded path gets zero weight
    _, alpha, _ = select_and_weight(s1, valid, beta=0.0, tau=0.5)
    assert alpha[0, 3] == 0 and math.isclose(float(alpha.sum()), 1.0, rel_tol=1e-6)


def test_metanet_all_but_one_and_fully_masked_rows_do_not_nan():
    net = _net()
    net.train()  # the slow path of MHA, where masked softmax rows would NaN
    emb = torch.randn(3, 4, 16)
    valid = torch.tensor([[True, False, False, False], [False] * 4, [True] * 4])
    s, S = net(emb, valid)
    assert torch.isfinite(S).all()
    loss = calibration_loss(s, torch.rand(3, 4), valid)
    assert torch.isfinite(loss).all() and loss[0] == 0 and loss[1] == 0
    loss.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_metanet_without_attention_scores_each_path_alone():
    net = _net(use_self_attention=False, perspective_embedding=False)
    emb = torch.randn(1, 3, 16)
    s, _ = net(emb, torch.ones(1, 3, dtype=torch.bool))
    s_alone, _ = net(emb[:, 1:2], torch.ones(1, 1, dtype=torch.bool))
    assert torch.allclose(s[0, 1], s_alone[0, 0], atol=1e-6)
    # with attention, path 1's score depends on the others
    net2 = _net(perspective_embedding=False)
    a, _ = net2(emb, torch.ones(1, 3, dtype=torch.bool))
    b, _ = net2(emb[:, 1:2], torch.ones(1, 1, dtype=torch.bool))
    assert not torch.allclose(a[0, 1], b[0, 0], atol=1e-4)


def test_perspective_embedding_by_slot_equals_positional_in_order():
    net = _net()
    emb = torch.randn(1, 4, 16)
    valid = torch.ones(1, 4, dtype=torch.bool)
    s_pos, _ = net(emb, valid)
    s_slot, _ = net(emb, valid, torch.arange(4)[None])
    assert torch.allclose(s_pos, s_slot)


def test_softplus_scores_are_positive():
    net = _net(score_activation="softplus")
    s, _ = net(torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool))
    assert (s > 0).all()


# ------------------------------------------------------------------ L_meta


def test_calibration_kl_hand_computation():
    s = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    L = torch.tensor([[0.5, 1.0, 2.0, float("nan")]])
    valid = torch.tensor([[True, True, True, False]])
    tau = 2.0
    p = [math.exp(x / tau) for x in (1.0, 0.0, 2.0)]
    p = [x / sum(p) for x in p]
    q = [math.exp(-x / tau) for x in (0.5, 1.0, 2.0)]
    q = [x / sum(q) for x in q]
    kl_pq = sum(a * math.log(a / b) for a, b in zip(p, q))
    kl_qp = sum(b * math.log(b / a) for a, b in zip(p, q))
    got = calibration_loss(s, L, valid, tau=tau)
    assert math.isclose(float(got[0]), kl_pq, rel_tol=1e-5)
    got2 = calibration_loss(s, L, valid, tau=tau, direction="target_to_pred")
    assert math.isclose(float(got2[0]), kl_qp, rel_tol=1e-5)


def test_calibration_detaches_real_loss_and_is_zero_when_matched():
    L = torch.tensor([[0.3, 1.2, 0.7]], requires_grad=True)
    s = (-L.detach()).clone().requires_grad_(True)
    loss = calibration_loss(s, L, torch.ones(1, 3, dtype=torch.bool))
    assert float(loss.detach()) < 1e-7
    (loss.sum() + (s * 0).sum()).backward()
    assert L.grad is None


def test_loss_ema_starts_from_l0_and_fills_nan():
    ema = LossEMA(torch.tensor([[1.0, float("nan")]]), decay=0.9)
    out = ema.update(torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([2.0, 3.0]))
    assert torch.allclose(out, torch.tensor([0.9 * 1 + 0.1 * 2, 3.0]))


# ------------------------------------------------------------------ selection


def test_prob_selection_matches_threshold_and_softmax():
    s = torch.tensor([[2.0, 1.9, 1.0, -3.0]])
    valid = torch.ones(1, 4, dtype=torch.bool)
    kept, alpha, fb = select_and_weight(s, valid, beta=0.5, tau=0.5)
    # keep k iff s_k >= max s + tau ln beta = 2 - 0.3466
    assert kept.tolist() == [[True, True, False, False]]
    e = [math.exp(2.0 / 0.5), math.exp(1.9 / 0.5)]
    assert torch.allclose(alpha, torch.tensor([[e[0] / sum(e), e[1] / sum(e), 0, 0]]), atol=1e-6)
    assert not fb.any()


def test_selection_negative_scores_prob_keeps_argmax_score_rule_falls_back():
    s = torch.tensor([[-2.0, -1.0, -5.0]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    kept, alpha, fb = select_and_weight(s, valid, beta=0.5, tau=0.5, select_on="prob")
    assert kept.tolist() == [[False, True, False]] and alpha[0, 1] == 1.0 and not fb.any()
    # literal rule: beta*max = -0.5 > every score -> nothing passes; the argmax is kept and reported
    kept, alpha, fb = select_and_weight(s, valid, beta=0.5, tau=0.5, select_on="score")
    assert kept.tolist() == [[False, True, False]] and fb.tolist() == [True]
    # literal rule on positive scores: s_k >= beta * max
    kept, _, fb = select_and_weight(torch.tensor([[4.0, 2.0, 1.9]]), valid, beta=0.5, select_on="score")
    assert kept.tolist() == [[True, True, False]] and not fb.any()


def test_selection_ties_single_path_all_equal_and_invalid():
    valid = torch.ones(1, 3, dtype=torch.bool)
    kept, alpha, _ = select_and_weight(torch.tensor([[1.0, 1.0, 0.0]]), valid, beta=1.0, tau=0.5)
    assert kept.tolist() == [[True, True, False]] and torch.allclose(alpha, torch.tensor([[0.5, 0.5, 0.0]]))
    kept, alpha, _ = select_and_weight(torch.tensor([[7.0]]), torch.ones(1, 1, dtype=torch.bool))
    assert kept.tolist() == [[True]] and alpha.tolist() == [[1.0]]
    kept, alpha, _ = select_and_weight(torch.full((1, 4), 0.3), torch.ones(1, 4, dtype=torch.bool), beta=0.9)
    assert kept.all() and torch.allclose(alpha, torch.full((1, 4), 0.25))
    # an invalid path never gets selected even with the best score
    kept, alpha, _ = select_and_weight(torch.tensor([[0.0, 9.0]]), torch.tensor([[True, False]]))
    assert kept.tolist() == [[True, False]] and alpha.tolist() == [[1.0, 0.0]]


def test_uniform_weights():
    kept, alpha = uniform_weights(torch.tensor([[True, True, False, True]]))
    assert kept.tolist() == [[True, True, False, True]]
    assert torch.allclose(alpha, torch.tensor([[1 / 3, 1 / 3, 0, 1 / 3]]))


def test_pair_weights_upper_triangle_and_truncated_answers_leave():
    alpha = torch.tensor([0.5, 0.3, 0.2])
    w = _pair_weights(alpha, torch.tensor([True, False, True]))
    expect = torch.zeros(3, 3)
    expect[0, 2] = 0.5 * 0.2
    assert torch.allclose(w, expect)


def test_batch_layout_padding_slots():
    batch = {
        "question_index": torch.tensor([0, 0, 0, 1, 1, 1]),
        "path_valid": torch.tensor([True, True, True, True, False, False]),
        "question_row": torch.tensor([5, 2]),
    }
    pos, valid = batch_layout(batch)
    assert pos.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert valid.tolist() == [[True, True, True], [True, False, False]]


def test_warmup_style_fit_recovers_loss_ranking(direction="pred_to_target"):
    """MetaNet trained on L_meta alone learns to rank paths by (negative) loss on fixed inputs."""
    torch.manual_seed(1)
    net = _net()
    net.train()
    emb = torch.randn(6, 4, 16)
    L = torch.rand(6, 4) * 3
    valid = torch.ones(6, 4, dtype=torch.bool)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    first = None
    for _ in range(40):
        loss = calibration_loss(net(emb, valid)[0], L, valid, direction=direction).mean()
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.2 * first
