"""Synthesis planning and a full resumable run with the transformers backend on the tiny model."""

from __future__ import annotations

import json

import pytest

from cotdistill.config import Config
from cotdistill.errors import CotdistillError
from cotdistill.teachers.store import RationaleStore
from cotdistill.teachers.synthesize import load_question_pool, plan, synthesize


@pytest.fixture
def qfile(tmp_path):
    p = tmp_path / "q.jsonl"
    rows = [{"id": f"q{i}", "question": f"Tom has {i} apples and buys 2 more. How many apples?", "answer": str(i + 2)}
            for i in range(5)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def cfg(qfile, tmp_path, **teacher):
    t = {"name": "tiny", "backend": "transformers", "model": "unused", "max_new_tokens": 6, "batch_size": 4,
         **teacher}
    return Config.model_validate({
        "run": {"name": "r", "output_dir": str(tmp_path / "runs")},
        "data": {"question_pool": [f"jsonl:{qfile}"], "max_questions": 3,
                 "perspectives": ["intuitive", "socratic"], "standard_path": "plain"},
        "teachers": [t],
    })


def test_plan_counts_keys_and_prompts(qfile, tmp_path):
    c = cfg(qfile, tmp_path, samples_per_perspective=2)
    qs = load_question_pool(c)
    assert len(qs) == 3 and qs == load_question_pool(c)  # seeded sample, stable
    items = plan(c)
    assert len(items) == 3 * 3 * 2  # questions x (2 perspectives + standard) x samples
    assert len({it.request.key for it in items}) == len(items)
    persp = {it.record["perspective"] for it in items}
    assert persp == {"intuitive", "socratic", "standard"}
    assert {it.record["role"] for it in items} == {"perspective:intuitive", "perspective:socratic", "standard"}
    std = next(it for it in items if it.record["perspective"] == "standard")
    assert "solve the problem step by step." in std.request.messages[-1]["content"]
    # sampling params and seed change every key; the teacher name does not
    other = plan(cfg(qfile, tmp_path, samples_per_perspective=2, temperature=0.3))
    assert not {it.request.key for it in items} & {it.request.key for it in other}
    renamed = plan(cfg(qfile, tmp_path, samples_per_perspective=2, name="renamed"))
    assert {it.request.key for it in items} == {it.request.key for it in renamed}
    # per-request seeds differ between samples of the same prompt
    assert len({it.request.seed for it in items}) == len(items)


def test_plan_teacher_subset_and_errors(qfile, tmp_path):
    assert {it.record["perspective"] for it in plan(cfg(qfile, tmp_path, perspectives=["standard"]))} == {"standard"}
    with pytest.raises(CotdistillError, match=r"teachers\[0\].perspectives: 'planning'"):
        plan(cfg(qfile, tmp_path, perspectives=["planning"]))
    c = cfg(qfile, tmp_path, backend="openai", base_url="http://127.0.0.1:9/v1", api_key_env="COTDISTILL_NO_SUCH_KEY")
    with pytest.raises(CotdistillError, match=r"teachers\[0\]: api_key_env: environment variable COTDISTILL_NO_SUCH_KEY"):
        synthesize(c, tmp_path / "run", progress=False)


def test_transformers_backend_run_resumes_and_scores(qfile, tmp_path, tiny_model_dir):
    c = cfg(qfile, tmp_path, model=str(tiny_model_dir))
    run = tmp_path / "run"
    s = synthesize(c, run, progress=False)
    assert (s["planned"], s["done"], s["failed"], s["remaining"]) == (9, 9, 0, 0) and s["complete"]
    assert (run / "config.yaml").is_file() and (run / "rationales" / "synthesis_summary.json").is_file()
    store = RationaleStore(run / "rationales")
    recs = list(store.iter_records())
    assert len(recs) == 9
    r = recs[0]
    assert r["backend"] == "transformers" and r["teacher"] == "tiny" and r["status"] == "ok"
    assert isinstance(r["raw_response"], str) and r["correct"] in (True, False)
    assert r["usage"]["completion_tokens"] <= 6 and r["prompt"][0]["role"] == "system"
    assert r["provenance"]["model_sha"] and r["extractor_version"]
    # resume: nothing to send
    s2 = synthesize(c, run, progress=False)
    assert (s2["already_done"], s2["sent"], s2["done"]) == (9, 0, 0)
    assert sum(1 for _ in store.iter_raw()) == 9


def test_vllm_backend_absent_is_a_clear_error(qfile, tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm installed")
    c = cfg(qfile, tmp_path, backend="vllm")
    with pytest.raises(CotdistillError, match=r"teachers\[0\]: backend: vllm is not installed"):
        synthesize(c, tmp_path / "run", progress=False)


def test_retry_after_and_backoff():
    import email.utils
    import time

    from cotdistill.utils.openai_client import ChatClient, parse_retry_after

    assert parse_retry_after({"retry-after": "2"}) == 2.0 and parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after(None) is None
    assert parse_retry_after({"retry-after": "2", "retry-after-ms": "250"}) == 0.25  # the finer header wins
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < parse_retry_after({"retry-after": later}) <= 30
    b = ChatClient("m", "http://127.0.0.1:9/v1", backoff_base_s=1.0, backoff_max_s=8.0)
    for attempt in range(6):
        cap = min(8.0, 2.0**attempt)
        assert all(cap / 2 <= b.delay(attempt, None) <= cap for _ in range(50))
    assert 3.0 <= b.delay(0, 3.0) <= 3.1  # the server's Retry-After wins over backoff
    assert 120.0 <= b.delay(0, 1e6) <= 120.1  # ... capped at retry_after_max_s


def test_second_concurrent_run_is_refused(qfile, tmp_path):
    import fcntl

    c = cfg(qfile, tmp_path)
    lock_dir = tmp_path / "run" / "rationales"
    lock_dir.mkdir(parents=True)
    with open(lock_dir / ".synthesize.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(CotdistillError, match="another 'cotdistill synthesize'"):
            synthesize(c, tmp_path / "run", progress=False)


def test_pool_drops_eval_questions(data_dir, tmp_path):
    c = Config.model_validate({"data": {"question_pool": ["svamp:all"]}, "curate": {"eval_guard": ["svamp"]},
                               "teachers": [{"name": "t", "model": "m", "base_url": "http://127.0.0.1:9/v1"}]})
    pool = load_question_pool(c)
    from cotdistill.data.registry import load_benchmark

    held_out = {ex.id for ex in load_benchmark("svamp")}
    assert len(pool) == 700 and not {ex.id for ex in pool} & held_out
    c.data.decontaminate = False
    assert len(load_question_pool(c)) == 1000


def test_openai_backend_bounds_concurrency_and_returns_every_result_once():
    import threading
    import time

    from cotdistill.teachers.backends import GenRequest
    from cotdistill.teachers.backends.openai_backend import OpenAITeacherBackend
    from cotdistill.utils.openai_server import start_server

    lock = threading.Lock()
    state = {"now": 0, "max": 0, "served": 0, "delay": 0.02}

    def respond(messages, params):
        with lock:
            state["now"] += 1
            state["served"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(state["delay"])
        with lock:
            state["now"] -= 1
        return "echo " + messages[-1]["content"]

    reqs = [GenRequest(key=f"k{i}", messages=[{"role": "user", "content": str(i)}], max_new_tokens=8)
            for i in range(24)]
    with start_server(respond) as srv:
        b = OpenAITeacherBackend("m", srv.url, max_concurrency=3, timeout_s=10)
        try:
            got = {r.key: r.text for r in b.generate(reqs)}
            assert got == {f"k{i}": f"echo {i}" for i in range(24)}  # each once, matched to its request
            assert 2 <= state["max"] <= 3 and state["served"] == 24
            # a consumer that stops early stops the workers: only requests already taken are sent (unstopped,
            # all 24 would be served within the sleep: 8 rounds of 50 ms)
            state["served"], state["delay"] = 0, 0.05
            gen = b.generate(reqs)
            next(gen)
            gen.close()
            assert b.stop_event.is_set()
            time.sleep(0.6)
            assert 1 <= state["served"] <= 12
        finally:
            b.close()


def test_failed_store_write_still_cleans_up_and_counts_only_durable_records(qfile, tmp_path, monkeypatch):
    from cotdistill.teachers.store import RationaleStore as Store
    from cotdistill.utils.openai_server import start_server

    real_append = Store.append
    calls = {"n": 0}

    def append_then_disk_full(self, records):
        calls["n"] += 1
        if calls["n"] > 1:
            raise CotdistillError(f"{self.path}: disk full")
        return real_append(self, records)

    monkeypatch.setattr(Store, "append", append_then_disk_full)
    with start_server(lambda messages, params: "3 + 2 = 5. The answer is: 5") as srv:
        c = cfg(qfile, tmp_path, backend="openai", base_url=srv.url, max_concurrency=2)
        with pytest.raises(CotdistillError, match="disk full"):
            synthesize(c, tmp_path / "run", progress=False, flush_every=4, flush_interval_s=60)
    store_dir = tmp_path / "run" / "rationales"
    summary = json.loads((store_dir / "synthesis_summary.json").read_text())
    on_disk = RationaleStore(store_dir).done_keys()
    assert len(on_disk) == 4 and summary["remaining"] == 9 - 4  # only the batch that landed counts
    # the run lock was released: a rerun (disk fine again) sends exactly the missing ones
    monkeypatch.setattr(Store, "append", real_append)
    with start_server(lambda messages, params: "3 + 2 = 5. The answer is: 5") as srv:
        c = cfg(qfile, tmp_path, backend="openai", base_url=srv.url, max_concurrency=2)
        s = synthesize(c, tmp_path / "run", progress=False)
    assert (s["already_done"], s["sent"], s["complete"]) == (4, 5, True)
    assert sum(1 for _ in RationaleStore(store_dir).iter_raw()) == 9
