"""MindMethod on the tiny random Llama: hand-computed loss, chunked == single-pass gradient, gradient isolation."""

import math

import pytest
import torch

from cotdistill.config import Config
from cotdistill.methods.losses import IGNORE_INDEX
from cotdistill.methods.mind import MindMethod
from cotdistill.methods.registry import get_method

import cotdistill.pathset.collate as collate  # noqa: E402  (a move must fail loudly, not skip)

ROWS = [
    {"question_id": "q0", "question": "Jack had 5 apples and ate 2. How many apples are left?", "gold": "3",
     "paths": [
         {"label": "intuitive", "teacher": "t", "perspective": "intuitive", "text": "He ate 2 of 5, so 3 stay."},
         {"label": "planning", "teacher": "t", "perspective": "planning", "text": "Plan: subtract. 5 - 2 = 3."},
         {"label": "socratic", "teacher": "t", "perspective": "socratic",
          "text": "What is left? First compute 5 - 2. That is 3, so the total is 3 apples."},
     ]},
    {"question_id": "q1", "question": "A train travels 60 miles per hour for 3 hours. How far?", "gold": "180",
     "paths": [
         {"label": "planning", "teacher": "t", "perspective": "planning", "text": "Plan: multiply. 60 * 3 = 180."},
         {"label": "intuitive", "teacher": "t", "perspective": "intuitive", "text": "Each hour 60 miles; 3 hours."},
     ]},
]


def _config(**mind):
    cfg = Config()
    for k, v in mind.items():
        if "." in k:
            sec, key = k.split(".")
            setattr(getattr(cfg.mind, sec), key, v)
        else:
            setattr(cfg.mind, k, v)
    return cfg


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, tok


def _collator(tok, vocab):
    return collate.PathCollator(tok, max_seq_len=256, student_instruction="Reason step by step.",
                                answer_suffix="The answer is: {a}", label_vocab=vocab)


def _batch(tok, rows, vocab, idx):
    return _collator(tok, vocab)([dict(rows[i], _row=i) for i in idx])


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _run_step(method, model, batch):
    model.zero_grad(set_to_none=True)
    loss, sig = method.training_step(model, batch, lambda loss: loss.backward())
    return loss, sig, _grads(model)


def _prepared(method, rows, vocab, tok, dim=8):
    """MetaNet set up on a random stand-in for the encoder vectors (the test is about the method, not MiniLM)."""
    method.label_vocab = vocab
    index = {lab: i for i, lab in enumerate(vocab)}
    method.row_slots = [[index[p["label"]] for p in r["paths"]] for r in rows]
    where = [(i, j) for i, r in enumerate(rows) for j in range(len(r["paths"]))]
    g = torch.Generator().manual_seed(0)
    method.set_embeddings_from_flat(torch.randn(len(where), dim, generator=g), where, len(rows))
    method._build_metanet(torch.device("cpu"))
    method.l0 = torch.zeros(method.emb.shape[:2])
    method._enter_joint()
    return method


def test_registry_finds_mind():
    assert isinstance(get_method("mind", Config()), MindMethod)


def test_uniform_loss_matches_hand_computation(tiny):
    model, tok = tiny
    vocab = ["intuitive", "planning", "socratic"]
    cfg = _config(weighting="uniform", lambda_cons=0.7)
    method = MindMethod(cfg)
    method.label_vocab = vocab
    batch = _batch(tok, ROWS, vocab, [0])
    loss, sig, _ = _run_step(method, model, batch)
    # hand computation: per-path token-mean NLL over the completion, then JSD of the answer distributions
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    ces, answer = [], []
    for k in range(3):
        lab = batch["labels"][k]
        nll = [-torch.log_softmax(logits[k, t - 1], -1)[lab[t]] for t in range(1, lab.numel()) if lab[t] != IGNORE_INDEX]
        ces.append(sum(nll) / len(nll))
        pos = batch["answer_mask"][k].nonzero().flatten().tolist()
        answer.append([torch.softmax(logits[k, p - 1], -1) for p in pos])

    def jsd(P, Q):
        out = []
        for p, q in zip(P, Q):
            m = (p + q) / 2
            out.append(0.5 * (p * (p / m).log()).sum() + 0.5 * (q * (q / m).log()).sum())
        return sum(out) / len(out)

    l_sft = sum(ces) / 3
    l_cons = sum(jsd(answer[i], answer[j]) / 9 for i in range(3) for j in range(i + 1, 3))
    assert math.isclose(float(loss), float(l_sft + 0.7 * l_cons), rel_tol=1e-4)
    assert math.isclose(sig["L_sft"], float(l_sft), rel_tol=1e-4)
    assert math.isclose(sig["L_cons"], float(l_cons), rel_tol=1e-3)
    assert sig["alpha"] == pytest.approx({"intuitive": 1 / 3, "planning": 1 / 3, "socratic": 1 / 3})
    assert sig["n_kept"] == 3 and "L_meta" not in sig


@pytest.mark.parametrize("divergence", ["js", "kl"])
def test_chunked_gradient_equals_single_pass(tiny, divergence):
    model, tok = tiny
    vocab = ["intuitive", "planning", "socratic"]
    batch = _batch(tok, ROWS, vocab, [0, 1])  # two questions, 3 + 2 paths, one padding slot
    results = []
    for pmb in (8, 2):
        cfg = _config(weighting="uniform", lambda_cons=0.5, cons_divergence=divergence)
        cfg.train.paths_micro_batch = pmb
        method = MindMethod(cfg)
        method.label_vocab = vocab
        results.append(_run_step(method, model, batch))
    (l1, s1, g1), (l2, s2, g2) = results
    assert math.isclose(float(l1), float(l2), rel_tol=1e-5)
    assert math.isclose(s1["L_cons"], s2["L_cons"], rel_tol=1e-4, abs_tol=1e-7)
    assert g1.keys() == g2.keys() and g1
    for n in g1:
        assert torch.allclose(g1[n], g2[n], rtol=1e-4, atol=1e-6), n


