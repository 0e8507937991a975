"""Prompt-shared packing (train.share_prompt): packed logits, losses and gradients equal the unpacked forward."""

from __future__ import annotations

import pytest
import torch

from cotdistill.methods.losses import IGNORE_INDEX, answer_log_probs, sequence_ce
from cotdistill.methods.packing import model_logits, packing_supported, plan_packing
from cotdistill.methods.std_cot import forward_logits, path_ce
from cotdistill.pathset.collate import PathCollator

TEXTS = [
    "5 - 2 = 3.",
    "Jack had 5 apples. He ate 2, so 5 - 2 = 3 are left.",
    "First, compute the total. Then subtract: 5 - 2 = 3.",
    "Plan: subtract the eaten apples from the total. So 5 - 2 = 3. Hence 3 apples remain in the end.",
]


def _rows(k: int, q: int = 1) -> list[dict]:
    return [{
        "question_id": f"q{j}", "question": f"Jack had {5 + j} apples and ate 2. How many apples are left?",
        "gold": str(3 + j), "kind": "number", "source": "svamp:train",
        "paths": [{"label": "a", "text": TEXTS[(i + j) % len(TEXTS)]} for i in range(k)],
    } for j in range(q)]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _model(tiny_model_dir, attn="sdpa", lora=False):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn, dtype=torch.float32)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, init_lora_weights=False,
                                                 target_modules=["q_proj", "v_proj", "down_proj"],
                                                 task_type="CAUSAL_LM"))
    return model.eval()


def _batch(tok, k: int, q: int = 1, share: bool = True) -> dict[str, torch.Tensor]:
    col = PathCollator(tok, max_seq_len=256, student_instruction="Think step by step.", label_vocab=["a"],
                       share_prompt=share)
    return col(_rows(k, q))


