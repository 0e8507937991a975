"""`cotdistill run` end to end on the tiny model with real imported rationales; skip, redo and resume."""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from cotdistill.config import load_config
from cotdistill.pipeline import run_pipeline


def _write_config(tmp_path, tiny_model_dir, **over):
    cfg = {
        "run": {"name": "pipe", "output_dir": str(tmp_path / "runs")},
        "data": {"imports": [{"format": "mcc-kd"}]},
        "curate": {"eval_guard": ["svamp"], "max_paths_per_question": 2, "difficulty": {"target_size": 4}},
        "train": {"model": str(tiny_model_dir), "lr": 1e-3, "max_steps": 2, "grad_accum": 1, "max_seq_len": 384,
                  "gradient_checkpointing": False, "save_steps": 1, "report_to": [], "lora": {"r": 4, "alpha": 8}},
        "method": "std_cot",
        "eval": {"benchmarks": ["svamp"], "limit": 2, "max_new_tokens": 8, "batch_size": 2},
        "analysis": {"n_questions": 2, "pca_dim": 2, "ood_benchmarks": []},
    }
    for k, v in over.items():
        cfg[k] = cfg.get(k, {}) | v if isinstance(v, dict) else v
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_run_all_stages_then_skip_then_redo_only_changed(tmp_path, tiny_model_dir, data_dir):
    path = _write_config(tmp_path, tiny_model_dir)
    cfg = load_config(path)
    plan = run_pipeline(cfg, echo=lambda s: None)
    assert [s for s, _ in plan] == ["rationales", "curate", "eval_base", "train", "eval_student", "analyze", "report"]
    run = cfg.run_dir()
    for rel in ("rationales/records.jsonl", "dataset/data_card.json", "eval/base/summary.json",
                "student/cotdistill_train.json", "eval/std_cot/summary.json", "report.html", "config.yaml"):
        assert (run / rel).exists(), rel
    # second run: everything is current
    assert {st for _, st in run_pipeline(cfg, echo=lambda s: None)} == {"done"}
    # a training change redoes training and what follows, never the data or the base evaluation
    path2 = _write_config(tmp_path, tiny_model_dir, train={"lr": 5e-4})
    status = dict(run_pipeline(load_config(path2), dry_run=True, echo=lambda s: None))
    assert status["rationales"] == status["curate"] == status["eval_base"] == "done"
    assert status["train"] == status["eval_student"] == status["report"] == "changed"
    run_pipeline(load_config(path2), echo=lambda s: None)
    stale = [p.name for p in run.iterdir() if ".stale-" in p.name]
    assert any(n.startswith("student.stale-") for n in stale)  # the old student is kept, not deleted


def test_kill_during_training_resumes_without_redoing_data_or_eval(tmp_path, tiny_model_dir, data_dir):
    path = _write_config(tmp_path, tiny_model_dir, train={"max_steps": 40, "save_steps": 2},
                         analysis={"enabled": False}, report={"enabled": False})
    run = load_config(path).run_dir()
    cmd = [sys.executable, "-m", "cotdistill", "run", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and not list((run / "checkpoints").glob("checkpoint-*/cotdistill_method.pt")):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((run / "stages.json").read_text())
    assert state["curate"]["complete"] and state["eval_base"]["complete"] and not state["train"]["complete"]
    before = {k: v["started"] for k, v in state.items() if v["complete"]}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stdout + r.stderr
    state = json.loads((run / "stages.json").read_text())
    assert all(state[k]["started"] == t for k, t in before.items())  # not re-run
    assert state["train"]["complete"] and state["eval_student"]["complete"]


def test_rationale_nll_stages_added_to_a_finished_run_rerun_nothing_else(tmp_path, tiny_model_dir, data_dir):
    """Issue 14: held-out rationale NLL for base and student; turning it on later re-curates (its questions are
    guarded and named in the data card) but never regenerates an evaluation."""
    train = {"model": str(tiny_model_dir), "lr": 1e-2, "max_steps": 2, "grad_accum": 1, "max_seq_len": 512,
             "gradient_checkpointing": False, "save_steps": 1, "report_to": [], "lora": {"r": 4, "alpha": 8}}
    path = _write_config(tmp_path, tiny_model_dir, analysis={"enabled": False}, report={"enabled": False}, train=train)
    cfg = load_config(path)
    run_pipeline(cfg, echo=lambda s: None)
    nll = {"set": "mcc-kd:svamp:dev", "max_per_question": 1, "max_seq_len": 512}
    path2 = _write_config(tmp_path, tiny_model_dir, analysis={"enabled": False}, report={"enabled": False},
                          eval={"rationale_nll": nll}, curate={"eval_guard_action": "drop"}, train=train)
    cfg2 = load_config(path2)
    status = dict(run_pipeline(cfg2, dry_run=True, echo=lambda s: None))
    assert status == {"rationales": "done", "curate": "changed", "eval_base": "done", "nll_base": "todo",
                      "train": "changed", "eval_student": "changed", "nll_student": "todo"}
    run_pipeline(cfg2, echo=lambda s: None)
    run = cfg2.run_dir()
    card = json.loads((run / "dataset" / "data_card.json").read_text())
    assert card["heldout_rationale_nll"]["set"] == "mcc-kd:svamp:dev"
    assert card["heldout_rationale_nll"]["questions"] == 94  # svamp:dev: 100 questions, 94 with a correct GPT-3.5 sample
    base = json.loads((run / "nll" / "base" / "rationale_nll-mcc-kd-svamp-dev.summary.json").read_text())
    student = json.loads((run / "nll" / "std_cot" / "rationale_nll-mcc-kd-svamp-dev.summary.json").read_text())
    assert base["n_questions"] == student["n_questions"] == card["heldout_rationale_nll"]["questions"]
    assert base["mean_nll"] != student["mean_nll"] and base["adapter"] is None and student["adapter"]
