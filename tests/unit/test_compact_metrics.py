"""COMPACT metrics (METHODS.md §3.3) against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cotdistill.errors import CotdistillError
from cotdistill.methods.compact.metrics import (
    assert_right_padded,
    gathered,
    gold_token_ids,
    graph_consensus,
    last_token_states,
    mi_adaptability,
    think_token_ids,
    widen_keys,
)

# two paths, T = 4, H = 2; gold rows E[g1] = [1, 0], E[g2] = [1, 2]
H = torch.tensor(
    [
        [[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [1.0, 1.0]],  # I = [1, 1, 3, 2] -> ReLU(ΔI) = [0, 0, 2, 0]
        [[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 2.0]],  # I = [0, 1, 0, 2] -> ReLU(ΔI) = [0, 1, 0, 2]
    ]
)
GOLD_EMB = torch.tensor([[1.0, 0.0], [1.0, 2.0]])
IDS = torch.tensor([[5, 7, 9, 7], [9, 9, 5, 5]])


def test_mi_logit_with_think_mask():
    s = mi_adaptability(H, IDS, torch.tensor([0, 1]), gold_emb=GOLD_EMB, think_ids=torch.tensor([9]))
    # path 0: jump 2 at t=2 (token 9, think) -> 2.0; path 1: jump 1 at t=1 (9, think) + 2 at t=3 (5) * 0.1
    assert s.tolist() == pytest.approx([2.0, 1.2])
    s = mi_adaptability(H, IDS, torch.tensor([0, 1]), gold_emb=GOLD_EMB, think_ids=torch.tensor([7]))
    assert s.tolist() == pytest.approx([0.2, 0.3])
    s = mi_adaptability(
        H, IDS, torch.tensor([0, 1]), gold_emb=GOLD_EMB, think_ids=torch.tensor([9]),
        think_weight=2.0, non_think_weight=0.5,
    )
    assert s.tolist() == pytest.approx([4.0, 3.0])
    assert not s.requires_grad


def test_mi_scope_and_length_norm():
    scope = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]], dtype=torch.bool)
    s = mi_adaptability(H, IDS, torch.tensor([0, 1]), gold_emb=GOLD_EMB, think_ids=torch.tensor([9]), scope_mask=scope)
    assert s.tolist() == pytest.approx([2.0, 0.2])
    s = mi_adaptability(
        H, IDS, torch.tensor([0, 1]), gold_emb=GOLD_EMB, think_ids=torch.tensor([9]), scope_mask=scope,
        length_norm=True, completion_len=torch.tensor([2, 4]),
    )
    assert s.tolist() == pytest.approx([1.0, 0.05])


def test_mi_logprob_variant():
    logits = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 3.0]]])
    gold = [1, 2]

    def info(row):
        lse = math.log(sum(math.exp(x) for x in row))
        return sum(row[g] - lse for g in gold) / len(gold)

    inf = [info(r) for r in logits[0].tolist()]
    want = sum(max(0.0, inf[t] - inf[t - 1]) * 0.1 for t in range(1, 3))
    s = mi_adaptability(
        torch.zeros(1, 3, 2), torch.tensor([[1, 2, 3]]), torch.tensor(gold), logits=logits, variant="logprob",
        think_ids=torch.tensor([], dtype=torch.long), chunk=2,
    )
    assert s.item() == pytest.approx(want, rel=1e-5)


def test_widen_keys_modes():
    k = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # 2 kv heads of dim 2
    assert widen_keys(k, 4, 2, "feature").tolist() == [[1, 1, 2, 2, 3, 3, 4, 4]]
    assert widen_keys(k, 4, 2, "head").tolist() == [[1, 2, 1, 2, 3, 4, 3, 4]]
    assert widen_keys(k, 2, 2, "feature").tolist() == k.tolist()


def _linear(w, b):
    lin = nn.Linear(len(w[0]), len(w))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w))
        lin.bias.copy_(torch.tensor(b))
    return lin


def _hand_consensus(v, wq, bq, wk, bk, mode):
    q = [[sum(wq[o][i] * x[i] for i in range(len(x))) + bq[o] for o in range(len(wq))] for x in v]
    k = [[sum(wk[o][i] * x[i] for i in range(len(x))) + bk[o] for o in range(len(wk))] for x in v]
    if mode == "feature":  # n_heads=2, n_kv=1, head_dim=2: [a, b] -> [a, a, b, b]
        k = [[r[0], r[0], r[1], r[1]] for r in k]
    else:  # whole head repeated: [a, b] -> [a, b, a, b]
        k = [r + r for r in k]
    n = len(v)
    a = []
    for i in range(n):
        lg = [sum(q[i][d] * k[j][d] for d in range(4)) / math.sqrt(4) for j in range(n)]
        z = sum(math.exp(x) for x in lg)
        a.append([0.0 if i == j else math.exp(lg[j]) / z for j in range(n)])
    return [sum(a[i][j] for i in range(n)) for j in range(n)]


@pytest.mark.parametrize("mode", ["feature", "head"])
def test_graph_consensus_gqa_hand(mode):
    v = [[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 1.0, -1.0], [1.0, 1.0, 0.0, 0.0]]
    wq = [[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 1.0]]
    bq = [0.1, 0.0, -0.1, 0.2]
    wk = [[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]]
    bk = [0.0, 0.3]
    s, a = graph_consensus(
        torch.tensor(v), _linear(wq, bq), _linear(wk, bk), n_heads=2, n_kv_heads=1, gqa_repeat=mode
    )
    assert s.tolist() == pytest.approx(_hand_consensus(v, wq, bq, wk, bk, mode), rel=1e-5)
    assert torch.diagonal(a).abs().max() == 0  # diagonal zeroed after the softmax
    assert a.sum(1).max() < 1  # rows are not renormalised


def test_graph_consensus_modes_differ_and_uniform_case():
    v = torch.tensor([[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 1.0, -1.0], [1.0, 1.0, 0.0, 0.0]])
    wq = _linear([[1.0, 0.0, 0.0, 0.5], [0.0, 1.0, 0.0, 0.0], [0.5, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 1.0]], [0.0] * 4)
    wk = _linear([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], [0.0, 0.0])
    sf, _ = graph_consensus(v, wq, wk, n_heads=2, n_kv_heads=1, gqa_repeat="feature")
    sh, _ = graph_consensus(v, wq, wk, n_heads=2, n_kv_heads=1, gqa_repeat="head")
    assert not torch.allclose(sf, sh)
    zero_q = _linear([[0.0] * 4] * 4, [0.0] * 4)  # q = 0 -> uniform rows 1/3 -> in-degree 2/3
    s, _ = graph_consensus(v, zero_q, wk, n_heads=2, n_kv_heads=1)
    assert s.tolist() == pytest.approx([2 / 3] * 3)


def test_last_token_states_and_right_padding():
    h = torch.arange(2 * 4 * 1, dtype=torch.float32).view(2, 4, 1)
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    assert last_token_states(h, m).view(-1).tolist() == [2.0, 7.0]
    with pytest.raises(CotdistillError, match="padding_side"):
        assert_right_padded(torch.tensor([[0, 1, 1]]))


def test_think_and_gold_ids(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = think_token_ids(tok, ["So", "Let", "In summary"])
    want = set()
    for w in ("So", " So", "Let", " Let", "In summary", " In summary"):
        t = tok(w, add_special_tokens=False)["input_ids"]
        if len(t) == 1:
            want.add(t[0])
    assert ids == sorted(want) and ids
    assert len(tok(" In summary", add_special_tokens=False)["input_ids"]) > 1  # multi-token form dropped
    assert gold_token_ids(tok, "15") == tok("15", add_special_tokens=False)["input_ids"]
    assert gold_token_ids(tok, 15, leading_space=True) == tok(" 15", add_special_tokens=False)["input_ids"]


def test_gathered_plain_and_refusals():
    w = nn.Parameter(torch.ones(2, 2))
    with gathered([w]):
        assert w.sum() == 4
    fake = nn.Parameter(torch.empty(0))  # a ZeRO-3 partitioned parameter looks like this
    fake.ds_id = 3
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(CotdistillError, match="zero2"):
            with gathered([fake]):
                pass
    other = nn.Parameter(torch.empty(0))  # sharded by an engine we cannot gather
    with pytest.raises(CotdistillError, match="ddp"):
        with gathered([other]):
            pass
