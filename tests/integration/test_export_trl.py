"""`cotdistill export`: a curated run's paths as TRL / messages / ShareGPT / Parquet files with a dataset card;
the TRL export loads with `datasets.load_dataset` and trains one step with TRL's SFTTrainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from _synth_helpers import make_responder, write_questions

from cotdistill.config import Config, dump_config
from cotdistill.curate import curate_store
from cotdistill.errors import CotdistillError
from cotdistill.teachers.synthesize import synthesize
from cotdistill.utils.openai_server import start_server

pytestmark = pytest.mark.integration

INSTR = "Think it through, then give the answer."


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder with a live-synthesized store (scripted teacher, 2 perspectives + standard) and its dataset."""
    root = tmp_path_factory.mktemp("export")
    q = write_questions(root / "q.jsonl", 4)
    cfg = Config.model_validate({
        "run": {"name": "exp", "output_dir": str(root / "runs")},
        "data": {"question_pool": [f"jsonl:{q}"], "perspectives": ["intuitive", "planning"],
                 "student_instruction": INSTR},
        "teachers": [{"name": "scripted", "model": "m", "base_url": "http://127.0.0.1:9/v1", "max_new_tokens": 64}],
        "curate": {"eval_guard": [], "dev_fraction": 0.25}, "eval": {"benchmarks": []},
    })
    with start_server(make_responder()) as srv:
        cfg.teachers[0].base_url = srv.url
        assert synthesize(cfg, cfg.run_dir(), progress=False)["complete"]
    (cfg.run_dir() / "config.yaml").write_text(dump_config(cfg))
    curate_store(cfg, cfg.run_dir() / "rationales", cfg.run_dir() / "dataset")
    return cfg.run_dir()


def test_every_format_one_row_per_path_with_role_and_label(run_dir):
    from datasets import load_dataset

    from cotdistill.curate import load_path_dataset
    from cotdistill.curate.export import export_dataset

    dd = load_path_dataset(run_dir / "dataset")
    n_paths = {s: sum(len(r["paths"]) for r in dd[s]) for s in dd}
    row = dd["train"][0]
    path = row["paths"][0]
    for fmt in ("trl", "messages", "sharegpt", "parquet"):
        out = export_dataset(run_dir, fmt)
        assert out == run_dir / "export" / fmt
        ds = load_dataset(str(out))  # the card's `configs` metadata names the split files
        assert {s: len(ds[s]) for s in ds} == n_paths
        card = yaml.safe_load((out / "README.md").read_text().split("---")[1])
        assert card["task_categories"] == ["text-generation"] and "cotdistill" in card["tags"]
        first = next(r for r in ds["train"] if r["record_key"] == path["record_key"])
        assert first["question_id"] == row["question_id"] and first["label"] == path["label"]
        assert "role" in first and first["teacher"] == "scripted"
        user = {"trl": lambda r: r["prompt"][0]["content"], "messages": lambda r: r["messages"][0]["content"],
                "sharegpt": lambda r: r["conversations"][0]["value"], "parquet": lambda r: r["prompt"]}[fmt](first)
        answer = {"trl": lambda r: r["completion"][0]["content"], "messages": lambda r: r["messages"][1]["content"],
                  "sharegpt": lambda r: r["conversations"][1]["value"], "parquet": lambda r: r["completion"]}[fmt](first)
        assert user.startswith(row["question"]) and user.endswith(INSTR)  # the student's prompt, from config.yaml
        assert answer == path["text"] + f"\nThe answer is: {row['gold']}"
    assert export_dataset(run_dir, "trl") == run_dir / "export" / "trl"  # same export again: left as is
    (run_dir / "export" / "other").mkdir()
    (run_dir / "export" / "other" / "notes.txt").write_text("mine")
    with pytest.raises(CotdistillError, match="already holds other files"):
        export_dataset(run_dir, "trl", run_dir / "export" / "other")


def test_cli_export_trl_trains_one_step_with_sft_trainer(run_dir, tmp_path, tiny_model_dir):
    trl = pytest.importorskip("trl", reason="TRL is not installed (pip install 'cotdistill[dev]')")
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "trl-export"
    r = subprocess.run([sys.executable, "-m", "cotdistill", "export", str(run_dir), "--format", "trl", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "cotdistill_export.json").read_text())["format"] == "trl"
    ds = load_dataset(str(out))
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = trl.SFTTrainer(model=model, processing_class=tok, train_dataset=ds["train"], args=trl.SFTConfig(
        output_dir=str(tmp_path / "sft"), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-2,
        report_to="none", use_cpu=True, save_strategy="no", max_length=128))
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss > 0
    assert any(not p.detach().equal(before[n]) for n, p in model.named_parameters())  # it really trained
