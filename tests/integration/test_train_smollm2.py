"""The collator and trainer on the real SmolLM2-135M-Instruct (tokenizer masks; a short LoRA Std-CoT run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smol_dir():
    from cotdistill.models import resolve_model_path

    return resolve_model_path("smollm2-135m-instruct")


def test_smollm2_masks(smol_dir):
    from test_collate import INSTR, _row

    from cotdistill.pathset.collate import PathCollator, build_label_vocab, end_of_turn_text
    from cotdistill.models import load_tokenizer

    tok = load_tokenizer(smol_dir)
    assert end_of_turn_text(tok) == "<|im_end|>"
    assert tok.pad_token_id == tok.convert_tokens_to_ids("<|im_end|>")  # the trap: pad == end of turn
    rows = [_row(0), _row(1, k=2, gold="7")]
    b = PathCollator(tok, max_seq_len=512, student_instruction=INSTR, label_vocab=build_label_vocab(rows))(rows)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    for i in range(b["input_ids"].size(0)):
        if not b["path_valid"][i]:
            continue
        n = int(b["attention_mask"][i].sum())
        assert b["labels"][i, n - 1].item() == im_end
        assert tok.decode(b["input_ids"][i, b["answer_mask"][i]]) == (" 15" if b["question_index"][i] == 0 else " 7")
        text = tok.decode(b["input_ids"][i, :n])
        assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
        first_label = int((b["labels"][i] != -100).nonzero()[0])
        assert tok.decode(b["input_ids"][i, :first_label]).endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_smollm2_lora_std_cot_loss_falls(smol_dir, tmp_path):
    """20 steps on one repeated question: the training loss must fall (run by hand: a few minutes on CPU)."""
    from test_trainer import make_dataset

    from cotdistill.config import Config
    from cotdistill.train.run import train
    from cotdistill.utils.io import read_jsonl

    ds = make_dataset(tmp_path / "ds", n=2)
    cfg = Config.model_validate({"method": "std_cot", "train": {
        "model": str(smol_dir), "max_steps": 20, "grad_accum": 1, "lr": 1e-3, "max_seq_len": 160,
        "save_steps": 100, "gradient_checkpointing": False, "report_to": []}})
    train(cfg, ds, tmp_path / "run")
    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "dynamics.jsonl")]
    assert len(losses) == 20
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4
    assert torch.isfinite(torch.tensor(losses)).all()
