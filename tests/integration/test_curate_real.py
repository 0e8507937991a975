"""Curate on REAL imported rationales: MCC-KD (GPT-3.5, 10 samples) + EIT (GPT-4o, Gemini, LLaMA) on SVAMP.

EIT's SVAMP train split overlaps the `svamp` eval split (MCC-KD's dev+test 300), MCC-KD's train does not:
the guard must refuse the union by default and, with `eval_guard_action: drop`, produce a multi-teacher
multi-path dataset disjoint from the eval split. About 20 s on 2 cores (import + curate of ~11k records).
"""

from __future__ import annotations

import re

import pytest

from cotdistill.config import Config
from cotdistill.curate import curate_store, load_data_card, load_path_dataset
from cotdistill.errors import CotdistillError


# a final sentence stating the answer, glued or not ("= 34 The answer is 34", "32Therefore, the answer is 32")
ANSWER_SENTENCE = re.compile(r"(?:^|[.!?\d]\s*)(?:(?:so|thus|therefore|hence),?\s*)?the answer is\W*-?[\d.,]+\W*$",
                             re.I)


@pytest.fixture(scope="module")
def real_store(tmp_path_factory, data_dir):
    from cotdistill.teachers.importers import import_rationales
    from cotdistill.teachers.store import RationaleStore

    store = RationaleStore(tmp_path_factory.mktemp("real") / "rationales")
    mcc = import_rationales("mcc-kd", None, store)
    eit = import_rationales("eit", None, store, datasets=["svamp"], levels=[2, 4])
    assert mcc["added"] == 7000 and eit["added"] > 4000
    return store


def test_real_mcc_kd_and_eit_curation(real_store, tmp_path):
    from cotdistill.data.answers import score
    from cotdistill.data.prompts import normalize_question
    from cotdistill.data.registry import load_benchmark
    from cotdistill.data.types import Example

    evals = load_benchmark("svamp")
    eval_ids = {e.id for e in evals}
    eval_texts = {normalize_question(e.question) for e in evals}
    records = {r["key"]: r for r in real_store.iter_records()}
    leaked = {r["question_id"] for r in records.values()} & eval_ids
    assert leaked and all(r["teacher"] != "gpt-3.5-turbo" for r in records.values() if r["question_id"] in leaked)

    # default: refuse, naming how many and which
    with pytest.raises(CotdistillError) as e:
        curate_store(Config.model_validate({"curate": {"eval_guard": ["svamp"]}}), real_store.dir, tmp_path / "no")
    msg = str(e.value)
    assert f"{len(leaked)} training question(s) are test questions of svamp" in msg
    assert sorted(leaked)[0] in msg and "more)" in msg
    assert not (tmp_path / "no").exists()

    cfg = Config.model_validate({"curate": {
        "eval_guard": ["svamp"], "eval_guard_action": "drop", "max_paths_per_question": 8,
        "filter": {"min_correct_paths": 2}, "dev_fraction": 0.1}})
    out = curate_store(cfg, real_store.dir, tmp_path / "dataset")
    dd, card = load_path_dataset(out), load_data_card(out)
    rows = list(dd["train"]) + list(dd["dev"])

    # disjoint from the eval split, by id and by normalised text
    assert not {r["question_id"] for r in rows} & eval_ids
    assert not {normalize_question(r["question"]) for r in rows} & eval_texts
    # (a leaked question left with < 2 correct paths is dropped earlier, as too_few_paths)
    assert 0.95 * len(leaked) <= card["questions"]["dropped"]["contaminated"] <= len(leaked)

    # multi-teacher, multi-path; labels teacher/perspective
    assert card["label_scheme"] == "teacher/perspective"
    teachers = {p["teacher"] for r in rows for p in r["paths"]}
    assert teachers == {"gpt-3.5-turbo", "gpt-4o", "gemini-1.5-flash", "llama-3-70b"}
    # roles: MCC-KD's samples are standard, EIT's levels perspectives; each group is capped and counted apart
    std = [[p for p in r["paths"] if p["role"] == "standard"] for r in rows]
    multi = [[p for p in r["paths"] if p["role"].startswith("perspective:level")] for r in rows]
    assert all({p["teacher"] for p in s} == {"gpt-3.5-turbo"} and 1 <= len(s) <= 8 for s in std)
    assert all(gpt35 not in {p["teacher"] for p in m} and 2 <= len(m) <= 8 for m in multi for gpt35 in ["gpt-3.5-turbo"])
    assert all(len(s) + len(m) == len(r["paths"]) for s, m, r in zip(std, multi, rows))
    roles = card["roles"]
    assert roles["kinds"]["standard"]["questions"] == roles["kinds"]["perspective"]["questions"] == len(rows)
    assert roles["min_correct_paths_counts"] == "perspective/teacher paths" and roles["require_standard_path"]
    assert set(roles["sources"]) == {"mcc-kd", "eit"} and "no EIT path is standard" in roles["sources"]["eit"]
    assert sum(len({p["teacher"] for p in r["paths"]}) >= 3 for r in rows) > 300

    # every kept path: a correct record, its text without the final-answer sentence
    for r in rows:
        for p in r["paths"]:
            src = records[p["record_key"]]
            ex = Example(src["question_id"], "svamp", src["question"], src["gold"], src["kind"])
            assert score(src["raw_response"], ex)[1]
            assert p["label"] == f"{p['teacher']}/{p['perspective']}"
            assert p["text"] and not ANSWER_SENTENCE.search(p["text"]), p["text"]
    # a mid-sentence "..., so the answer is 13." stays (it is reasoning); rare
    tails = sum(bool(re.search(r"answer is\W*-?[\d.,]+\W*$", p["text"], re.I)) for r in rows for p in r["paths"])
    assert tails < 0.01 * sum(len(r["paths"]) for r in rows)

    # card bookkeeping adds up
    q = card["questions"]
    assert q["kept"] + sum(q["dropped"].values()) == q["in_store"] == len({r["question_id"] for r in records.values()})
    assert sum(card["paths_per_question"].values()) == len(rows)
    assert card["by_teacher"]["gpt-3.5-turbo"]["correct_rate"] < card["by_teacher"]["gpt-4o"]["correct_rate"]
