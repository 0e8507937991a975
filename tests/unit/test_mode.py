"""MoDE: LoraHub composition is key-by-key; the gradient-free search recovers a known mixture."""

import numpy as np
import pytest
import torch

from cotdistill.methods.mode import compose_lora_states, search_mixing_weights


def _experts(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"l.lora_A.weight": torch.randn(2, 4, generator=g), "l.lora_B.weight": torch.randn(4, 2, generator=g)}
            for _ in range(n)]


def test_compose_is_key_by_key_not_product():
    ex = _experts(2)
    w = [0.5, 2.0]
    out = compose_lora_states(ex, w)
    a = 0.5 * ex[0]["l.lora_A.weight"] + 2.0 * ex[1]["l.lora_A.weight"]
    b = 0.5 * ex[0]["l.lora_B.weight"] + 2.0 * ex[1]["l.lora_B.weight"]
    assert torch.allclose(out["l.lora_A.weight"], a) and torch.allclose(out["l.lora_B.weight"], b)
    # the update (ΣwB)(ΣwA) differs from Σ w B A
    mixed = sum(wi * e["l.lora_B.weight"] @ e["l.lora_A.weight"] for wi, e in zip(w, ex))
    assert not torch.allclose(b @ a, mixed)


def test_compose_rejects_mismatched_experts():
    ex = _experts(2)
    ex[1] = {"other": torch.zeros(1)}
    with pytest.raises(ValueError, match="different adapter keys"):
        compose_lora_states(ex, [1, 1])


def test_search_recovers_known_mixture():
    ex = _experts(3, seed=1)
    w_true = np.array([1.0, -0.5, 0.25])
    target = compose_lora_states(ex, w_true)

    def loss(w):
        got = compose_lora_states(ex, w)
        return float(sum(((got[k] - target[k]) ** 2).mean() for k in target))

    w, hist = search_mixing_weights(loss, 3, budget=100, l1=0.0, bound=3.0, seed=0)
    assert len(hist) == 100
    assert np.allclose(w, w_true, atol=0.1), w
    assert min(h["objective"] for h in hist) == pytest.approx(loss(w))


def test_l1_penalty_shrinks_useless_expert():
    ex = _experts(2, seed=2)
    target = compose_lora_states(ex, [1.0, 0.0])

    def loss(w):
        got = compose_lora_states(ex, [w[0], 0.0])  # expert 1 has no effect on the loss
        return float(sum(((got[k] - target[k]) ** 2).mean() for k in target))

    w, _ = search_mixing_weights(loss, 2, budget=60, l1=0.5, seed=0)
    assert abs(w[1]) < 0.2
