"""No API key ever lands in a run folder: synthesis with a keyed teacher, then every file is searched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _synth_helpers import make_responder, write_config, write_questions

from cotdistill.utils.openai_server import start_server

pytestmark = pytest.mark.integration

SECRET = "sk-cotdistill-test-0123456789abcdef"


def test_api_key_never_written(tmp_path):
    q = write_questions(tmp_path / "q.jsonl", 3)
    run = tmp_path / "runs" / "keyed"
    with start_server(make_responder()) as srv:
        cfg = write_config(tmp_path / "c.yaml", questions=q, base_url=srv.url, run_dir=run,
                           perspectives=["intuitive"], api_key_env="COTDISTILL_TEST_KEY")
        env = {**os.environ, "COTDISTILL_TEST_KEY": SECRET}
        r = subprocess.run([sys.executable, "-m", "cotdistill", "synthesize", str(cfg)], capture_output=True,
                           text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert SECRET not in r.stdout + r.stderr
    files = [p for p in Path(run).rglob("*") if p.is_file()]
    assert any(p.name == "records.jsonl" for p in files) and any(p.name == "config.yaml" for p in files)
    for p in files:
        assert SECRET.encode() not in p.read_bytes(), f"API key found in {p}"
    assert "COTDISTILL_TEST_KEY" in (run / "config.yaml").read_text()  # the env var's name is what is kept


def test_missing_key_env_is_a_one_line_error(tmp_path):
    q = write_questions(tmp_path / "q.jsonl", 1)
    cfg = write_config(tmp_path / "c.yaml", questions=q, base_url="http://127.0.0.1:9/v1",
                       run_dir=tmp_path / "runs" / "r", perspectives=["intuitive"], api_key_env="COTDISTILL_UNSET_KEY")
    env = {k: v for k, v in os.environ.items() if k != "COTDISTILL_UNSET_KEY"}
    r = subprocess.run([sys.executable, "-m", "cotdistill", "synthesize", str(cfg)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2
    assert "COTDISTILL_UNSET_KEY" in r.stderr and r.stderr.strip().count("\n") == 0
