"""curate.inject (issue 14): known-incompatible paths that pass the correctness filter and keep their label
from the dataset to the training-dynamics log."""

from __future__ import annotations

import json
import random

import pytest

from cotdistill.curate.inject import inject_paths, shuffled_steps, steps, truncated_steps


def test_step_helpers():
    text = "First add 3 and 4. That gives 7.\nThen double it: 14. So we have 14 apples."
    assert steps(text) == ["First add 3 and 4.", "That gives 7.", "Then double it: 14.", "So we have 14 apples."]
    s = shuffled_steps(text, random.Random(0))
    assert sorted(s.split("\n")) == sorted(steps(text)) and s.split("\n") != steps(text)
    assert truncated_steps(text, 0.3) == "First add 3 and 4."
    assert truncated_steps("One step only.", 0.3) is None and shuffled_steps("A. B.", random.Random(0)) is None


def test_inject_is_seeded_and_leaves_input_alone():
    kept = {f"q{i}": [{"teacher": "t", "perspective": "p", "role": "perspective:p",
                       "text": f"Step a{i}. Step b{i}. Step c{i}. Step d{i}.", "record_key": f"k{i}"}]
            for i in range(10)}
    out, card = inject_paths(kept, fraction=0.5, kinds=["off_topic", "shuffled", "truncated"], seed=3)
    again, _ = inject_paths(kept, fraction=0.5, kinds=["off_topic", "shuffled", "truncated"], seed=3)
    assert out == again and all(len(v) == 1 for v in kept.values())
    assert card["questions"] == 5 and card["paths"] == {"off_topic": 5, "shuffled": 5, "truncated": 5}
    for q, paths in out.items():
        for p in paths[1:]:
            assert p["teacher"] == p["perspective"] == f"injected-{p['injected']}"
            assert p["role"] == f"perspective:injected-{p['injected']}"
            if p["injected"] == "off_topic":
                assert p["text"] != kept[q][0]["text"] and any(p["text"] == v[0]["text"] for v in kept.values())


def _store(tmp_path, n=12):
    from cotdistill.teachers.store import RationaleStore

    recs = []
    for i in range(n):
        a, b = 10 + i, 3 + i % 4
        for t in ("gpt", "gem"):
            recs.append({"key": f"{i}|{t}", "question_id": f"q{i}", "question": f"Tom has {a} pears and buys {b}. "
                         "How many pears does he have?", "gold": str(a + b), "kind": "number", "source": "t",
                         "teacher": t, "teacher_model": t, "backend": "openai", "perspective": "plan", "sample_idx": 0,
                         "raw_response": f"Tom starts with {a} pears. He buys {b} more. We add {a} and {b}. "
                                         f"{a} + {b} = {a + b}.\nThe answer is: {a + b}",
                         "status": "ok", "created_at": "2026-01-01T00:00:00Z"})
    RationaleStore(tmp_path / "store").append(recs)
    return tmp_path / "store"


def test_curation_injects_paths_that_pass_the_filter(tmp_path):
    from cotdistill.config import Config
    from cotdistill.curate import curate_store, load_data_card, load_path_dataset
    from cotdistill.data.answers import score
    from cotdistill.data.types import Example

    cfg = Config.model_validate({"curate": {"eval_guard": [], "inject": {"fraction": 0.5, "seed": 1}},
                                 "eval": {"benchmarks": []}})
    out = curate_store(cfg, _store(tmp_path), tmp_path / "ds")
    rows, card = list(load_path_dataset(out)["train"]), load_data_card(out)
    assert card["injected"]["questions"] == 6
    assert card["injected"]["paths"] == {"off_topic": 6, "shuffled": 6, "truncated": 6}
    injected = [(r, p) for r in rows for p in r["paths"] if p["injected"]]
    assert {p["injected"] for _, p in injected} == {"off_topic", "shuffled", "truncated"}
    for r, p in injected:  # the correctness filter, on the path as the collator builds it, keeps every one
        ex = Example(r["question_id"], "t", r["question"], r["gold"], "number")
        assert score(p["text"] + "\nThe answer is: " + r["gold"], ex)[1], p
        assert p["label"] == f"injected-{p['injected']}/injected-{p['injected']}"
    assert all(not p["injected"] for r in rows for p in r["paths"] if p["teacher"] in ("gpt", "gem"))
    # off by default
    plain = curate_store(Config.model_validate({"curate": {"eval_guard": []}, "eval": {"benchmarks": []}}),
                         tmp_path / "store", tmp_path / "plain")
    assert load_data_card(plain)["injected"] is None


def test_injected_labels_reach_the_dynamics_log(tmp_path, tiny_model_dir):
    from cotdistill.config import Config
    from cotdistill.curate import curate_store
    from cotdistill.train.run import train

    cfg = Config.model_validate({
        "method": "compact", "curate": {"eval_guard": [], "inject": {"fraction": 1.0, "seed": 0}},
        "eval": {"benchmarks": []}, "data": {"student_instruction": ""},
        "train": {"model": str(tiny_model_dir), "lr": 1e-3, "max_steps": 3, "grad_accum": 1, "max_seq_len": 256,
                  "gradient_checkpointing": False, "save_steps": 10, "report_to": [], "lora": {"r": 4, "alpha": 8}},
    })
    ds = curate_store(cfg, _store(tmp_path, n=4), tmp_path / "ds")
    train(cfg, ds, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "dynamics.jsonl").read_text().splitlines()]
    alpha = lines[-1]["signals"]["alpha"]
    for kind in ("off_topic", "shuffled", "truncated"):
        assert f"injected-{kind}/injected-{kind}" in alpha
