"""COMPACT on the real tiny Llama (GQA: 4 heads / 2 kv heads) wrapped in peft LoRA.

Checks the metrics against independent computations from ``output_hidden_states`` and merged LoRA
weights, that α is a constant for autograd, and a behavioural property: a teacher whose paths are
noise gets the lowest mean α once the student has trained a little.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

from cotdistill.config import Config
from cotdistill.errors import CotdistillError
from cotdistill.methods.compact import CompactMethod
from cotdistill.methods.compact.metrics import NormCapture, resolve_parts
from cotdistill.methods.losses import IGNORE_INDEX, answer_log_probs, pairwise_divergence, sequence_ce

LABELS = ["formal", "noise", "plan"]


def _rows(tok, n, seed=0):
    rng = random.Random(seed)
    words = [tok.decode([i]) for i in range(3, len(tok))]
    rows = []
    for qi in range(n):
        a = rng.randint(5, 20)
        b = rng.randint(1, a)
        c = a - b
        t1 = f"{a} - {b} = {c}. So the answer is {c}."
        t2 = f"First, take {a} and subtract {b}. Therefore we get {c}."
        noise = "".join(rng.choice(words) for _ in range(len(tok(t1)["input_ids"])))
        rows.append({
            "question_id": str(qi), "question": f"Jack had {a} apples and ate {b}. How many apples are left?",
            "gold": str(c), "_row": qi,
            "paths": [{"label": "formal", "text": t1}, {"label": "plan", "text": t2}, {"label": "noise", "text": noise}],
        })
    return rows


def _setup(tiny_model_dir, *, dropout=0.0, nonzero_lora=True, n_rows=4, **compact):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotdistill.pathset.collate import PathCollator

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(
        model,
        LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                   target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    )
    if nonzero_lora:  # make the adapters non-trivial so "LoRA included" is observable
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2)
    rows = _rows(tok, n_rows)
    method = CompactMethod(Config(method="compact", compact=compact))
    method.prepare(Dataset.from_list([{k: v for k, v in r.items() if k != "_row"} for r in rows]), tok, model)
    collator = PathCollator(tok, max_seq_len=256, student_instruction="", label_vocab=LABELS)
    return tok, model, method, collator, rows


def test_parts_resolved_through_peft(tiny_model_dir):
    _, model, method, collator, rows = _setup(tiny_model_dir)
    parts = resolve_parts(model)
    assert parts.n_heads == 4 and parts.n_kv_heads == 2
    assert hasattr(parts.q_proj, "lora_A") and hasattr(parts.k_proj, "lora_A")  # the LoRA-wrapped modules
    assert parts.norm is model.get_base_model().model.norm
    assert method.label_vocab == LABELS  # from the dataset's path labels
    batch = collator(rows[:1])
    with torch.no_grad(), NormCapture(parts.norm) as cap:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    assert torch.equal(cap.output, out.hidden_states[-1])


def _softmax(xs):
    m = max(xs)
    z = sum(math.exp(x - m) for x in xs)
    return [math.exp(x - m) / z for x in xs]


def test_metrics_match_independent_computation(tiny_model_dir):
    tok, model, method, collator, rows = _setup(tiny_model_dir)
    model.eval()
    batch = collator(rows[:1])
    with torch.no_grad():
        _, sig = method.compute_loss(model, batch)
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
    h, logits = out.hidden_states[-1], out.logits
    base = model.get_base_model()
    n = batch["input_ids"].size(0)
    labels = [LABELS[s] for s in batch["path_slot"].tolist()]

    # difficulty: token-mean NLL over completion tokens
    for k in range(n):
        nll = []
        for t in range(batch["input_ids"].size(1) - 1):
            y = int(batch["labels"][k, t + 1])
            if y != IGNORE_INDEX:
                nll.append(-torch.log_softmax(logits[k, t].double(), -1)[y].item())
        assert sig["S_ppl"][labels[k]] == pytest.approx(sum(nll) / len(nll), rel=1e-4)

    # MI adaptability: gold ids without leading space, E = lm_head weight, every real (non-padding) position
    gold = tok(rows[0]["gold"], add_special_tokens=False)["input_ids"]
    e = base.lm_head.weight.double()
    think = set(method.think_ids.tolist())
    for k in range(n):
        real = int(batch["attention_mask"][k].sum())
        info = [sum(float(h[k, t].double() @ e[g]) for g in gold) / len(gold) for t in range(real)]
        want = sum(
            max(0.0, info[t] - info[t - 1]) * (1.0 if int(batch["input_ids"][k, t]) in think else 0.1)
            for t in range(1, len(info))
        )
        assert sig["S_mi"][labels[k]] == pytest.approx(want, rel=1e-4, abs=1e-5)

    # graph consensus: merged LoRA weights W + s·BA of the last layer, feature-wise GQA widening
    attn = base.model.layers[-1].self_attn

    def merged(lin):
        lora = lin.lora_B["default"].weight @ lin.lora_A["default"].weight
        return (lin.base_layer.weight + lin.scaling["default"] * lora).detach().double()

    last = batch["attention_mask"].sum(1) - 1
    v = h[torch.arange(n), last].double()
    q = v @ merged(attn.q_proj).T
    kk = (v @ merged(attn.k_proj).T).repeat_interleave(2, dim=-1)
    in_deg = [0.0] * n
    for i in range(n):
        row = _softmax([float(q[i] @ kk[j]) / math.sqrt(q.size(1)) for j in range(n)])
        for j in range(n):
            if i != j:
                in_deg[j] += row[j]
    for k in range(n):
        assert sig["S_cons"][labels[k]] == pytest.approx(in_deg[k], rel=1e-4)
    assert sum(sig["alpha"].values()) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("mode", ["answer_span", "position_aligned"])
def test_alpha_is_detached_gradient_matches_constant_weights(tiny_model_dir, mode):
    _, model, method, collator, rows = _setup(tiny_model_dir, mcc_mode=mode, lambda_mcc=0.5)
    model.train()
    batch = collator(rows[:1])
    loss, sig = method.compute_loss(model, batch)
    loss.backward()
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    assert all("lora_" in name for name, _ in trainable)
    g1 = [p.grad.clone() for _, p in trainable]
    model.zero_grad()

    labels = [LABELS[s] for s in batch["path_slot"].tolist()]
    alpha = torch.tensor([sig["alpha"][lab] for lab in labels])  # plain constants
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ce = sequence_ce(logits, batch["labels"])
    if mode == "answer_span":
        logp, span = answer_log_probs(logits, batch["answer_mask"])
        d = pairwise_divergence(logp, span, kind="sym_kl")
        mcon = (d.sum(1) - d.diagonal()) / 2
        manual = (alpha * (ce + 0.5 * mcon)).sum()
    else:
        m = batch["attention_mask"].float()
        lp = torch.log_softmax(logits.float(), -1)
        manual = (alpha * ce).sum()
        for i in range(3):
            for j in range(i + 1, 3):
                mij = m[i] * m[j]
                sym = ((lp[i].exp() - lp[j].exp()) * (lp[i] - lp[j])).sum(-1)
                manual = manual + 0.5 * alpha[i] * alpha[j] * (sym * mij).sum() / mij.sum()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    manual.backward()
    for (name, p), g in zip(trainable, g1):
        assert torch.allclose(p.grad, g, atol=1e-6, rtol=1e-4), name


def test_padded_slots_and_two_questions(tiny_model_dir):
    _, model, method, collator, rows = _setup(tiny_model_dir, weighting="uniform")
    two = [dict(rows[0]), dict(rows[1], paths=rows[1]["paths"][:2])]  # second question: 2 paths + 1 pad slot
    batch = collator(two)
    assert batch["path_valid"].tolist() == [True] * 5 + [False]
    model.eval()
    with torch.no_grad():
        loss, sig = method.compute_loss(model, batch)
    ce = sequence_ce(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"])
    sft = (ce[:3].mean() + ce[3:5].mean()) / 2
    assert sig["loss_sft"] == pytest.approx(sft.item(), rel=1e-5)
    assert math.isfinite(loss.item())


def test_best_single_keeps_only_that_teacher(tiny_model_dir):
    _, model, method, collator, rows = _setup(tiny_model_dir, weighting="best_single", best_teacher="plan")
    with torch.no_grad():
        _, sig = method.compute_loss(model, collator(rows[:1]))
    assert sig["alpha"] == {"formal": 0.0, "plan": 1.0, "noise": 0.0}
    assert sig["loss_mcc"] == 0.0  # the other teachers' paths are not consistency partners either
    with pytest.raises(CotdistillError, match="best_teacher"):
        CompactMethod(Config(method="compact", compact={"weighting": "best_single", "best_teacher": "gpt9"})).set_label_vocab(LABELS)


def test_fsdp_wrapped_model_is_refused(tiny_model_dir):
    _, model, method, collator, rows = _setup(tiny_model_dir)

    class FullyShardedDataParallel(nn.Module):  # same class name as torch's FSDP wrapper
        def __init__(self, inner):
            super().__init__()
            self.module = inner

    with pytest.raises(CotdistillError, match="(?i)ddp or deepspeed"):
        method.compute_loss(FullyShardedDataParallel(model), collator(rows[:1]))


def test_noise_teacher_gets_lowest_alpha(tiny_model_dir):
    """Behaviour: after a short COMPACT training, the noise teacher has the lowest mean α."""
    _, model, method, collator, rows = _setup(tiny_model_dir, nonzero_lora=False, n_rows=8)
    torch.manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(2):
        for r in rows:
            method.training_step(model, collator([r]), lambda loss: loss.backward())
            opt.step()
            opt.zero_grad()
    model.eval()
    mean = {lab: 0.0 for lab in LABELS}
    with torch.no_grad():
        for r in rows:
            _, sig = method.compute_loss(model, collator([r]))
            for lab, a in sig["alpha"].items():
                mean[lab] += a / len(rows)
    assert mean["noise"] < min(mean["formal"], mean["plan"]), mean


@pytest.mark.parametrize("scope", ["value", "line"])
def test_gold_ids_recovered_from_answer_span(tiny_model_dir, scope):
    from cotdistill.pathset.collate import PathCollator

    tok, _, _, _, rows = _setup(tiny_model_dir)
    cfg = Config(method="compact", data={"answer_span_scope": scope})
    method = CompactMethod(cfg)
    method.prepare(None, tok, None)
    col = PathCollator(tok, max_seq_len=256, student_instruction="", label_vocab=LABELS, answer_span_scope=scope)
    row = dict(rows[0], gold="123")
    batch = col([row])
    want = tok("123", add_special_tokens=False)["input_ids"]
    assert method._gold_ids(batch, 0, torch.arange(3)).tolist() == want
    method.cc.gold_leading_space = True
    assert method._gold_ids(batch, 0, torch.arange(3)).tolist() == tok(" 123", add_special_tokens=False)["input_ids"]
    # every span cut: fall back to the dataset's gold keyed by _row, else None
    batch["answer_valid"][:] = False
    assert method._gold_ids(batch, 0, torch.arange(3)) is None
    method.gold_by_row = {int(batch["question_row"][0]): [7, 8]}
    assert method._gold_ids(batch, 0, torch.arange(3)).tolist() == [7, 8]


def test_two_pass_chunked_gradient_equals_single_pass(tiny_model_dir):
    """paths_micro_batch < N: pass-1 weights + per-chunk pass-2 backward give the single-pass gradient."""
    _, model, single, collator, rows = _setup(tiny_model_dir, lambda_mcc=0.5)
    chunked = CompactMethod(Config(method="compact", compact={"lambda_mcc": 0.5, "train": {"paths_micro_batch": 2}}))
    chunked.prepare(None, collator.tok, model)
    chunked.set_label_vocab(LABELS)
    batch = collator(rows[:2])
    batch["answer_valid"][4] = False  # a cut answer span keeps its CE but leaves the consistency term
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    grads, out = [], []
    for method in (single, chunked):
        model.zero_grad()
        loss, sig = method.training_step(model, batch, lambda loss: loss.backward())
        grads.append([p.grad.clone() for p in trainable])
        out.append((loss.item(), sig))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-5)
    assert out[0][1]["alpha"] == pytest.approx(out[1][1]["alpha"], rel=1e-5)
    assert out[0][1]["loss_mcc"] == pytest.approx(out[1][1]["loss_mcc"], rel=1e-4)
    for g1, g2 in zip(*grads):
        assert torch.allclose(g1, g2, atol=1e-6, rtol=1e-4)


def test_signals_and_loss_identical_packed_and_unpacked(tiny_model_dir):
    """Issue 13: α, S_MI, S_cons and the loss do not depend on train.share_prompt (prompt-shared packing).
    Paths of different lengths, so the unpacked batch has padding that the packed forward never computes."""
    from cotdistill.pathset.collate import PathCollator

    tok, model, method, _, rows = _setup(tiny_model_dir, lambda_mcc=0.5)
    model.eval()
    out = {}
    for share in (False, True):
        col = PathCollator(tok, max_seq_len=256, student_instruction="", label_vocab=LABELS, share_prompt=share)
        batch = col(rows[:2])
        assert int(batch["attention_mask"].sum(1).min()) < batch["attention_mask"].size(1)  # padding present
        with torch.no_grad():
            out[share] = method.compute_loss(model, batch)
    (l0, s0), (l1, s1) = out[False], out[True]
    assert l1.item() == pytest.approx(l0.item(), rel=1e-4)
    for key in ("S_mi", "S_cons", "S_ppl", "alpha"):
        assert s1[key] == pytest.approx(s0[key], rel=1e-4, abs=1e-5), key

