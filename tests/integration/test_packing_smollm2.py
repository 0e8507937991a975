"""Prompt-shared packing (train.share_prompt) on the real SmolLM2-135M-Instruct: same logits as the plain forward."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_smollm2_packed_logits_equal_unpacked(attn):
    from test_packing import _real, _rows, _unshared

    from cotdistill.methods.packing import plan_packing
    from cotdistill.methods.std_cot import forward_logits
    from cotdistill.models import load_model_and_tokenizer
    from cotdistill.pathset.collate import PathCollator

    model, tok, _ = load_model_and_tokenizer("smollm2-135m-instruct", dtype="float32", attn_implementation=attn)
    model.eval()
    col = PathCollator(tok, max_seq_len=256, student_instruction="Think step by step.", label_vocab=["a"],
                       share_prompt=True)
    batch = col(_rows(4))
    rows = torch.arange(4)
    assert plan_packing(batch["input_ids"], batch["attention_mask"], batch["question_index"], batch["prompt_len"],
                        batch["share_prompt"]) is not None
    with torch.no_grad():
        packed = forward_logits(model, batch, rows)
        plain = forward_logits(model, _unshared(batch), rows)
    torch.testing.assert_close(_real(packed, batch, rows), _real(plain, batch, rows), atol=2e-4, rtol=1e-4)
