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


# ---------------------------------------------------------------- StoreWriter (group commit)


def _lines_on_disk(s):
    return s.path.read_bytes().count(b"\n") if s.path.exists() else 0


def test_writer_flushes_on_size_age_and_close(tmp_path):
    import time

    from cotdistill.teachers.store import StoreWriter

    s = RationaleStore(tmp_path)
    w = StoreWriter(s, flush_every=3, flush_interval_s=60)
    assert w.due_in() is None
    w.add(rec("a"))
    w.add(rec("b"))
    assert _lines_on_disk(s) == 0 and w.pending == 2 and 0 < w.due_in() <= 60
    w.add(rec("c"))  # batch full: one write
    assert _lines_on_disk(s) == 3 and w.pending == 0 and w.flushes == 1
    w.add(rec("d"))
    w.close()
    assert _lines_on_disk(s) == 4 and (w.written, w.flushes) == (4, 2)
    with pytest.raises(CotdistillError, match="without a key"):
        w.add({"question_id": "x"})
    # age: the oldest buffered record triggers the flush once flush_interval_s has passed
    with StoreWriter(s, flush_every=100, flush_interval_s=0.05) as w2:
        w2.add(rec("e"))
        assert _lines_on_disk(s) == 4
        time.sleep(0.06)
        assert w2.due_in() == 0.0
        w2.add(rec("f"))  # add() commits an overdue batch itself
        assert _lines_on_disk(s) == 6
        w2.add(rec("g"))
    assert _lines_on_disk(s) == 7  # leaving the block commits the rest
    assert [r["key"] for r in s.iter_raw()] == list("abcdefg")


def _writer_then_sigkill(d, keys, flush_every):
    import os
    import signal

    from cotdistill.teachers.store import StoreWriter

    w = StoreWriter(RationaleStore(d), flush_every=flush_every, flush_interval_s=3600)
    for k in keys:
        w.add(rec(k, text="x" * 3000))
    os.kill(os.getpid(), signal.SIGKILL)  # no close(): the unflushed batch dies with the process


def test_sigkill_between_flushes_loses_only_the_unflushed_batch_and_resume_is_exactly_once(tmp_path):
    from cotdistill.teachers.store import StoreWriter

    keys = [f"k{i}" for i in range(10)]
    p = mp.get_context("fork").Process(target=_writer_then_sigkill, args=(tmp_path, keys, 4))
    p.start()
    p.join()
    assert p.exitcode == -9
    s = RationaleStore(tmp_path)
    data = s.path.read_bytes()
    assert data.endswith(b"\n") and all(json.loads(x) for x in data.splitlines())  # no torn line
    assert [r["key"] for r in s.iter_raw()] == keys[:8]  # two full batches of 4; the last 2 are lost
    # a crash inside a later write: half a line at the end (what a torn write would leave)
    with open(s.path, "ab") as f:
        f.write(json.dumps(rec("k8")).encode()[:25])
    assert s.done_keys() == set(keys[:8])  # readers skip the torn tail
    # resume: write exactly the keys that are not done
    s2 = RationaleStore(tmp_path)
    with StoreWriter(s2, flush_every=4) as w:
        for k in keys:
            if k not in s2.done_keys():
                w.add(rec(k))
    raw = [r["key"] for r in s2.iter_raw()]
    assert sorted(raw) == sorted(keys) and len(raw) == len(set(raw))  # every key exactly once
    assert len(list((tmp_path / "torn").iterdir())) == 1  # the fragment was moved aside, not kept in the file
