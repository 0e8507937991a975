"""Config and CLI that HF users can read: TrainingArguments aliases, train.trainer_args (checked by `validate`),
run_name, `--set`, `-v/--log-level` (rank 0 alone logs info), and `cotdistill push` with the Hub upload intercepted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cotdistill.config import Config, load_config, parse_overrides
from cotdistill.errors import CotdistillError

HERE = Path(__file__).parent


def _cli(*args, env=None, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotdistill", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, cwd=cwd, timeout=600)


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_hf_names_are_aliases_of_train_keys(tmp_path):
    c = Config.model_validate({"train": {"learning_rate": 1e-4, "gradient_accumulation_steps": 8,
                                         "num_train_epochs": 2, "per_device_train_batch_size": 3,
                                         "lr_scheduler_type": "cosine", "max_length": 512},
                               "mind": {"train": {"learning_rate": 5e-5}}})
    t = c.train
    assert (t.lr, t.grad_accum, t.epochs, t.questions_per_step, t.scheduler, t.max_seq_len) == \
        (1e-4, 8, 2.0, 3, "cosine", 512)
    assert c.effective_train("mind").lr == 5e-5 and c.effective_train("std_cot").lr == 1e-4
    with pytest.raises(ValueError, match="learning_rate: same key as lr"):
        Config.model_validate({"train": {"learning_rate": 1e-4, "lr": 1e-3}})
    with pytest.raises(ValueError, match=r"mind.train: unknown key\(s\) \['learnin_rate'\]"):
        Config.model_validate({"mind": {"train": {"learnin_rate": 1e-4}}})
    # trainer_args of a method override merge key by key
    c = Config.model_validate({"train": {"trainer_args": {"optim": "sgd", "adam_beta2": 0.9}},
                               "mind": {"train": {"trainer_args": {"adam_beta2": 0.95}}}})
    assert c.effective_train("mind").trainer_args == {"optim": "sgd", "adam_beta2": 0.95}


def test_set_overrides_either_spelling(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  lr: 1.0e-5\n  trainer_args: {adam_epsilon: 1e-8}\n")
    assert parse_overrides(["train.learning_rate=1e-4", "method=mind", "a.b={x: [1, 2]}"]) == \
        {"train.learning_rate": 1e-4, "method": "mind", "a.b": {"x": [1, 2]}}
    c = load_config(cfg, overrides=parse_overrides(["train.learning_rate=1e-4"]))
    assert c.train.lr == 1e-4  # the file's `lr` is replaced, not a conflict
    assert c.train.trainer_args == {"adam_epsilon": 1e-8}  # 1e-8 is a number (YAML 1.2), not the text "1e-8"
    cfg.write_text("train:\n  learning_rate: 2.0e-5\n")
    assert load_config(cfg, overrides={"train.lr": 3e-5}).train.lr == 3e-5
    for bad in ("train.lr", "=3", "train..lr=1"):
        with pytest.raises(CotdistillError, match="--set: expected KEY=VALUE"):
            parse_overrides([bad])
    with pytest.raises(CotdistillError, match="--set train.lr: value is not valid YAML"):
        parse_overrides(["train.lr=[1"])


def test_trainer_args_reach_training_arguments_and_errors_are_one_line(tmp_path):
    from cotdistill.train.run import training_arguments

    c = Config.model_validate({"run": {"name": "my-run"}, "train": {
        "learning_rate": 2e-4, "warmup_ratio": 0.1, "trainer_args": {"optim": "sgd", "dataloader_num_workers": 1}}})
    args = training_arguments(c, tmp_path)
    assert (args.run_name, args.learning_rate, args.optim, args.dataloader_num_workers) == ("my-run", 2e-4, "sgd", 1)
    # transformers 5: a warmup_steps value below 1 is a fraction of the training steps
    assert args.warmup_steps == 0.1 and args.get_warmup_steps(200) == 20
    for extra, needle in (({"no_such_arg": 1}, r"train.trainer_args.no_such_arg: not a TrainingArguments argument"),
                          ({"learning_rate": 1.0}, r"train.trainer_args.learning_rate: set train.lr instead"),
                          ({"output_dir": "x"}, r"train.trainer_args.output_dir: set by cotdistill itself"),
                          ({"warmup_steps": 10}, r"train.trainer_args.warmup_steps: set train.warmup_ratio"),
                          ({"optim": "nope"}, r"train.trainer_args \(optim\): TrainingArguments refused it: nope")):
        c.train.trainer_args = extra
        with pytest.raises(CotdistillError, match=needle):
            training_arguments(c, tmp_path, where="c.yaml")
    c.train.warmup_ratio = 0.0
    c.train.trainer_args = {"warmup_steps": 10}  # absolute warmup steps when no ratio is set
    assert training_arguments(c, tmp_path).get_warmup_steps(200) == 10

    cfg = _write(tmp_path / "bad.yaml", {"train": {"trainer_args": {"no_such_arg": 1}}})
    r = _cli("validate", cfg)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith(f"error: {cfg}: train.trainer_args.no_such_arg: not a TrainingArguments argument")
    r = _cli("validate", cfg, "--set", "train.trainer_args={adam_beta2: 0.95}")
    assert r.returncode == 0 and "ok (method=std_cot" in r.stdout


def test_cli_train_with_set_and_verbose(tmp_path, tiny_model_dir):
    """The issue's example, `cotdistill train CONFIG --set train.learning_rate=1e-4 -v`, on the tiny model."""
    sys.path.insert(0, str(HERE))
    from test_trainer import make_dataset

    make_dataset(tmp_path / "ds", n=2)  # outside the run folder, which train claims as cotdistill's
    cfg = _write(tmp_path / "c.yaml", {
        "run": {"name": "r", "output_dir": str(tmp_path / "runs")}, "method": "std_cot", "std_cot": {"paths": "all"},
        "train": {"model": str(tiny_model_dir), "max_steps": 1, "grad_accum": 1, "save_steps": 1, "lr": 1e-3,
                  "max_seq_len": 96, "gradient_checkpointing": False, "report_to": [], "paths_micro_batch": 2,
                  "trainer_args": {"adam_beta2": 0.95}}})
    r = _cli("train", cfg, "--dataset", str(tmp_path / "ds"), "--set", "train.learning_rate=1e-4", "-v")
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "r"
    assert "student:" in r.stdout and "INFO cotdistill.train.run: student saved to" in r.stderr
    args = torch.load(run / "checkpoints" / "checkpoint-1" / "training_args.bin", weights_only=False)
    assert (args.learning_rate, args.run_name, args.adam_beta2) == (1e-4, "r", 0.95)
    # without -v: cotdistill's info lines still show (they used to be lost), the libraries' info lines do not
    r = _cli("--log-level", "warning", "train", cfg)
    assert r.returncode == 0 and "already finished" not in r.stderr
    r = _cli("train", cfg)
    assert r.returncode == 0 and "INFO cotdistill.train.run:" in r.stderr and "already finished" in r.stderr


