"""A reasoning teacher (its server runs a reasoning parser): the trace is stored apart from the answer text and,
under curation's default, kept in the curated path; teachers[].reasoning and curate.reasoning choose otherwise."""

from __future__ import annotations

import re

import pytest
from _synth_helpers import write_questions

from cotdistill.config import Config
from cotdistill.curate import curate_store, load_path_dataset
from cotdistill.teachers.store import RationaleStore
from cotdistill.teachers.synthesize import synthesize
from cotdistill.utils.openai_server import start_server

pytestmark = pytest.mark.integration


def reasoning_teacher(messages, params):
    """Like DeepSeek-R1: a thinking block, then a short answer (the server's parser splits them)."""
    n = int(re.search(r"Tom has (\d+)", messages[-1]["content"]).group(1))
    return f"<think>Tom starts with {n}. Two more makes {n} + 2 = {n + 2}.</think>\nSo {n + 2} apples.\nThe answer is: {n + 2}"


def config(tmp_path, url, run, reasoning="keep", curate_reasoning="both"):
    return Config.model_validate({
        "run": {"name": run, "output_dir": str(tmp_path / "runs")},
        "data": {"question_pool": [f"jsonl:{tmp_path / 'q.jsonl'}"], "perspectives": [], "standard_path": "plain"},
        "teachers": [{"name": "r1", "model": "r1-distill", "base_url": url, "reasoning": reasoning}],
        "curate": {"eval_guard": [], "reasoning": curate_reasoning},
        "eval": {"benchmarks": []},
    })


def test_reasoning_is_stored_apart_and_curated_by_default(tmp_path):
    write_questions(tmp_path / "q.jsonl", 3)
    with start_server(reasoning_teacher, reasoning_parser=True) as srv:
        cfgs = {mode: config(tmp_path, srv.url, mode, reasoning=mode) for mode in ("keep", "drop", "merge")}
        for mode, c in cfgs.items():
            assert synthesize(c, c.run_dir(), progress=False)["complete"]
        assert all("reasoning_content" not in r["body"] for r in srv.requests)
    recs = {mode: sorted(RationaleStore(c.run_dir() / "rationales").iter_records(), key=lambda r: r["question_id"])
            for mode, c in cfgs.items()}
    keep = recs["keep"][0]
    assert keep["reasoning"] == "Tom starts with 0. Two more makes 0 + 2 = 2."
    assert keep["raw_response"] == "So 2 apples.\nThe answer is: 2" and keep["correct"] is True
    assert "reasoning" not in recs["drop"][0] and recs["drop"][0]["raw_response"] == keep["raw_response"]
    assert "reasoning" not in recs["merge"][0]
    assert recs["merge"][0]["raw_response"] == keep["reasoning"] + "\n\n" + keep["raw_response"]
    assert recs["merge"][0]["key"] == keep["key"]  # storage choices do not change what was asked

    store = cfgs["keep"].run_dir() / "rationales"
    texts = {}
    for choice in ("both", "content", "reasoning"):
        c = config(tmp_path, srv.url, f"curate-{choice}", curate_reasoning=choice)
        ds = load_path_dataset(curate_store(c, store, tmp_path / f"ds-{choice}"))["train"]
        texts[choice] = {r["question_id"]: r["paths"][0]["text"] for r in ds}
    assert texts["both"]["q0"] == "Tom starts with 0. Two more makes 0 + 2 = 2.\n\nSo 2 apples."  # the default
    assert texts["content"]["q0"] == "So 2 apples."
    assert texts["reasoning"]["q0"] == "Tom starts with 0. Two more makes 0 + 2 = 2."
