"""The openai backend against a real local HTTP server that injects 429 / 5xx / timeouts / garbage / empty replies."""

from __future__ import annotations

from collections import Counter

import pytest
from _synth_helpers import content, make_responder, write_config, write_questions

from cotdistill.config import load_config
from cotdistill.teachers.store import RationaleStore
from cotdistill.teachers.synthesize import synthesize
from cotdistill.utils.openai_server import start_server

pytestmark = pytest.mark.integration

FAULTS = ["429", "500", "timeout", "ok", "garbage", "empty", "503", "429", "garbage", "500"]
BAD = [f for f in FAULTS if f != "ok"]
MARK = {"429": "HTTP 429", "500": "HTTP 500", "503": "HTTP 503", "timeout": "timeout after",
        "garbage": "malformed JSON", "empty": "without choices"}


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setenv("COTDISTILL_BACKOFF_BASE_S", "0.02")


def test_retries_absorb_every_fault_and_record_it(tmp_path):
    q = write_questions(tmp_path / "q.jsonl", 4)
    with start_server(make_responder(), faults=FAULTS, retry_after=0.25, timeout_sleep_s=5.0) as srv:
        # faults go to whichever request arrives next, so one request may draw several in a row (while the
        # others sit in a Retry-After or a timeout): enough retries that no request can run out of them
        cfg = load_config(write_config(tmp_path / "c.yaml", questions=q, base_url=srv.url, run_dir=tmp_path / "run",
                                       perspectives=["intuitive", "planning"], timeout_s=1.0, max_retries=len(BAD)))
        s = synthesize(cfg, tmp_path / "run", progress=False)
        n_http = len(srv.requests)
    assert s["planned"] == 12 and s["complete"] and s["failed"] == 0 and s["done"] == 12
    assert n_http == 12 + len(BAD)  # each injected fault cost exactly one retry
    store = RationaleStore(tmp_path / "run" / "rationales")
    recs = list(store.iter_records())
    errs = [e for r in recs for e in r["usage"].get("attempt_errors", [])]
    assert len(errs) == len(BAD)
    got = Counter(next(f for f, m in MARK.items() if m in e) for e in errs)
    assert got == Counter(BAD)
    assert all(r["usage"]["prompt_tokens"] > 0 and r["usage"]["completion_tokens"] > 0 for r in recs)
    assert sum(r["attempts"] for r in recs) == n_http
    assert all(r["parsed_answer"] is not None for r in recs)
    assert {r["correct"] for r in recs} <= {True, False}
    assert "api_key" not in (tmp_path / "run" / "config.yaml").read_text().replace("api_key_env", "")


def test_failures_are_stored_then_retried_by_the_next_run(tmp_path):
    q = write_questions(tmp_path / "q.jsonl", 4)
    run = tmp_path / "run"
    with start_server(make_responder(), faults=FAULTS, retry_after=0.25, timeout_sleep_s=5.0) as srv:
        cfg = load_config(write_config(tmp_path / "c.yaml", questions=q, base_url=srv.url, run_dir=run,
                                       perspectives=["intuitive", "planning"], timeout_s=1.0, max_retries=0))
        s1 = synthesize(cfg, run, progress=False)
        store = RationaleStore(run / "rationales")
        failed = {k: r["error"] for k, r in store.latest().items() if r["status"] == "error"}
        assert s1["failed"] == len(BAD) == len(failed) and s1["remaining"] == len(BAD) and not s1["complete"]
        assert Counter(next(f for f, m in MARK.items() if m in e) for e in failed.values()) == Counter(BAD)
        # faults are used up: the next run re-sends exactly the failed keys and completes
        s2 = synthesize(cfg, run, progress=False)
        assert (s2["sent"], s2["done"], s2["failed"], s2["complete"]) == (len(BAD), len(BAD), 0, True)
        assert len(srv.requests) == 12 + len(BAD)
    assert store.failed_keys() == set() and len(store.done_keys()) == 12
    lines = list(store.iter_raw())
    assert len(lines) == 12 + len(BAD)  # the error records stay in the append-only file
    # the final content equals a clean run's
    with start_server(make_responder()) as srv2:
        cfg2 = load_config(write_config(tmp_path / "c2.yaml", questions=q, base_url=srv2.url, run_dir=tmp_path / "ref",
                                        perspectives=["intuitive", "planning"], timeout_s=1.0, max_retries=0))
        synthesize(cfg2, tmp_path / "ref", progress=False)
    assert content(run / "rationales") == content(tmp_path / "ref" / "rationales")