def test_only_rank_zero_logs_info():
    code = ("import logging; from cotdistill.utils.logs import setup_logging; setup_logging(); "
            "log = logging.getLogger('cotdistill.x'); log.info('progress'); log.warning('trouble')")
    for rank, want in (("0", "progress"), ("1", None)):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "RANK": rank})
        assert "WARNING cotdistill.x: trouble" in r.stderr
        assert ("INFO cotdistill.x: progress" in r.stderr) == (want is not None)


def test_cli_push_uploads_student_or_export_through_hfapi(tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from cotdistill.cli import push_cmd

    calls = []
    # the only stand-in: the Hub cannot be reached from here
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create", repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)) or "url")
    student = tmp_path / "run" / "student"
    student.mkdir(parents=True)
    (student / "adapter_config.json").write_text("{}")
    (student / "README.md").write_text("---\nlibrary_name: peft\n---\n")
    push_cmd(tmp_path / "run", repo_id="me/student", public=False, message=None)
    assert calls[0] == ("create", "me/student", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(student) and calls[1][1]["repo_type"] == "model"
    export = tmp_path / "export"
    export.mkdir()
    (export / "cotdistill_export.json").write_text("{}")
    (export / "README.md").write_text("---\nconfigs: []\n---\n")
    push_cmd(export, repo_id="me/paths", public=True, message="v1")
    assert calls[2] == ("create", "me/paths", {"repo_type": "dataset", "private": False, "exist_ok": True})
    assert calls[3][1]["commit_message"] == "v1"
    with pytest.raises(CotdistillError, match="not a Hub repo id"):
        push_cmd(export, repo_id="bad id!", public=False, message=None)
    with pytest.raises(CotdistillError, match="not a run folder"):
        push_cmd(tmp_path, repo_id="me/x", public=False, message=None)
