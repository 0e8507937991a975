"""`cotdistill run` under a multi-process launch: rank 0 alone runs data/eval/report, every rank trains,
the other ranks wait on stages.json (and stop when rank 0 records a failure)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cotdistill.errors import CotdistillError
from cotdistill.pipeline import wait_for_stages
from cotdistill.utils import dist
from cotdistill.utils.io import atomic_write_json

HERE = Path(__file__).parent


def _write_later(path: Path, state: dict, delay: float) -> threading.Thread:
    t = threading.Timer(delay, atomic_write_json, args=(path, state))
    t.start()
    return t


def test_rank_from_launcher_env(monkeypatch):
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert (dist.rank(), dist.world_size(), dist.is_main()) == (0, 1, True)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (dist.rank(), dist.local_rank(), dist.world_size(), dist.is_main()) == (3, 1, 4, False)
    monkeypatch.delenv("RANK")
    assert dist.rank() == 1  # LOCAL_RANK alone (single node)
    assert dist.process_start_time() <= time.time()


def test_wait_returns_when_complete_and_raises_on_failure(tmp_path):
    p = tmp_path / "stages.json"
    atomic_write_json(p, {"curate": {"fingerprint": "f1", "complete": True}})
    assert wait_for_stages(tmp_path, {"curate": "f1"}, poll_s=0.01)["curate"]["complete"]
    # started: an entry that has begun (not complete) with the expected fingerprint is enough
    atomic_write_json(p, {"curate": {"fingerprint": "f1", "complete": True},
                          "train": {"fingerprint": "t1", "complete": False}})
    wait_for_stages(tmp_path, {"curate": "f1"}, started={"train": "t1"}, poll_s=0.01)
    # rank 0 failed in this launch
    atomic_write_json(p, {"curate": {"fingerprint": "f1", "complete": False, "failed": "ValueError: boom",
                                     "failed_at": time.time()}})
    with pytest.raises(CotdistillError, match=r"stages\.json: curate: rank 0 failed: ValueError: boom"):
        wait_for_stages(tmp_path, {"curate": "f1"}, poll_s=0.01)


def test_wait_ignores_old_failure_and_other_fingerprints_then_sees_completion(tmp_path):
    p = tmp_path / "stages.json"
    now = time.time()
    # a failure from an earlier launch (before `since`) and a complete stage with an old fingerprint
    atomic_write_json(p, {"rationales": {"fingerprint": "r0", "complete": True},
                          "curate": {"fingerprint": "f1", "complete": False, "failed": "x", "failed_at": now - 60}})
    notes: list[str] = []
    t = _write_later(p, {"rationales": {"fingerprint": "r1", "complete": True},
                         "curate": {"fingerprint": "f1", "complete": True}}, 0.4)
    t0 = time.time()
    state = wait_for_stages(tmp_path, {"rationales": "r1", "curate": "f1"}, since=now, poll_s=0.02,
                            progress_s=0.1, echo=notes.append)
    t.join()
    assert state["curate"]["complete"] and time.time() - t0 >= 0.35
    assert notes and "waiting for rank 0 to finish rationales" in notes[0]


def test_wait_raises_when_an_old_entry_turns_failed(tmp_path):
    # the entry changes while waiting: rank 0 re-ran the stage and failed again (even with skewed clocks)
    p = tmp_path / "stages.json"
    atomic_write_json(p, {"curate": {"fingerprint": "f1", "complete": False, "failed": "old", "failed_at": 1.0}})
    t = _write_later(p, {"curate": {"fingerprint": "f1", "complete": False, "failed": "new", "failed_at": 2.0}}, 0.2)
    with pytest.raises(CotdistillError, match="rank 0 failed: new"):
        wait_for_stages(tmp_path, {"curate": "f1"}, since=time.time(), poll_s=0.02)
    t.join()


def test_rank0_records_a_failed_stage(tmp_path, tiny_model_dir):
    """The stage that raises is marked failed in stages.json (what waiting ranks read), then the error goes on."""
    from test_pipeline import _write_config

    from cotdistill.config import load_config
    from cotdistill.pipeline import run_pipeline

    path = _write_config(tmp_path, tiny_model_dir, data={"imports": [{"format": "mcc-kd",
                                                                      "path": str(tmp_path / "missing")}]})
    cfg = load_config(path)
    with pytest.raises(CotdistillError):
        run_pipeline(cfg, echo=lambda s: None)
    rec = json.loads((cfg.run_dir() / "stages.json").read_text())["rationales"]
    assert not rec["complete"] and rec["failed"].startswith("CotdistillError: ") and rec["failed_at"] >= rec["started"]
    with pytest.raises(CotdistillError, match="rationales: rank 0 failed: CotdistillError"):
        wait_for_stages(cfg.run_dir(), {"rationales": rec["fingerprint"]}, since=rec["started"], poll_s=0.01)


_WORKER = """
import os, sys
sys.path.insert(0, {here!r})
from cotdistill.config import load_config
from cotdistill.pipeline import run_pipeline
log = open(os.path.join({out!r}, f"rank{{os.environ['RANK']}}.log"), "a")
def echo(s):
    log.write(s + "\\n"); log.flush()
