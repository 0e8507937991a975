"""MIND through the real trainer (`train()` + DistillTrainer) on the tiny model: dynamics signals per label,
MetaNet state in checkpoints, and a rerun that reuses the cached L0 / warm-up."""

from __future__ import annotations

import json

import pytest
import torch

from cotdistill.config import Config
from cotdistill.utils.io import read_jsonl

import cotdistill.train.run  # noqa: E402,F401


def _dataset(path):
    from datasets import Dataset, DatasetDict

    from test_mind_behaviour import _rows  # same folder (pytest puts it on sys.path)

    rows, _ = _rows(6)
    for r in rows:
        r.update(kind="number", source="svamp:train", difficulty=None)
        for j, p in enumerate(r["paths"]):
            p["record_key"] = f"{r['question_id']}-{j}"
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))
    return path


def _config(model_dir, **train) -> Config:
    t = {"model": str(model_dir), "finetune": "full", "lr": 1e-3, "grad_accum": 2, "report_to": [],
         "gradient_checkpointing": False, "max_seq_len": 128, "save_steps": 2, "max_steps": 3} | train
    return Config.model_validate({
        "method": "mind", "train": t,
        "mind": {"warmup_epochs": 2, "meta_warmup_accum": 2, "meta_joint_accum": 2, "metanet": {"d_model": 32}},
    })


def test_mind_trains_through_distill_trainer(tiny_model_dir, tmp_path, monkeypatch):
    from cotdistill.train.run import train

    monkeypatch.setenv("COTDISTILL_CACHE_DIR", str(tmp_path / "cache"))
    ds = _dataset(tmp_path / "ds")
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops on a shared 2-core box
    try:
        student = train(_config(tiny_model_dir), ds, run)
    finally:
        torch.set_num_threads(threads)
    assert student.is_dir()
    lines = list(read_jsonl(run / "dynamics.jsonl"))
    assert [r["step"] for r in lines] == [1, 2, 3]
    labels = {"analogy", "decomposition", "intuitive", "planning"}
    for r in lines:
        sig = r["signals"]
        assert set(sig["alpha"]) == labels and set(sig["scores"]) == labels
        assert abs(sum(sig["alpha"].values()) - 1) < 0.35  # per-label means over 2 questions
        assert 1 <= sig["n_kept"] <= 4 and sig["L_meta"] >= 0 and "L_cons" in sig and "L_sft" in sig
    assert (run / "mind" / "prepare.pt").is_file()
    ckpt = sorted((run / "checkpoints").glob("checkpoint-*"))[-1]
    state = torch.load(ckpt / "cotdistill_method.pt", weights_only=False)
    assert state["phase"] == "joint" and state["micro_steps"] > 0 and "metanet" in state
    saved = torch.load(run / "mind" / "prepare.pt", weights_only=False)
    assert json.dumps(saved["warmup_log"]) and len(saved["warmup_log"]) == 2
