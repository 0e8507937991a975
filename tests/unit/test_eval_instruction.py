"""Regression: an empty `data.student_instruction` (COMPACT fidelity runs) was replaced by the default instruction
at evaluation, so a student trained without an instruction was scored with one. `cotdistill eval` now also reads
the student's instruction from its provenance, like its task prefix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from cotdistill.config import Config
from cotdistill.data.prompts import DEFAULT_INSTRUCTION
from cotdistill.evaluate.runner import bench_file_stem, recorded_instruction
from cotdistill.pipeline import build_plan
from cotdistill.utils.io import read_jsonl


def _bench(tmp_path):
    p = tmp_path / "bench.jsonl"
    p.write_text(json.dumps({"id": "q1", "question": "What is 2 + 3?", "answer": "5"}) + "\n")
    return f"jsonl:{p}"


def test_pipeline_evaluates_with_an_empty_instruction(tmp_path, tiny_model_dir):
    b = _bench(tmp_path)
    cfg = Config.model_validate({
        "data": {"imports": [{"format": "mcc-kd"}], "student_instruction": ""}, "train": {"model": str(tiny_model_dir)},
        "eval": {"benchmarks": [b], "limit": 1, "max_new_tokens": 2, "batch_size": 1, "dtype": "float32"}})
    stages = {s.name: s for s in build_plan(cfg, tmp_path / "run")}
    assert stages["eval_base"].inputs["instruction"] == ""  # a changed instruction re-runs the evaluations
    assert stages["eval_student"].inputs["instruction"] == ""
    default = {s.name: s for s in build_plan(cfg.model_copy(update={"data": cfg.data.model_copy(
        update={"student_instruction": DEFAULT_INSTRUCTION})}), tmp_path / "run2")}
    assert "instruction" not in default["eval_base"].inputs  # fingerprints of existing runs stay as they were
    stages["eval_base"].run()
    [row] = read_jsonl(tmp_path / "run" / "eval" / "base" / f"{bench_file_stem(b)}.jsonl")
    assert row["prompt"] == "What is 2 + 3?"


def test_cli_eval_reads_the_students_instruction(tmp_path, tiny_model_dir):
    b = _bench(tmp_path)
    student = tmp_path / "student"
    shutil.copytree(tiny_model_dir, student)
    assert recorded_instruction(student) is None  # not a cotdistill student: the standard instruction applies
    (student / "cotdistill_train.json").write_text(json.dumps({"config": {"data": {"student_instruction": ""}}}))
    assert recorded_instruction(student) == ""  # older students: read from the recorded config
    (student / "cotdistill_train.json").write_text(json.dumps({"eval_instruction": ""}))
    assert recorded_instruction(student) == ""
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "cotdistill", "eval", "--model", str(student), "--benchmarks", b,
                        "--limit", "1", "--max-new-tokens", "2", "--dtype", "float32", "--output", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    [row] = read_jsonl(out / f"{bench_file_stem(b)}.jsonl")
    assert row["prompt"] == "What is 2 + 3?"