def _unshared(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {**batch, "share_prompt": torch.zeros_like(batch["share_prompt"])}


def _real(logits: torch.Tensor, batch, rows) -> torch.Tensor:
    return logits[batch["attention_mask"][rows][:, : logits.size(1)].bool()]


def test_collator_emits_prompt_len_and_share(tok):
    b = _batch(tok, 3)
    plen = b["prompt_len"]
    assert plen.shape == (3,) and bool((plen == plen[0]).all()) and b["share_prompt"].all()
    # the prompt is exactly the unlabelled head of every row
    for i in range(3):
        first = int((b["labels"][i] != IGNORE_INDEX).nonzero()[0])
        assert first == int(plen[i])
    assert not _batch(tok, 2, share=False)["share_prompt"].any()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_packed_logits_equal_unpacked(tiny_model_dir, tok, attn, k):
    model = _model(tiny_model_dir, attn)
    batch = _batch(tok, k, q=2)
    lens = batch["attention_mask"].sum(-1)
    assert k == 1 or len(set(lens.tolist())) > 1  # right padding present
    rows = batch["path_valid"].nonzero(as_tuple=True)[0]
    t = int(lens.max())
    plan = plan_packing(batch["input_ids"][:, :t], batch["attention_mask"][:, :t], batch["question_index"],
                        batch["prompt_len"], batch["share_prompt"])
    assert (plan is None) == (k == 1)  # K=1: nothing to share, the plain forward runs
    if plan is not None:
        assert plan.input_ids.shape[0] == 2 and plan.input_ids.shape[1] < k * t
    with torch.no_grad():
        packed = forward_logits(model, batch, rows)
        plain = forward_logits(model, _unshared(batch), rows)
    assert packed.shape == plain.shape
    torch.testing.assert_close(_real(packed, batch, rows), _real(plain, batch, rows), atol=1e-5, rtol=1e-5)


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _loss_and_grads(model, batch, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.sum().backward()
    return loss.detach(), _grads(model)


def _std_cot(model, batch):
    rows = batch["path_valid"].nonzero(as_tuple=True)[0]
    return path_ce(model, batch, rows)  # per-path CE_k [n]; Std-CoT's loss is their mean


def _mind_style(model, batch):
    """Σ α_k CE_k plus a pairwise JS-like consistency term on the answer distributions (uses every logit row)."""
    rows = batch["path_valid"].nonzero(as_tuple=True)[0]
    logits = forward_logits(model, batch, rows)
    ce = sequence_ce(logits, batch["labels"][rows][:, : logits.size(1)])
    alpha = torch.softmax(torch.arange(ce.numel(), dtype=torch.float32), 0)
    logp, span = answer_log_probs(logits, batch["answer_mask"][rows][:, : logits.size(1)])
    p = logp.exp()
    cons = ((p[0] - p[1:]) ** 2).sum() if p.size(0) > 1 else logp.sum() * 0
    return torch.cat([alpha * ce, cons.reshape(1)])


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("loss_fn", [_std_cot, _mind_style], ids=["std_cot", "mind"])
def test_losses_and_gradients_equal_unpacked(tiny_model_dir, tok, loss_fn, lora):
    model = _model(tiny_model_dir, lora=lora)
    batch = _batch(tok, 4)
    l_pack, g_pack = _loss_and_grads(model, batch, loss_fn)
    l_plain, g_plain = _loss_and_grads(model, _unshared(batch), loss_fn)
    torch.testing.assert_close(l_pack, l_plain, atol=1e-5, rtol=1e-5)
    assert g_pack.keys() == g_plain.keys() and g_pack
    if lora:
        assert all("lora_" in n for n in g_pack)
    for n in g_pack:
        torch.testing.assert_close(g_pack[n], g_plain[n], atol=1e-5, rtol=1e-4, msg=n)


def test_bf16_autocast(tiny_model_dir, tok):
    model = _model(tiny_model_dir)
    batch = _batch(tok, 3)
    rows = batch["path_valid"].nonzero(as_tuple=True)[0]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        packed = forward_logits(model, batch, rows).float()
        plain = forward_logits(model, _unshared(batch), rows).float()
        ref32 = None
    with torch.no_grad():
        ref32 = forward_logits(model, _unshared(batch), rows)
    err_pack = (_real(packed, batch, rows) - _real(ref32, batch, rows)).abs().max()
    err_plain = (_real(plain, batch, rows) - _real(ref32, batch, rows)).abs().max()
    assert torch.isfinite(packed).all()
    assert err_pack <= 2 * err_plain + 1e-2  # bf16 rounding of the same order as the plain forward's


def test_different_prompts_fall_back(tiny_model_dir, tok):
    model = _model(tiny_model_dir)
    batch = _batch(tok, 4)
    plen = int(batch["prompt_len"][0])
    ids = batch["input_ids"].clone()
    ids[2, plen - 3] = (ids[2, plen - 3] + 1) % 100  # row 2 gets another prompt (e.g. another task prefix)
    batch["input_ids"] = ids
    plan = plan_packing(ids, batch["attention_mask"], batch["question_index"], batch["prompt_len"],
                        batch["share_prompt"])
    assert plan is not None and plan.input_ids.shape[0] == 2  # rows 0, 1, 3 packed; row 2 alone
    rows = torch.arange(4)
    with torch.no_grad():
        packed = forward_logits(model, batch, rows)
        plain = forward_logits(model, _unshared(batch), rows)
    torch.testing.assert_close(_real(packed, batch, rows), _real(plain, batch, rows), atol=1e-5, rtol=1e-5)
    # no prompt shared at all: the plan declines, the plain forward runs
    q = torch.arange(4)
    assert plan_packing(ids, batch["attention_mask"], q, batch["prompt_len"], batch["share_prompt"]) is None


def test_unsupported_models_and_missing_keys_use_plain_forward(tiny_model_dir, tok):
    model = _model(tiny_model_dir)
    assert packing_supported(model)
    model.config.sliding_window, model.config.use_sliding_window = 8, True
    assert not packing_supported(model, 100) and packing_supported(model, 8)
    model.config.sliding_window = None
    batch = _batch(tok, 2)
    with torch.no_grad():  # without the packing keys (e.g. SbS label_ views): plain forward
        a = model_logits(model, batch["input_ids"], batch["attention_mask"])
        b = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(a, b)


def test_trainer_losses_match(tiny_model_dir, tmp_path):
    """A few Std-CoT optimizer steps with share_prompt on and off, same seed: same logged losses and grad norms."""
    from test_trainer import make_dataset, tiny_config  # same folder, on sys.path under pytest

    from cotdistill.train.run import train
    from cotdistill.utils.io import read_jsonl

    from transformers import TrainerCallback

    class Norms(TrainerCallback):
        def __init__(self):
            self.norms = []

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "grad_norm" in logs:
                self.norms.append(float(logs["grad_norm"]))

    ds = make_dataset(tmp_path / "ds", n=4)
    losses, norms = {}, {}
    for share in (False, True):
        cfg = tiny_config(tiny_model_dir, tmp_path, max_steps=3, grad_accum=1, save_steps=100, report_to=["none"],
                          paths_micro_batch=4, bf16=False, share_prompt=share,
                          lora={"dropout": 0.0})  # LoRA dropout draws differ with the tensor shapes
        run = tmp_path / f"run-{share}"
        cb = Norms()
        train(cfg, ds, run, resume=False, callbacks=[cb])
        losses[share] = [r["loss"] for r in read_jsonl(run / "dynamics.jsonl")]
        norms[share] = cb.norms
    assert len(losses[True]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-4, abs=1e-5)
    assert norms[True] == pytest.approx(norms[False], rel=1e-4) and len(norms[True]) == 3
    assert losses[True][0] != losses[True][-1]  # training moved


def test_compact_forward_logits_and_hidden_equal_unpacked(tiny_model_dir, tok):
    """COMPACT reads the final-norm hidden states too: packed, they are unpacked with the same plan."""
    from cotdistill.config import Config
    from cotdistill.methods.compact.metrics import resolve_parts
    from cotdistill.methods.compact.method import CompactMethod

    model = _model(tiny_model_dir)
    method = CompactMethod(Config.model_validate({"method": "compact"}))
    parts = resolve_parts(model)
    batch = _batch(tok, 3, q=2)
    rows = torch.tensor([0, 1, 2, 4])
    from cotdistill.methods.packing import pack_kwargs, plan_packing

    kw = pack_kwargs(batch, rows)
    assert plan_packing(batch["input_ids"][rows], batch["attention_mask"][rows], kw["question_index"],
                        kw["prompt_len"], kw["share_prompt"]) is not None  # the packed path really runs
    with torch.no_grad():
        lp, hp = method._forward(model, parts, batch, rows)
        lu, hu = method._forward(model, parts, _unshared(batch), rows)
    assert hp.shape == hu.shape and lp.shape == lu.shape
    real = batch["attention_mask"][rows].bool()
    assert torch.allclose(lp[real], lu[real], atol=1e-5)
    assert torch.allclose(hp[real], hu[real], atol=1e-5)
