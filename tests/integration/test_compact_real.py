"""COMPACT on the real SmolLM2-135M-Instruct (GQA 9 heads / 3 kv heads) with peft LoRA: one step."""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = pytest.mark.integration


def test_compact_step_on_smollm2():
    from peft import LoraConfig, get_peft_model

    from cotdistill.config import Config
    from cotdistill.methods.compact import CompactMethod
    from cotdistill.methods.compact.metrics import resolve_parts
    from cotdistill.pathset.collate import PathCollator
    from cotdistill.models import load_model_and_tokenizer

    model, tok, _ = load_model_and_tokenizer("smollm2-135m-instruct", dtype="float32", for_training=True)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    parts = resolve_parts(model)
    assert (parts.n_heads, parts.n_kv_heads) == (9, 3)
    cfg = Config(method="compact")
    method = CompactMethod(cfg)
    method.prepare(None, tok, model)
    think = {tok.decode([i]) for i in method.think_ids.tolist()}
    assert {" Therefore", " So", " First"} <= think
    labels = ["gemini", "gpt4o", "llama"]
    method.set_label_vocab(labels)
    row = {
        "question": "Jack had 12 apples and ate 5. How many apples are left?", "gold": "7",
        "paths": [
            {"label": "gpt4o", "text": "Jack starts with 12 apples. He eats 5, so 12 - 5 = 7 apples remain."},
            {"label": "gemini", "text": "First, subtract the eaten apples: 12 - 5 = 7. Therefore 7 are left."},
            {"label": "llama", "text": "12 minus 5 equals 7."},
        ],
    }
    col = PathCollator(tok, max_seq_len=512, student_instruction=cfg.data.student_instruction, label_vocab=labels)
    batch = col([row])
    assert method._gold_ids(batch, 0, torch.arange(3)).tolist() == tok("7", add_special_tokens=False)["input_ids"]
    model.train()
    loss, sig = method.training_step(model, batch, lambda x: x.backward())
    assert math.isfinite(loss.item())
    assert sum(sig["alpha"].values()) == pytest.approx(1.0, rel=1e-5)
    assert all(math.isfinite(v) for key in ("S_mi", "S_cons", "S_ppl") for v in sig[key].values())
    assert sig["loss_mcc"] > 0
    q_lora = parts.q_proj.lora_B["default"].weight
    assert q_lora.grad is not None and q_lora.grad.abs().sum() > 0
