"""Std-CoT, SbS and MCC-KD losses against hand computations; chunked gradients equal full ones; registry."""

from __future__ import annotations

import math

import pytest
import torch

from cotdistill.config import Config
from cotdistill.errors import CotdistillError
from cotdistill.methods.mcc_kd import MccKdMethod, pair_loss
from cotdistill.methods.registry import get_method
from cotdistill.methods.sbs import SbsMethod
from cotdistill.methods.std_cot import StdCotMethod
from cotdistill.pathset.collate import PathCollator, build_label_vocab

from test_collate import INSTR, _row  # noqa: E402  (same folder, on sys.path under pytest)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model.eval()  # no dropout: losses are deterministic
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _hand_ce(model, ids, attn, labels):
    """Token-mean NLL of the labelled tokens, written out one position at a time."""
    n = int(attn.sum())
    logits = model(input_ids=ids[None, :n], attention_mask=attn[None, :n]).logits[0]
    total, count = 0.0, 0
    for t in range(1, n):
        if labels[t] != -100:
            total += -torch.log_softmax(logits[t - 1].double(), -1)[labels[t]].item()
            count += 1
    return total / count


def _batch(tok, rows, **kw):
    return PathCollator(tok, max_seq_len=256, student_instruction=INSTR, label_vocab=build_label_vocab(rows), **kw)(rows)


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_std_cot_loss_matches_hand_ce(tiny):
    model, tok = tiny
    b = _batch(tok, [_row(0), _row(1, k=2, gold="7")])
    method = StdCotMethod(Config())
    loss, logs = method.compute_loss(model, b)
    valid = b["path_valid"].nonzero().flatten().tolist()
    hand = sum(_hand_ce(model, b["input_ids"][i], b["attention_mask"][i], b["labels"][i]) for i in valid) / len(valid)
    assert loss.item() == pytest.approx(hand, rel=1e-5)
    assert logs["ce"] == pytest.approx(hand, rel=1e-5)


def test_std_cot_chunked_gradient_is_exact(tiny):
    model, tok = tiny
    b = _batch(tok, [_row(0)])
    cfg = Config.model_validate({"train": {"paths_micro_batch": 1}})
    model.zero_grad()
    loss, _ = StdCotMethod(Config()).compute_loss(model, b)
    loss.backward()
    full = _grads(model).clone()
    model.zero_grad()
    calls = []
    chunked_loss, _ = StdCotMethod(cfg).training_step(model, b, lambda x: (calls.append(1), x.backward()))
    assert len(calls) == 3 and chunked_loss.item() == pytest.approx(loss.item(), rel=1e-5)
    assert torch.allclose(_grads(model), full, atol=1e-6)
    model.zero_grad()


def test_std_cot_standard_path_selection():
    row = _row()
    row["paths"].append({"teacher": "t", "perspective": "standard", "label": "standard", "text": "x", "record_key": "s"})
    m = get_method("std_cot", Config.model_validate({"std_cot": {"paths": "standard"}}))
    assert [p["perspective"] for p in m.select_paths(row)] == ["standard"]
    assert m.select_paths(_row()) == []  # no standard path: the question is dropped
    assert get_method("std_cot", Config()).select_paths(row) == m.select_paths(row)  # the default (issue 13)
    all_paths = get_method("std_cot", Config.model_validate({"std_cot": {"paths": "all"}}))
    assert len(all_paths.select_paths(row)) == 4


def test_sbs_loss_is_weighted_sum_of_views(tiny):
    model, tok = tiny
    cfg = Config.model_validate({"method": "sbs", "sbs": {"alpha": 0.3}})
    method = SbsMethod(cfg)
    rows = [_row(0), _row(1, k=2, gold="7")]
    b = _batch(tok, rows, **method.collator_kwargs())
    loss, logs = method.compute_loss(model, b)
    lab = [_hand_ce(model, b["label_input_ids"][q], b["label_attention_mask"][q], b["label_labels"][q]) for q in (0, 1)]
    valid = b["path_valid"].nonzero().flatten().tolist()
    rat = [_hand_ce(model, b["input_ids"][i], b["attention_mask"][i], b["labels"][i]) for i in valid]
    hand = 0.3 * sum(lab) / 2 + 0.7 * sum(rat) / len(rat)
    assert loss.item() == pytest.approx(hand, rel=1e-5)
    assert logs["ce_label"] == pytest.approx(sum(lab) / 2, rel=1e-5)
    model.zero_grad()
    loss.backward()
    full = _grads(model).clone()
    model.zero_grad()
    step_loss, _ = SbsMethod(Config.model_validate({"sbs": {"alpha": 0.3}, "train": {"paths_micro_batch": 2}})
                             ).training_step(model, b, lambda x: x.backward())
    assert step_loss.item() == pytest.approx(hand, rel=1e-5)
    assert torch.allclose(_grads(model), full, atol=1e-6)
    model.zero_grad()


