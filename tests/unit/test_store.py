"""RationaleStore: append-only, latest-ok-wins, torn-tail tolerant, resumable."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from cotdistill.errors import CotdistillError
from cotdistill.teachers.store import RationaleStore, record_key


def rec(key, status="ok", text="t", **kw):
    return {"key": key, "question_id": "q" + key, "teacher": "T", "perspective": "p", "status": status,
            "raw_response": text if status == "ok" else None, "error": None if status == "ok" else "boom",
            "correct": kw.pop("correct", None), **kw}


def test_key_is_stable_and_sensitive():
    base = dict(question_id="chal-1", backend="openai", teacher_model="m", perspective="intuitive",
                prompt_version="v1", gen_params={"temperature": 0.7, "top_p": 0.95}, seed=0, sample_idx=0)
    k = record_key(**base)
    assert k == record_key(**{**base, "gen_params": {"top_p": 0.95, "temperature": 0.7}})  # dict order irrelevant
    for change in [{"question_id": "chal-2"}, {"backend": "vllm"}, {"teacher_model": "m2"},
                   {"perspective": "socratic"}, {"prompt_version": "v2"}, {"seed": 1}, {"sample_idx": 1},
                   {"gen_params": {"temperature": 0.0, "top_p": 0.95}}, {"prompt_hash": "abc"}]:
        assert record_key(**{**base, **change}) != k, change


def test_latest_ok_wins_and_errors_are_retryable(tmp_path):
    s = RationaleStore(tmp_path / "st")
    s.append([rec("a"), rec("b", "error"), rec("c", "error")])
    assert s.done_keys() == {"a"} and s.failed_keys() == {"b", "c"}
    s.append([rec("b", text="second try"), rec("a", text="reparsed")])
    s.append([rec("c", "error")])
    assert s.done_keys() == {"a", "b"} and s.failed_keys() == {"c"}
    got = {r["key"]: r["raw_response"] for r in s.iter_records()}
    assert got == {"a": "reparsed", "b": "second try"}
    assert [r["key"] for r in s.iter_records(status="error")] == ["c"]
    # an error after an ok never shadows the ok
    s.append([rec("a", "error")])
    assert "a" in s.done_keys()
    st = s.stats()
    assert (st["lines"], st["keys"], st["ok"], st["failed"]) == (7, 3, 2, 1)


def test_torn_tail_is_skipped_then_repaired_on_next_append(tmp_path):
    s = RationaleStore(tmp_path)
    s.append([rec("a"), rec("b")])
    with open(s.path, "a") as f:
        f.write('{"key": "c", "status": "o')  # a crash mid-write
    assert RationaleStore(tmp_path).done_keys() == {"a", "b"}
    s2 = RationaleStore(tmp_path)
    s2.append([rec("d")])
    lines = s.path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x) for x in lines)
    assert s2.done_keys() == {"a", "b", "d"}
    assert list((tmp_path / "torn").iterdir())[0].read_text() == '{"key": "c", "status": "o'


def test_corrupt_middle_line_is_a_one_line_error(tmp_path):
    s = RationaleStore(tmp_path)
    s.path.parent.mkdir(parents=True, exist_ok=True)
    s.path.write_text('{"key": "a", "status": "ok"}\nnot json\n{"key": "b", "status": "ok"}\n')
    with pytest.raises(CotdistillError, match=r"records.jsonl:2"):
        s.done_keys()


def test_record_without_key_is_refused(tmp_path):
    with pytest.raises(CotdistillError, match="without a key"):
        RationaleStore(tmp_path).append([{"question_id": "x"}])


def _writer(d, start, n):
    s = RationaleStore(d)
    for i in range(start, start + n):
        s.append([rec(f"k{i}", text="x" * 5000)])


def test_concurrent_writers_never_interleave(tmp_path):
    ctx = mp.get_context("fork")
    ps = [ctx.Process(target=_writer, args=(tmp_path, i * 100, 100)) for i in range(3)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    s = RationaleStore(tmp_path)
    assert len(s.done_keys()) == 300
    assert sum(1 for _ in s.iter_raw()) == 300
