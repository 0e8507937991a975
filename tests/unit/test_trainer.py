"""DistillTrainer + train(): dynamics.jsonl, signals, method state in checkpoints, finished-run refusal,
and kill-and-resume (SIGKILL right after a checkpoint, rerun continues with matching losses)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from cotdistill.config import Config
from cotdistill.methods.std_cot import StdCotMethod
from cotdistill.train.trainer import METHOD_STATE_NAME, average_signals, flatten_signals, last_complete_checkpoint
from cotdistill.utils.io import read_jsonl

HERE = Path(__file__).parent


class CountingMethod(StdCotMethod):
    """Std-CoT with state (a micro-step counter) and a per-label signal, to test checkpointing and logging."""

    name = "std_cot"
    loaded: dict | None = None

    def __init__(self, config):
        super().__init__(config)
        self.calls = 0

    def training_step(self, model, batch, backward):
        loss, logs = super().training_step(model, batch, backward)
        self.calls += 1
        labels = self.vocab or []
        logs["per_label"] = {labels[s]: 1.0 for s in batch["path_slot"][batch["path_valid"]].tolist()}
        logs["calls"] = float(self.calls)
        return loss, logs

    vocab: list[str] | None = ["decomposition", "intuitive", "planning"]

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]
        CountingMethod.loaded = dict(state)


def make_dataset(path: Path, n: int = 6) -> Path:
    """A small path dataset (HF DatasetDict on disk) in the curated row format."""
    from datasets import Dataset, DatasetDict

    labels = ["decomposition", "intuitive", "planning"]
    rows = []
    for i in range(n):
        rows.append({
            "question_id": f"q{i}", "question": f"Jack had {i + 5} apples and ate 2. How many are left?",
            "gold": str(i + 3), "kind": "number", "source": "svamp:train", "difficulty": None,
            "paths": [{"teacher": "t", "perspective": lab, "label": lab, "record_key": f"{i}{lab}",
                       "text": f"{i + 5} - 2 = {i + 3}." + " Then we are done." * j} for j, lab in enumerate(labels)],
        })
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(path))
    return path


def tiny_config(model_dir, root: Path, **train) -> Config:
    t = {"model": str(model_dir), "max_steps": 4, "grad_accum": 2, "save_steps": 2, "lr": 1e-3, "max_seq_len": 96,
         "gradient_checkpointing": False, "report_to": ["tensorboard"], "paths_micro_batch": 2} | train
    return Config.model_validate({"method": "std_cot", "std_cot": {"paths": "all"},  # the trainer's multi-path paths
                                  "run": {"name": "r", "output_dir": str(root)}, "train": t})


def use_counting_method(monkeypatch):
    import cotdistill.methods.registry as reg

    monkeypatch.setattr(reg, "get_method", lambda name, cfg: CountingMethod(cfg))


def test_signal_helpers():
    sigs = [{"ce": 1.0, "alpha": {"a": 0.2, "b": 0.8}, "v": [1.0, 3.0]}, {"ce": 3.0, "alpha": {"a": 0.4}, "v": [3.0, 5.0]}]
    avg = average_signals(sigs)
    assert avg == {"ce": 2.0, "alpha": {"a": pytest.approx(0.3), "b": 0.8}, "v": [2.0, 4.0]}
    assert flatten_signals(avg) == {"signals/ce": 2.0, "signals/alpha/a": pytest.approx(0.3), "signals/alpha/b": 0.8,
                                    "signals/v/0": 2.0, "signals/v/1": 4.0}


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, tmp_path_factory):
    """An uninterrupted 4-step run (2 micro-steps each), checkpoints every 2 steps."""
    from cotdistill.train.run import train

    root = tmp_path_factory.mktemp("full")
    ds = make_dataset(root / "ds")
    mp = pytest.MonkeyPatch()
    use_counting_method(mp)
    try:
        out = train(tiny_config(tiny_model_dir, root), ds, root / "run")
    finally:
        mp.undo()
    return root, ds, out


def test_train_outputs(full_run, caplog, monkeypatch, tiny_model_dir):
    root, ds, student = full_run
    run = root / "run"
    lines = list(read_jsonl(run / "dynamics.jsonl"))
    assert [r["step"] for r in lines] == [1, 2, 3, 4]
    for r in lines:
        assert set(r) == {"step", "epoch", "loss", "lr", "signals"}
        assert r["lr"] == pytest.approx(1e-3)
        # the step loss is the mean of its 2 micro-step losses = the mean of the method's ce signal
        assert r["loss"] == pytest.approx(r["signals"]["ce"], rel=1e-5)
        assert set(r["signals"]["per_label"]) == {"decomposition", "intuitive", "planning"}
    assert [r["signals"]["calls"] for r in lines] == [1.5, 3.5, 5.5, 7.5]  # averaged over micro-steps
    assert [round(r["epoch"], 3) for r in lines] == [0.333, 0.667, 1.0, 1.333]
    # method state saved with each checkpoint
    ck = last_complete_checkpoint(run / "checkpoints")
    assert ck.endswith("checkpoint-4")
    assert torch.load(Path(ck) / METHOD_STATE_NAME)["calls"] == 8
    # final adapter + model card + provenance; TensorBoard events
    assert (student / "adapter_config.json").is_file() and (student / "README.md").is_file()
    prov = json.loads((student / "cotdistill_train.json").read_text())
    assert prov["method"] == "std_cot" and prov["global_step"] == 4 and prov["config"]["train"]["lr"] == 1e-3
    assert "std_cot" in (student / "README.md").read_text()
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "logs").rglob("*"))
    # a finished run is never retrained or overwritten
    from cotdistill.train.run import train

    use_counting_method(monkeypatch)
    with caplog.at_level("INFO", logger="cotdistill"):
        assert train(tiny_config(tiny_model_dir, root), ds, run) == student
    assert "already finished" in caplog.text
    assert len(list(read_jsonl(run / "dynamics.jsonl"))) == 4


_KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {here!r})
from transformers import TrainerCallback
import cotdistill.methods.registry as reg
from test_trainer import CountingMethod, tiny_config
from cotdistill.train.run import train
reg.get_method = lambda name, cfg: CountingMethod(cfg)

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kw):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)

train(tiny_config({model!r}, __import__('pathlib').Path({root!r})), {ds!r}, {run!r}, callbacks=[KillAfterSave()])
"""