def test_metanet_and_student_gradients_stay_apart(tiny):
    model, tok = tiny
    vocab = ["intuitive", "planning", "socratic"]
    cfg = _config(**{"metanet.dropout": 0.0, "meta_joint_accum": 4, "beta": 0.0})
    method = _prepared(MindMethod(cfg), ROWS, vocab, tok)
    batch = _batch(tok, ROWS, vocab, [0])
    seen = {}

    def backward(loss):
        loss.backward()
        # the student's loss reaches no MetaNet parameter
        seen["meta_grads"] = [p.grad for p in method.metanet.parameters()]
        seen["student"] = _grads(model)

    model.zero_grad(set_to_none=True)
    _, sig = method.training_step(model, batch, backward)
    assert all(g is None for g in seen["meta_grads"])
    # L_meta then reached MetaNet (accumulating: 1 of 4 questions, no step yet) and left the student alone
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.metanet.parameters())
    after = _grads(model)
    assert all(torch.equal(after[n], seen["student"][n]) for n in after)
    assert method.meta_steps == 0 and method.meta_pending == 1
    assert set(sig) >= {"scores", "alpha", "kept", "n_kept", "L_meta", "L_cons", "L_sft"}
    assert set(sig["alpha"]) == set(vocab) and sig["n_kept"] == 3


def test_non_kept_paths_cost_no_backward_and_meta_steps(tiny):
    model, tok = tiny
    vocab = ["intuitive", "planning", "socratic"]
    cfg = _config(**{"metanet.dropout": 0.0, "meta_joint_accum": 2, "beta": 1.0})  # keep only the argmax
    method = _prepared(MindMethod(cfg), ROWS, vocab, tok)
    batch = _batch(tok, ROWS, vocab, [0])
    before = {n: p.detach().clone() for n, p in method.metanet.named_parameters()}
    _, sig, _ = _run_step(method, model, batch)
    assert sig["n_kept"] == 1 and sorted(sig["kept"].values()) == [0.0, 0.0, 1.0]
    assert sig["L_cons"] == 0
    _, sig, _ = _run_step(method, model, batch)
    assert method.meta_steps == 1 and method.meta_pending == 0  # stepped after meta_joint_accum questions
    assert any(not torch.equal(before[n], p) for n, p in method.metanet.named_parameters())
    assert all(p.grad is None for p in method.metanet.parameters())
    # checkpoint round trip
    clone = _prepared(MindMethod(cfg), ROWS, vocab, tok)
    clone.load_state_dict(method.state_dict())
    assert clone.meta_steps == 1 and clone.phase == "joint"
    for (n, p), (_, q) in zip(method.metanet.named_parameters(), clone.metanet.named_parameters()):
        assert torch.equal(p, q), n


def test_instantaneous_weights_follow_current_losses(tiny):
    model, tok = tiny
    vocab = ["intuitive", "planning", "socratic"]
    cfg = _config(weighting="instantaneous", beta=0.0, tau_student=0.5)
    method = MindMethod(cfg)
    method.label_vocab = vocab
    batch = _batch(tok, ROWS, vocab, [0])
    _, sig, _ = _run_step(method, model, batch)
    from cotdistill.methods.losses import sequence_ce

    with torch.no_grad():
        ce = sequence_ce(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                         batch["labels"])
    expect = torch.softmax(-ce / 0.5, 0)
    got = torch.tensor([sig["alpha"][vocab[int(s)]] for s in batch["path_slot"]])
    assert torch.allclose(got, expect, atol=1e-5)
    assert sig["scores"]["planning"] == pytest.approx(-float(ce[1]), rel=1e-5)


def test_dev_loss_equals_uniform_training_loss(tiny):
    model, tok = tiny
    vocab = ["intuitive", "planning", "socratic"]
    batch = _batch(tok, ROWS, vocab, [0, 1])
    cfg = _config(weighting="uniform", lambda_cons=0.3)
    method = MindMethod(cfg)
    method.label_vocab = vocab
    train_loss, _, _ = _run_step(method, model, batch)
    with torch.no_grad():
        dev_loss, logs = _prepared(MindMethod(_config(lambda_cons=0.3)), ROWS, vocab, tok).compute_loss(model, batch)
    assert math.isclose(float(dev_loss), float(train_loss), rel_tol=1e-5)
    assert set(logs) == {"L_sft", "L_cons"}


def test_loss_ema_targets_move_from_l0(tiny):
    model, tok = tiny
    vocab = ["intuitive", "planning", "socratic"]
    cfg = _config(**{"metanet.dropout": 0.0, "loss_ema": True, "loss_ema_decay": 0.8})
    method = MindMethod(cfg)
    method.label_vocab = vocab
    _prepared(method, ROWS, vocab, tok)
    method.l0 = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, float("nan")]])
    method.ema = None
    method._enter_joint()  # builds the EMA table from L0
    batch = _batch(tok, ROWS, vocab, [1])
    _, sig, _ = _run_step(method, model, batch)
    # row 1 holds planning (col 0) and intuitive (col 1)
    expect = torch.tensor([0.8 * 4.0 + 0.2 * sig["ce"]["planning"], 0.8 * 5.0 + 0.2 * sig["ce"]["intuitive"]])
    assert torch.allclose(method.ema.table[1, :2], expect, atol=1e-5)
    assert torch.equal(method.ema.table[0], torch.tensor([1.0, 2.0, 3.0]))
