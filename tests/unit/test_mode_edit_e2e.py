"""MoDE and EDIT end to end on the tiny model: experts + LoraHub composition; Std-CoT init + KRSL."""

import json

import pytest

from cotdistill.config import Config


def _dataset(tmp_path, with_rejected: bool):
    from datasets import Dataset, DatasetDict

    rows = []
    for i in range(6):
        a, b = i + 2, i + 3
        rows.append({
            "question_id": f"q{i}", "question": f"Jack had {a} apples and got {b} more. How many apples?",
            "gold": str(a + b), "kind": "number", "source": "test", "choices": None, "difficulty": None,
            "paths": [
                {"teacher": "t", "perspective": "standard", "role": "standard", "label": "standard",
                 "text": f"{a} + {b} = {a + b}.", "record_key": f"k{i}std", "twin": ""},
                {"teacher": "t", "perspective": "plan", "label": "plan", "text": f"Plan: add. {a} + {b} = {a + b}.",
                 "record_key": f"k{i}p"},
                {"teacher": "t", "perspective": "socratic", "label": "socratic",
                 "text": f"What is {a} + {b}? It is {a + b}.", "record_key": f"k{i}s"},
            ],
            **({"rejected_paths": [{"teacher": "t", "perspective": "ccp", "label": "plan", "role": "rejected",
                                    "text": f"{a} + {b} = {a + b + 1}.", "answer": str(a + b + 1),
                                    "record_key": f"k{i}r", "twin": f"k{i}std"}]} if with_rejected else {}),
        })
    d = tmp_path / "dataset"
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(d))
    return d


def _config(tiny_model_dir, method, **extra):
    return Config.model_validate({
        "method": method,
        "train": {"model": str(tiny_model_dir), "lr": 1e-3, "max_steps": 2, "grad_accum": 1, "max_seq_len": 96,
                  "gradient_checkpointing": False, "save_steps": 10, "report_to": [], "lora": {"r": 4, "alpha": 8}},
        "curate": {"eval_guard": []},
        **extra,
    })


def test_mode_trains_experts_and_composes(tmp_path, tiny_model_dir):
    from cotdistill.train.dispatch import train_method

    ds = _dataset(tmp_path, False)
    cfg = _config(tiny_model_dir, "mode", mode={"n_dev_examples": 2, "budget": 4})
    out = train_method(cfg, ds, tmp_path / "run")
    info = json.loads((out / "cotdistill_train.json").read_text())
    assert set(info["weights"]) == {"plan", "socratic"}  # experts: the perspective paths, not the standard one
    assert info["dev_target_roles"] == {"standard": 2}
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    for unit in ("plan", "socratic"):
        assert (tmp_path / "run" / "experts" / unit / "student" / "adapter_model.safetensors").exists()
    lines = (tmp_path / "run" / "dynamics.jsonl").read_text().splitlines()
    assert len(lines) == 4 and "w" in json.loads(lines[0])["signals"]
    # the composed adapter loads like any adapter
    from cotdistill.models import load_model_and_tokenizer

    load_model_and_tokenizer(str(tiny_model_dir), adapter=str(out))
    # a second call is a no-op
    assert train_method(cfg, ds, tmp_path / "run") == out


def test_edit_runs_std_cot_init_then_krsl(tmp_path, tiny_model_dir):
    from cotdistill.train.dispatch import train_method

    ds = _dataset(tmp_path, True)
    cfg = _config(tiny_model_dir, "edit")
    out = train_method(cfg, ds, tmp_path / "run")
    init = tmp_path / "run" / "edit_init" / "student"
    assert (init / "cotdistill_train.json").exists()
    info = json.loads((out / "cotdistill_train.json").read_text())
    assert info["method"] == "edit"
    dyn = [json.loads(x) for x in (tmp_path / "run" / "dynamics.jsonl").read_text().splitlines()]
    assert dyn and "loss_rejected" in dyn[-1]["signals"]
    # the dual pairs are the twins synthesis linked: the standard path and its CCP flip
    assert info["paths_trained"] == {"standard": 6, "rejected": 6}
    assert json.loads((init / "cotdistill_train.json").read_text())["paths_trained"] == {"standard": 6}


def test_edit_without_rejected_paths_is_a_clear_error(tmp_path, tiny_model_dir):
    from cotdistill.errors import CotdistillError
    from cotdistill.train.run import train

    ds = _dataset(tmp_path, False)
    cfg = _config(tiny_model_dir, "edit", edit={"init_from": "none"})
    with pytest.raises(CotdistillError, match="method edit trains on dual pairs.*no question has one "
                                              r"\(the dataset holds: perspective:plan 6, perspective:socratic 6, "
                                              "standard 6\)"):
        train(cfg, ds, tmp_path / "run2")