def test_mcc_pair_loss_hand_computation():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 3)
    labels = torch.tensor([[-100, 1, 2, 0, 1], [-100, -100, 2, 1, 1], [-100, 0, 0, 2, 2], [-100, 1, 1, 1, 0]])
    amask = torch.zeros(4, 5, dtype=torch.bool)
    amask[:, 3:5] = True  # answer tokens at positions 3, 4 -> distributions read at 2, 3
    valid = torch.tensor([True, True, True, False])
    alpha, temp = 0.1, 2.0
    loss, ce, kl = pair_loss(logits, labels, amask, valid, alpha, temp)

    def ce_of(i):
        terms = [-torch.log_softmax(logits[i, t - 1], -1)[labels[i, t]].item() for t in range(1, 5) if labels[i, t] >= 0]
        return sum(terms) / len(terms)

    def kl_pq(p, q):
        return sum(p[v] * (math.log(p[v]) - math.log(q[v])) for v in range(3))

    def sym(a, b):
        tot = 0.0
        for pos in (2, 3):
            p = torch.softmax(logits[a, pos] / temp, -1).tolist()
            q = torch.softmax(logits[b, pos] / temp, -1).tolist()
            tot += kl_pq(p, q) + kl_pq(q, p)
        return 0.5 * tot / 2

    assert ce[0].item() == pytest.approx((ce_of(0) + ce_of(1)) / 2, rel=1e-5)
    assert kl[0].item() == pytest.approx(sym(0, 1), rel=1e-5)
    assert loss[0].item() == pytest.approx((ce_of(0) + ce_of(1)) / 2 + alpha * sym(0, 1), rel=1e-5)
    assert kl[1].item() == 0.0  # a truncated span in pair (2, 3): KL skipped, CE kept
    assert loss[1].item() == pytest.approx((ce_of(2) + ce_of(3)) / 2, rel=1e-5)


def test_mcc_pairs_disjoint_seeded_per_epoch():
    from cotdistill.train.trainer import TrainProgress

    m = MccKdMethod(Config.model_validate({"mcc_kd": {"pairs_per_question": 4}}))
    rows = []
    for q in range(2):
        r = _row(q)
        r["paths"] = (r["paths"] * 3)[:5]
        for j, p in enumerate(r["paths"]):
            r["paths"][j] = dict(p, label="decomposition")
        rows.append(r)
    b = PathCollator(build_tiny_tokenizer_cached(), max_seq_len=256, student_instruction="",
                     label_vocab=["decomposition"])(rows)
    m.progress = TrainProgress(0, 0.0, 10, 5)
    p0 = m.make_pairs(b)
    assert p0.shape == (4, 2)  # 5 paths -> 2 disjoint pairs per question
    for q, pairs in ((0, p0[:2]), (1, p0[2:])):
        flat = pairs.flatten().tolist()
        assert len(set(flat)) == 4 and all(b["question_index"][i] == q for i in flat)
    assert torch.equal(p0, m.make_pairs(b))  # same epoch -> same pairs
    seen = {tuple(map(tuple, m.make_pairs(b).tolist()))}
    for e in range(1, 6):
        m.progress = TrainProgress(0, float(e), 10, 5)
        seen.add(tuple(map(tuple, m.make_pairs(b).tolist())))
    assert len(seen) > 1  # reshuffled across epochs


def build_tiny_tokenizer_cached():
    from cotdistill.utils.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


def test_mcc_method_loss_and_chunked_gradient(tiny):
    model, tok = tiny
    cfg = Config.model_validate({"method": "mcc_kd", "mcc_kd": {"alpha": 0.5}, "train": {"paths_micro_batch": 2}})
    method = MccKdMethod(cfg)
    row = _row(3)
    row["paths"].append(dict(row["paths"][0], text="So 15."))
    b = PathCollator(tok, max_seq_len=256, student_instruction=INSTR, label_vocab=build_label_vocab([row]))([row])
    pairs = method.make_pairs(b)
    assert pairs.shape == (2, 2)
    loss, logs = method.compute_loss(model, b)
    rows = pairs.flatten()
    pl, _, _ = pair_loss(model(input_ids=b["input_ids"][rows], attention_mask=b["attention_mask"][rows]).logits,
                         b["labels"][rows], b["answer_mask"][rows], b["answer_valid"][rows], 0.5, 1.0)
    assert loss.item() == pytest.approx(pl.mean().item(), rel=1e-5) and logs["kl"] > 0
    model.zero_grad()
    loss.backward()
    full = _grads(model).clone()
    model.zero_grad()
    calls = []
    method.training_step(model, b, lambda x: (calls.append(1), x.backward()))
    assert len(calls) == 2 and torch.allclose(_grads(model), full, atol=1e-6)
    model.zero_grad()


def test_mcc_diversity_filter_keeps_dissimilar():
    cfg = Config.model_validate({"mcc_kd": {"max_rationales": 2, "diversity_filter": True, "diversity_ngram": 1}})
    row = _row()
    row["paths"] = [dict(row["paths"][0], text=t) for t in ["a b c d", "a b c e", "x y z w"]]
    assert [p["text"] for p in MccKdMethod(cfg).select_paths(row)] == ["a b c d", "x y z w"]


def test_registry():
    cfg = Config()
    for name, cls in (("std_cot", StdCotMethod), ("sbs", SbsMethod), ("mcc_kd", MccKdMethod)):
        assert isinstance(get_method(name, cfg), cls)
    with pytest.raises(CotdistillError, match="not available"):
        get_method("no_such_method", cfg)
