"""Disk full on the rationale store and on the evaluation output: a real write failure, not a mock.

The CLI runs in a subprocess whose file-size limit (``RLIMIT_FSIZE``, set in ``preexec_fn``, SIGXFSZ ignored)
stops ``records.jsonl`` / ``<bench>.jsonl`` from growing past N bytes, so the kernel refuses the write with
EFBIG exactly where a full disk would refuse it with ENOSPC. Asserted: a non-zero exit with one error line
naming the file and the limit, only whole valid JSON lines on disk (no torn record), and a rerun without the
limit that resumes and completes with every record exactly once (and the same content as an unlimited run).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _synth_helpers import content, make_responder, write_config, write_questions

from cotdistill.utils.openai_server import start_server

pytestmark = pytest.mark.integration

PERSPECTIVES = ["intuitive", "planning"]
CLI = [sys.executable, "-m", "cotdistill"]


def _limit_file_size(n_bytes: int):
    """preexec_fn: files this process writes cannot grow past ``n_bytes``; writes past it fail with EFBIG."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process instead of failing
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))

    return apply


def _run(args: list[str], limit: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COTDISTILL_BACKOFF_BASE_S": "0.02", "TQDM_DISABLE": "1",
           "COTDISTILL_SYNTH_FLUSH_EVERY": "1"}  # one store write per record: the limit lands mid-run
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=300,
                          preexec_fn=_limit_file_size(limit) if limit else None)


def _whole_json_lines(path: Path) -> list[dict]:
    """Every line of ``path``, each a complete JSON object; fails on a torn or garbage line."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path}: torn last line {data[-80:]!r}"
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def _error_line(stderr: str) -> str:
    errs = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errs[0]


def test_store_disk_full_then_resume(tmp_path):
    n_q = 10
    total = n_q * (len(PERSPECTIVES) + 1)  # + the standard path
    q = write_questions(tmp_path / "q.jsonl", n_q)
    with start_server(make_responder()) as srv:
        ref_cfg = write_config(tmp_path / "ref.yaml", questions=q, base_url=srv.url, run_dir=tmp_path / "ref",
                               perspectives=PERSPECTIVES)
        r = _run(["synthesize", str(ref_cfg), "--run-dir", str(tmp_path / "ref")])
        assert r.returncode == 0, r.stderr[-3000:]
        ref_size = (tmp_path / "ref" / "rationales" / "records.jsonl").stat().st_size
        limit = ref_size // 2
        # the limit must bite on the store, not on the small files written beside it
        for small in ("config.yaml", "rationales/synthesis_summary.json"):
            assert (tmp_path / "ref" / small).stat().st_size < limit // 2, small

        cfg = write_config(tmp_path / "c.yaml", questions=q, base_url=srv.url, run_dir=tmp_path / "run",
                           perspectives=PERSPECTIVES)
        records = tmp_path / "run" / "rationales" / "records.jsonl"
        r = _run(["synthesize", str(cfg), "--run-dir", str(tmp_path / "run")], limit=limit)
        assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
        line = _error_line(r.stderr)
        assert str(records) in line and "file size limit" in line, line
        assert records.stat().st_size <= limit
        partial = _whole_json_lines(records)  # no torn record
        assert 0 < len(partial) < total and len({x["key"] for x in partial}) == len(partial)

        r = _run(["synthesize", str(cfg), "--run-dir", str(tmp_path / "run")])  # space is back: resume
        assert r.returncode == 0, r.stderr[-3000:]
    final = _whole_json_lines(records)
    assert final[: len(partial)] == partial  # what was there is kept as it was
    keys = [x["key"] for x in final]
    assert len(keys) == total and len(set(keys)) == total  # every record exactly once
    assert all(x["status"] == "ok" for x in final)
    assert content(records.parent) == content(tmp_path / "ref" / "rationales")  # same as an unlimited run


def _eval_args(model: Path, bench: Path, out: Path) -> list[str]:
    return ["eval", "--model", str(model), "--benchmarks", f"jsonl:{bench}", "--output", str(out),
            "--batch-size", "1", "--max-new-tokens", "8", "--dtype", "float32"]


def test_eval_output_disk_full_then_resume(tmp_path, tiny_model_dir):
    n_q = 40
    bench = tmp_path / "q.jsonl"
    write_questions(bench, n_q)
    r = _run(_eval_args(tiny_model_dir, bench, tmp_path / "ref"))
    assert r.returncode == 0, r.stderr[-3000:]
    ref = {x["id"]: x for x in _whole_json_lines(tmp_path / "ref" / "jsonl-q.jsonl")}
    limit = (tmp_path / "ref" / "jsonl-q.jsonl").stat().st_size // 2
    for small in ("jsonl-q.provenance.json", "jsonl-q.summary.json", "summary.json"):
        assert (tmp_path / "ref" / small).stat().st_size < limit // 2, small

    out = tmp_path / "ev"
    samples = out / "jsonl-q.jsonl"
    r = _run(_eval_args(tiny_model_dir, bench, out), limit=limit)
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    line = _error_line(r.stderr)
    assert str(samples) in line and "file size limit" in line, line
    partial = _whole_json_lines(samples)
    assert 0 < len(partial) < n_q and not (out / "summary.json").exists()

    r = _run(_eval_args(tiny_model_dir, bench, out))
    assert r.returncode == 0, r.stderr[-3000:]
    final = _whole_json_lines(samples)
    assert final[: len(partial)] == partial
    ids = [x["id"] for x in final]
    assert sorted(ids) == sorted(ref) and len(ids) == len(set(ids))  # every sample exactly once
    drop = ("batch_s",)  # wall time differs
    assert {x["id"]: {k: v for k, v in x.items() if k not in drop} for x in final} == \
        {i: {k: v for k, v in x.items() if k not in drop} for i, x in ref.items()}
    summary = json.loads((out / "summary.json").read_text())["benchmarks"][f"jsonl:{bench}"]
    assert summary["complete"] and summary["n"] == n_q
