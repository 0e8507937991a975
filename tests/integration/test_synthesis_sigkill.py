"""kill -9 `cotdistill synthesize` at random points, re-run each time: nothing lost, nothing duplicated, and the
final store's content is byte-identical to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _synth_helpers import content, make_responder, write_config, write_questions

from cotdistill.teachers.store import RationaleStore
from cotdistill.utils.openai_server import start_server

pytestmark = pytest.mark.integration

PERSPECTIVES = ["intuitive", "planning", "socratic"]


def _cmd(cfg: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "cotdistill", "synthesize", str(cfg), "--run-dir", str(run)]


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _env() -> dict:
    # small group commits (4 records / 0.2 s) so kills land between flushes with unflushed results in memory
    return {**os.environ, "COTDISTILL_BACKOFF_BASE_S": "0.02", "PYTHONUNBUFFERED": "1",
            "COTDISTILL_SYNTH_FLUSH_EVERY": "4", "COTDISTILL_SYNTH_FLUSH_INTERVAL_S": "0.2"}


def run_with_kills(cfg: Path, run: Path, total: int, kills: int, rng: random.Random) -> int:
    """Start synthesis, SIGKILL it after a random number of new records (or a random time), repeat."""
    records = run / "rationales" / "records.jsonl"
    done = 0
    for _ in range(kills * 8):
        if done >= kills:
            break
        before = _lines(records)
        if before >= total:
            break
        p = subprocess.Popen(_cmd(cfg, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
        if rng.random() < 0.2:  # sometimes a blind kill: during start-up, planning or writing
            deadline, target = time.monotonic() + rng.uniform(0.05, 1.5), None
        else:
            # spread the kills over what is left, so group commits (records land in lumps) leave room for them all
            room = max(1, (total - before) // (2 * (kills - done) + 1))
            deadline, target = time.monotonic() + 60, before + rng.randint(1, room)
        while p.poll() is None and time.monotonic() < deadline and (target is None or _lines(records) < target):
            time.sleep(0.002)
        if p.poll() is None:
            p.kill()  # SIGKILL
            p.wait()
            done += 1
    return done


def _check(tmp_path: Path, n_questions: int, kills: int, seed: int) -> None:
    q = write_questions(tmp_path / "q.jsonl", n_questions)
    total = n_questions * (len(PERSPECTIVES) + 1)
    with start_server(make_responder(delay_s=0.1)) as srv:
        cfg_ref = write_config(tmp_path / "ref.yaml", questions=q, base_url=srv.url, run_dir=tmp_path / "ref",
                               perspectives=PERSPECTIVES)
        cfg = write_config(tmp_path / "k.yaml", questions=q, base_url=srv.url, run_dir=tmp_path / "k",
                           perspectives=PERSPECTIVES)
        r = subprocess.run(_cmd(cfg_ref, tmp_path / "ref"), capture_output=True, text=True, env=_env())
        assert r.returncode == 0, r.stderr[-2000:]
        n_kills = run_with_kills(cfg, tmp_path / "k", total, kills, random.Random(seed))
        r = subprocess.run(_cmd(cfg, tmp_path / "k"), capture_output=True, text=True, env=_env())
        assert r.returncode == 0, r.stderr[-2000:]
    assert n_kills >= kills
    store = RationaleStore(tmp_path / "k" / "rationales")
    raw = list(store.iter_raw())
    keys = [x["key"] for x in raw]
    assert len(set(keys)) == total  # 0 lost
    assert len(keys) == total, f"{len(keys) - total} duplicated record(s)"  # 0 duplicated
    assert all(x["status"] == "ok" for x in raw)
    assert content(tmp_path / "k" / "rationales") == content(tmp_path / "ref" / "rationales")  # byte-identical
    summary = json.loads((tmp_path / "k" / "rationales" / "synthesis_summary.json").read_text())
    assert summary["complete"] and summary["remaining"] == 0


def test_sigkill_five_times(tmp_path):
    _check(tmp_path, n_questions=16, kills=5, seed=0)


@pytest.mark.slow
def test_sigkill_twenty_times(tmp_path):
    _check(tmp_path, n_questions=40, kills=20, seed=1)


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    import signal

    q = write_questions(tmp_path / "q.jsonl", 12)
    total = 12 * (len(PERSPECTIVES) + 1)
    records = tmp_path / "k" / "rationales" / "records.jsonl"
    with start_server(make_responder(delay_s=0.05)) as srv:
        cfg = write_config(tmp_path / "k.yaml", questions=q, base_url=srv.url, run_dir=tmp_path / "k",
                           perspectives=PERSPECTIVES, max_concurrency=2)
        # Ctrl-C as in a terminal: a suite started in the background (`pytest &` in a script) inherits SIGINT
        # ignored, and Python then never raises KeyboardInterrupt, so the child gets the default disposition back
        p = subprocess.Popen(_cmd(cfg, tmp_path / "k"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                             text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 60
        while p.poll() is None and _lines(records) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 130, err[-2000:]
        assert "interrupted" in err
        summary = json.loads((tmp_path / "k" / "rationales" / "synthesis_summary.json").read_text())
        assert summary["interrupted"] and 0 < summary["remaining"] < total
        r = subprocess.run(_cmd(cfg, tmp_path / "k"), capture_output=True, text=True, env=_env())
        assert r.returncode == 0, r.stderr[-2000:]
    store = RationaleStore(tmp_path / "k" / "rationales")
    assert len(store.done_keys()) == total and store.failed_keys() == set()
    # requests cut short by Ctrl-C may be stored as errors ("cancelled"), never as duplicates of ok records
    assert sum(1 for x in store.iter_raw() if x["status"] == "ok") == total
