"""MIND's L0 pass (the bulk of ``prepare``): the trainer's autocast applies, a fresh LoRA adapter is skipped exactly."""

from __future__ import annotations

import pytest
import torch

from cotdistill.config import Config
from cotdistill.methods.mind import MindMethod
from cotdistill.methods.mind.method import _fresh_lora

import cotdistill.pathset.collate as collate  # noqa: E402  (a move must fail loudly, not skip)

LABELS = ["a", "b"]


def _rows(n=3):
    return [{"question_id": f"q{i}", "question": f"Jack had {5 + i} apples and ate 2. How many are left?",
             "gold": str(3 + i),
             "paths": [{"label": "a", "text": f"{5 + i} - 2 = {3 + i}."},
                       {"label": "b", "text": f"Jack ate 2 of {5 + i}, so {3 + i} are left."}]} for i in range(n)]


@pytest.fixture
def lora_student(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            task_type="CAUSAL_LM"))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    coll = collate.PathCollator(tok, max_seq_len=128, student_instruction="", answer_suffix="The answer is: {a}",
                                label_vocab=LABELS)
    return model, tok, coll


def _method(coll, rows):
    cfg = Config()
    cfg.mind.warmup_epochs = 1
    m = MindMethod(cfg)
    m.collator, m.label_vocab = coll, LABELS
    m.rows = list(range(len(rows)))
    m.row_slots = [[0, 1] for _ in rows]
    return m


def test_fresh_lora_detection(lora_student):
    model, _, _ = lora_student
    assert _fresh_lora(model)  # PEFT starts B at zero
    assert not _fresh_lora(model.get_base_model())  # no adapter at all
    b = next(p for n, p in model.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        b[0, 0] = 1e-3
    assert not _fresh_lora(model)  # a trained adapter changes the logits: it must stay on


def test_l0_without_the_fresh_adapter_is_bit_identical(lora_student, monkeypatch):
    import cotdistill.methods.mind.method as mm

    model, _, coll = lora_student
    rows = _rows()
    skipped = _method(coll, rows).initial_losses(rows, model)
    monkeypatch.setattr(mm, "_fresh_lora", lambda m: False)
    kept = _method(coll, rows).initial_losses(rows, model)
    assert torch.isfinite(skipped).all() and torch.equal(skipped, kept)
    # and a trained adapter is used: L0 then differs
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    monkeypatch.undo()
    assert not torch.equal(_method(coll, rows).initial_losses(rows, model), kept)


def test_prepare_computes_l0_under_the_given_autocast(lora_student, tmp_path):
    model, tok, coll = lora_student
    rows = _rows()
    seen = []
    hook = model.get_base_model().model.register_forward_hook(
        lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    try:
        m = MindMethod(Config(mind={"warmup_epochs": 1}))
        m.prepare(rows, tok, model, collator=coll, run_dir=tmp_path / "a",
                  autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
        assert seen and all(seen)  # every L0 forward ran under the trainer's autocast
        l0_bf16 = m.l0
        seen.clear()
        plain = MindMethod(Config(mind={"warmup_epochs": 1}))
        plain.prepare(rows, tok, model, collator=coll, run_dir=tmp_path / "b")
        assert seen and not any(seen)
    finally:
        hook.remove()
    # bf16 changes L0 a little, not its meaning
    torch.testing.assert_close(l0_bf16, plain.l0, atol=0.1, rtol=0.05)