run_pipeline(load_config({cfg!r}), echo=echo)
echo("RETURNED")
"""


def _launch_two_ranks(tmp_path: Path, source: str) -> None:
    """Run ``source`` as a script on 2 gloo ranks (torch.distributed.run); both must exit 0."""
    from test_ddp import _free_port

    worker = tmp_path / "worker.py"
    worker.write_text(source)
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(worker)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_run_pipeline_two_ranks(tmp_path, tiny_model_dir, data_dir):
    from test_pipeline import _write_config

    from cotdistill.config import load_config

    path = _write_config(tmp_path, tiny_model_dir, analysis={"enabled": False})
    _launch_two_ranks(tmp_path, _WORKER.format(here=str(HERE), out=str(tmp_path), cfg=str(path)))
    log0, log1 = ((tmp_path / f"rank{r}.log").read_text() for r in (0, 1))
    for st in ("rationales", "curate", "eval_base", "train", "eval_student", "report"):
        assert log0.count(f"[{st}] running") == 1, (st, log0)
        assert f"[{st}]" not in log1, log1  # rank 1 ran nothing of its own (it trained silently inside train)
    assert log0.endswith("RETURNED\n") and log1.endswith("RETURNED\n")
    run = load_config(path).run_dir()
    state = json.loads((run / "stages.json").read_text())
    assert list(state) == ["rationales", "curate", "eval_base", "train", "eval_student", "report"]
    assert all(v["complete"] and "failed" not in v for v in state.values())
    train = json.loads((run / "student" / "cotdistill_train.json").read_text())
    assert train["world_size"] == 2  # both ranks trained together
    base = [json.loads(x) for x in (run / "eval" / "base" / "svamp.jsonl").read_text().splitlines()]
    assert len(base) == 2  # the base evaluation ran once (limit 2), not once per rank


_COMPARE_WORKER = """
import os, sys, time
import cotdistill.train.dispatch as R
from cotdistill.compare import run_compare
from cotdistill.config import load_config
log = open(os.path.join({out!r}, f"rank{{os.environ['RANK']}}.log"), "a")
def echo(s):
    log.write(s + "\\n"); log.flush()
_train = R.train_method
def train_method(*a, **k):  # when each rank enters a cell's training (the pipeline imports it at call time)
    echo(f"TRAIN {{time.time()}}")
    return _train(*a, **k)
R.train_method = train_method
t = run_compare(load_config({cfg!r}), echo=echo)
echo(f"RETURNED {{t is not None}}")
"""


@pytest.mark.slow
def test_compare_two_ranks_two_cells(tmp_path, tiny_model_dir, data_dir):
    """Two cells in a row: rank 1 waits out cell 1's evaluation before entering cell 2's training."""
    from test_pipeline import _write_config

    from cotdistill.config import load_config

    path = _write_config(tmp_path, tiny_model_dir, compare={"methods": ["std_cot"], "seeds": [0, 1]})
    _launch_two_ranks(tmp_path, _COMPARE_WORKER.format(out=str(tmp_path), cfg=str(path)))
    log0, log1 = ((tmp_path / f"rank{r}.log").read_text() for r in (0, 1))
    assert log0.count("[curate] running") == 1 and log0.count("[train] running") == 2
    assert log0.count("[eval_student] running") == 2 and log0.endswith("RETURNED True\n")
    lines1 = log1.splitlines()
    assert [x.split()[0] for x in lines1] == ["TRAIN", "TRAIN", "RETURNED"] and lines1[-1] == "RETURNED False"
    run = load_config(path).run_dir()
    # rank 1 entered cell 2's training only after rank 0 had evaluated cell 1 (else its first collective
    # would wait on rank 0 for the whole evaluation and time out on a long one)
    ev = json.loads((run / "std_cot-s0" / "stages.json").read_text())["eval_student"]
    assert float(lines1[1].split()[1]) >= ev["started"] + ev["seconds"] - 0.1
    assert (run / "compare.md").is_file()
    for seed in (0, 1):
        cell = json.loads((run / f"std_cot-s{seed}" / "stages.json").read_text())
        assert cell["train"]["complete"] and cell["eval_student"]["complete"]
        assert json.loads((run / f"std_cot-s{seed}" / "student" / "cotdistill_train.json").read_text())[
            "world_size"] == 2
