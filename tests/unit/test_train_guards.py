"""Training never reports success on garbage (issue 17, class 1): a non-finite loss, a step without a trainable
token, or a dataset whose answers were cut away by ``train.max_seq_len`` stop the run with one line, and nothing
is saved or marked complete. Reproduced first with the tiny random model and a huge learning rate (an all-NaN
adapter was saved, evaluated and marked complete, exit 0) and with ``max_seq_len: 16`` (zero loss, exit 0)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cotdistill.errors import CotdistillError
from cotdistill.methods.losses import IGNORE_INDEX
from cotdistill.train.guards import (
    SCALER_PATIENCE,
    StepGuard,
    check_answer_spans,
    check_finite_parameters,
    trainable_tokens,
)

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from test_trainer import make_dataset, tiny_config  # noqa: E402


def _rows(n_long: int, n_short: int) -> list[dict]:
    rows = []
    for i in range(n_long + n_short):
        q = f"Jack had {i + 5} apples and ate 2. How many are left?"
        if i < n_long:
            q = "Read this carefully. " * 40 + q
        rows.append({"question_id": f"q{i}", "question": q, "gold": str(i + 3), "kind": "number",
                     "source": "x", "difficulty": None,
                     "paths": [{"teacher": "t", "perspective": "p", "label": "p", "record_key": f"k{i}",
                                "text": f"{i + 5} - 2 = {i + 3}."}]})
    return rows


def _save(rows: list[dict], path: Path) -> Path:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))
    return path


def _finite_checkpoints(run: Path) -> list[str]:
    from safetensors.torch import load_file

    names = []
    for ck in sorted((run / "checkpoints").glob("checkpoint-*")):
        weights = load_file(ck / "adapter_model.safetensors")
        assert all(bool(torch.isfinite(v).all()) for v in weights.values()), f"{ck} holds NaN/inf"
        names.append(ck.name)
    return names


# --------------------------------------------------------------------------- the guards alone


def test_trainable_tokens_counts_every_labels_key():
    batch = {"labels": torch.tensor([[IGNORE_INDEX, 5, 6], [IGNORE_INDEX] * 3]),
             "label_labels": torch.tensor([[7, IGNORE_INDEX]]),
             "chosen_labels": torch.tensor([[1, 2, IGNORE_INDEX]]),
             "input_ids": torch.tensor([[1, 2, 3]]), "answer_mask": torch.ones(1, 3, dtype=torch.bool)}
    assert trainable_tokens(batch) == 2 + 1 + 2
    assert trainable_tokens({"labels": torch.full((2, 4), IGNORE_INDEX)}) == 0


def test_step_guard_refuses_a_step_without_trainable_tokens():
    guard = StepGuard(scaler_active=False, lr=1e-4, max_seq_len=16)
    guard.check(1, 2.5, 10)
    with pytest.raises(CotdistillError, match=r"step 2 had no trainable token.*train.max_seq_len=16"):
        guard.check(2, 0.0, 0)


def test_step_guard_stops_at_the_first_non_finite_loss_without_a_scaler():
    guard = StepGuard(scaler_active=False, lr=1e6, max_seq_len=64)
    guard.check(1, 3.0, 5)
    with pytest.raises(CotdistillError, match=r"loss is inf at step 2.*train.lr \(now 1e\+06\)"):
        guard.check(2, float("inf"), 5)


def test_step_guard_lets_the_fp16_scaler_skip_until_it_is_exhausted():
    guard = StepGuard(scaler_active=True, lr=1e-4, max_seq_len=64)
    for step in range(1, SCALER_PATIENCE + 1):
        guard.check(step, float("nan"), 5)  # skipped by the scaler: allowed
    guard.check(SCALER_PATIENCE + 1, 1.0, 5)  # a finite step resets the count
    for step in range(SCALER_PATIENCE):
        guard.check(100 + step, float("nan"), 5)
    with pytest.raises(CotdistillError, match=f"after {SCALER_PATIENCE} steps skipped"):
        guard.check(200, float("nan"), 5)


def test_check_finite_parameters_names_the_parameter():
    good, bad = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    check_finite_parameters([good], "x")
    frozen = torch.nn.Linear(2, 2)
    with torch.no_grad():
        frozen.weight.fill_(float("inf"))
    frozen.requires_grad_(False)
    check_finite_parameters([frozen], "x")  # only what training changes is checked
    with pytest.raises(CotdistillError, match=r"parameter weight holds NaN/inf.*checkpoint 7 is not written"):
        check_finite_parameters([good, bad], "checkpoint 7")


def test_answer_spans_are_counted_and_most_cut_refused(tiny_model_dir, capsys):
    from cotdistill.models import load_tokenizer
    from cotdistill.pathset.collate import PathCollator

    col = PathCollator(load_tokenizer(tiny_model_dir), max_seq_len=128, student_instruction="Think.",
                       label_vocab=["p"])
    # 2 of 5 questions have a prompt longer than the budget: their paths keep no answer and no target
    assert check_answer_spans(col, _rows(2, 3), "ds", 128) == {"paths": 5, "answer_cut": 2, "no_target": 2}
    assert "2 of 5 paths lose their answer span" in capsys.readouterr().out
    with pytest.raises(CotdistillError, match=r"^ds: train.max_seq_len: 3 of 5 paths lose their answer"):
        check_answer_spans(col, _rows(3, 2), "ds", 128)
    assert check_answer_spans(col, _rows(0, 3), "ds", 128)["answer_cut"] == 0


# --------------------------------------------------------------------------- train() end to end


def test_huge_lr_stops_at_the_first_nan_loss_and_saves_no_nan(tiny_model_dir, tmp_path):
    from cotdistill.train.run import train

    ds = make_dataset(tmp_path / "ds")
    cfg = tiny_config(tiny_model_dir, tmp_path, lr=1e6, save_steps=1, report_to=[], bf16=False)
    with pytest.raises(CotdistillError, match=r"train: loss is nan at step \d+; training diverged") as e:
        train(cfg, ds, tmp_path / "run")
    step = int(str(e.value).split("at step ")[1].split(";")[0])
    assert not (tmp_path / "run" / "student").exists()
    # checkpoints up to the step before stay (finite); the diverged step is never checkpointed
    assert f"checkpoint-{step}" not in _finite_checkpoints(tmp_path / "run")


def test_divergence_in_the_last_step_is_caught_before_the_student_is_written(tiny_model_dir, tmp_path):
    from cotdistill.train.run import train

    ds = make_dataset(tmp_path / "ds")
    # the last update makes the weights blow up; no later loss would show it
    cfg = tiny_config(tiny_model_dir, tmp_path, lr=1e6, max_steps=2, save_steps=10, report_to=[], bf16=False)
    with pytest.raises(CotdistillError, match="trained model's loss is nan"):
        train(cfg, ds, tmp_path / "run")
    assert not (tmp_path / "run" / "student").exists()


def test_a_step_without_trainable_tokens_stops_training(tiny_model_dir, tmp_path, capsys):
    from cotdistill.train.run import train

    ds = _save(_rows(1, 3), tmp_path / "ds")  # 1 of 4 cut: accepted with a warning, then its step is refused
    cfg = tiny_config(tiny_model_dir, tmp_path, max_seq_len=128, questions_per_step=1, grad_accum=1, max_steps=4,
                      save_steps=10, report_to=[])
    with pytest.raises(CotdistillError, match=r"step \d had no trainable token.*train.max_seq_len=128"):
        train(cfg, ds, tmp_path / "run")
    assert "1 of 4 paths lose their answer span" in capsys.readouterr().out
    assert not (tmp_path / "run" / "student").exists()


def test_max_seq_len_that_cuts_every_answer_is_refused_before_writing(tiny_model_dir, tmp_path):
    from cotdistill.train.run import train

    ds = make_dataset(tmp_path / "ds")
    cfg = tiny_config(tiny_model_dir, tmp_path, max_seq_len=16, report_to=[])
    with pytest.raises(CotdistillError, match=r"train.max_seq_len: 18 of 18 paths lose their answer"):
        train(cfg, ds, tmp_path / "run")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- `cotdistill run`: exit code, stages.json


def _store_records(n: int) -> str:
    lines = []
    for i in range(n):
        for persp in ("intuitive", "planning"):
            lines.append(json.dumps({
                "key": f"k{i}-{persp}", "question_id": f"q{i}", "question": f"Sam has {i} cats and gets 2 more. "
                "How many cats?", "gold": str(i + 2), "kind": "number", "source": "jsonl:x", "teacher": "t",
                "teacher_model": "t", "backend": "openai", "perspective": persp, "sample_idx": 0,
                "raw_response": f"{i} + 2 = {i + 2}.\nThe answer is: {i + 2}", "status": "ok", "error": None}))
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("train_over", [{"lr": 1e6}, {"max_seq_len": 16}], ids=["nan-loss", "no-trainable-token"])
def test_run_exits_non_zero_and_marks_nothing_complete(tiny_model_dir, tmp_path, train_over):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "records.jsonl").write_text(_store_records(4))
    (tmp_path / "q.jsonl").write_text('{"id": "a", "question": "Tom has 2 apples and buys 3. How many?", '
                                      '"answer": "5"}\n')
    cfg = {"run": {"name": "r", "output_dir": str(tmp_path / "runs")},
           "data": {"imports": [{"format": "store", "path": str(tmp_path / "src")}]},
           "curate": {"eval_guard": []}, "std_cot": {"paths": "all"},  # the store's paths are perspectives
           "train": {"model": str(tiny_model_dir), "max_steps": 4, "grad_accum": 1, "save_steps": 1, "bf16": False,
                     "max_seq_len": 128, "gradient_checkpointing": False, "report_to": []} | train_over,
           "eval": {"benchmarks": [f"jsonl:{tmp_path / 'q.jsonl'}"], "max_new_tokens": 2},
           "analysis": {"enabled": False}, "report": {"enabled": False}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run([sys.executable, "-m", "cotdistill", "run", str(tmp_path / "c.yaml")], capture_output=True,
                       text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"},
                       timeout=600)
    assert r.returncode == 2, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert ("loss is nan" if "lr" in train_over else "lose their answer") in errors[0]
    state = json.loads((tmp_path / "runs" / "r" / "stages.json").read_text())
    assert state["train"]["complete"] is False and "failed" in state["train"]
    assert "eval_student" not in state
    assert not (tmp_path / "runs" / "r" / "student").exists()