def test_kill_and_resume_matches_uninterrupted(full_run, tiny_model_dir, tmp_path, monkeypatch):
    from cotdistill.train.run import train

    root, ds, _ = full_run
    run = tmp_path / "run"
    script = _KILL_SCRIPT.format(here=str(HERE), model=str(tiny_model_dir), root=str(tmp_path), ds=str(ds),
                                 run=str(run))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run / "student").exists()
    assert last_complete_checkpoint(run / "checkpoints").endswith("checkpoint-2")
    assert [r["step"] for r in read_jsonl(run / "dynamics.jsonl")] == [1, 2]

    use_counting_method(monkeypatch)
    CountingMethod.loaded = None
    student = train(tiny_config(tiny_model_dir, tmp_path), ds, run)
    assert CountingMethod.loaded == {"calls": 4}  # method state restored from checkpoint-2
    resumed = list(read_jsonl(run / "dynamics.jsonl"))
    ref = list(read_jsonl(root / "run" / "dynamics.jsonl"))
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    for a, b in zip(resumed, ref):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    assert json.loads((student / "cotdistill_train.json").read_text())["global_step"] == 4


def test_eval_loss_and_length_grouped_batches(tiny_model_dir, tmp_path):
    """Q=2 questions per micro-step come length-grouped; evaluate() reports the method's loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from cotdistill.curate import load_path_dataset
    from cotdistill.pathset.collate import PathCollator, build_label_vocab
    from cotdistill.train.run import prepare_dataset
    from cotdistill.train.trainer import DistillTrainer

    dd = load_path_dataset(make_dataset(tmp_path / "ds", n=8))
    cfg = tiny_config(tiny_model_dir, tmp_path)
    method = StdCotMethod(cfg)
    ds = prepare_dataset(dd["train"], method)
    assert ds["_row"] == list(range(8)) and all(n > 0 for n in ds["length"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    col = PathCollator(tok, max_seq_len=96, student_instruction="", label_vocab=build_label_vocab(ds))
    args = TrainingArguments(output_dir=str(tmp_path / "ck"), per_device_train_batch_size=2, per_device_eval_batch_size=2,
                             gradient_accumulation_steps=2, train_sampling_strategy="group_by_length",
                             remove_unused_columns=False, prediction_loss_only=True, report_to="none", use_cpu=True)
    trainer = DistillTrainer(model=model, args=args, train_dataset=ds, eval_dataset=ds, data_collator=col,
                             processing_class=tok, method=method)
    batches = list(trainer.get_train_dataloader())
    assert len(batches) == 4 and all(b["question_row"].numel() == 2 for b in batches)
    assert sorted(r for b in batches for r in b["question_row"].tolist()) == list(range(8))
    model.eval()
    with torch.no_grad():
        expected = sum(method.compute_loss(model, col([ds[i], ds[i + 1]]))[0].item() for i in (0, 2, 4, 6)) / 4
    assert trainer.evaluate()["eval_loss"] == pytest.approx(expected, rel=1e-4)


def test_console_progress_hides_per_label_signals():
    from types import SimpleNamespace

    from cotdistill.train.trainer import _ConsoleProgress

    written = []
    cb = _ConsoleProgress()
    cb.training_bar = SimpleNamespace(write=written.append)
    logs = {"loss": 0.5, "learning_rate": 1e-4, "signals/alpha/gpt-4o": 0.3}
    cb.on_log(None, SimpleNamespace(is_world_process_zero=True), None, logs=logs)
    assert written and "loss" in written[0] and "signals/" not in written[0]
    assert "signals/alpha/gpt-4o" in logs  # the loggers' copy is untouched
