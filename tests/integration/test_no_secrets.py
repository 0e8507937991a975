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


# --------------------------------------------------------------------------- issue 17: credentials inside URLs

URL_SECRET = "pw-cotdistill-0123456789"


def _files_without(root: Path, secret: str) -> list[Path]:
    files = [p for p in Path(root).rglob("*") if p.is_file()]
    for p in files:
        assert secret.encode() not in p.read_bytes(), f"credential found in {p}"
    return files


@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_url_credentials_never_written_by_synthesis(tmp_path, form):
    """`http://user:key@host/v1` (or `?api_key=key`) reached config.yaml, the store and the synthesis summary."""
    q = write_questions(tmp_path / "q.jsonl", 2)
    run = tmp_path / "runs" / "url"
    with start_server(make_responder()) as srv:
        url = (srv.url.replace("http://", f"http://user:{URL_SECRET}@") if form == "userinfo"
               else srv.url + f"?api_key={URL_SECRET}")
        cfg = write_config(tmp_path / "c.yaml", questions=q, base_url=url, run_dir=run, perspectives=["intuitive"])
        r = subprocess.run([sys.executable, "-m", "cotdistill", "synthesize", str(cfg)], capture_output=True,
                           text=True, env=os.environ.copy())
    assert URL_SECRET not in r.stdout + r.stderr
    files = _files_without(run, URL_SECRET)
    names = {p.name for p in files}
    assert {"records.jsonl", "config.yaml", "synthesis_summary.json"} <= names, (names, r.stderr[-2000:])
    assert "***" in (run / "config.yaml").read_text()  # the URL is kept, its credential masked


def test_url_credentials_never_in_an_error_or_failed_records(tmp_path):
    """A credentialed endpoint that refuses connections: error line, records and summary stay clean."""
    q = write_questions(tmp_path / "q.jsonl", 1)
    run = tmp_path / "runs" / "down"
    cfg = write_config(tmp_path / "c.yaml", questions=q, base_url=f"http://admin:{URL_SECRET}@127.0.0.1:9/v1",
                       run_dir=run, perspectives=["intuitive"], max_retries=0, timeout_s=2.0)
    r = subprocess.run([sys.executable, "-m", "cotdistill", "synthesize", str(cfg)], capture_output=True, text=True,
                       env=os.environ.copy())
    assert r.returncode != 0
    assert URL_SECRET not in r.stdout + r.stderr, r.stderr[-2000:]
    _files_without(run, URL_SECRET)


def test_url_credentials_never_written_by_eval(tmp_path):
    """`cotdistill eval --backend openai --base-url http://user:key@host/v1`: provenance and summaries stay clean."""
    q = write_questions(tmp_path / "q.jsonl", 2)
    out = tmp_path / "ev"
    with start_server(make_responder()) as srv:
        url = srv.url.replace("http://", f"http://user:{URL_SECRET}@")
        r = subprocess.run([sys.executable, "-m", "cotdistill", "eval", "--model", "local", "--backend", "openai",
                            "--base-url", url, "--benchmarks", f"jsonl:{q}", "--output", str(out),
                            "--max-new-tokens", "16"], capture_output=True, text=True, env=os.environ.copy())
    assert r.returncode == 0, r.stderr[-2000:]
    assert URL_SECRET not in r.stdout + r.stderr
    files = _files_without(out, URL_SECRET)
    assert any(p.name == "summary.json" for p in files)
