"""Curate stage: each rule on hand-made records, the contamination guard, output and CLI."""

from __future__ import annotations

import json
import logging

import pytest

from cotdistill.config import Config
from cotdistill.curate import curate_store, export_compact_json, load_data_card, load_path_dataset
from cotdistill.curate.text import clean_rationale, dedup_indices, jaccard, shingles
from cotdistill.errors import CotdistillError
from cotdistill.teachers.store import RationaleStore


def rec(qid, teacher="t1", persp="standard", raw="3 + 4 = 7.\nThe answer is: 7", gold="7", *, idx=0,
        question=None, correct=None, **extra):
    """One store record with every INTERFACES.md field."""
    r = {
        "key": f"{qid}|{teacher}|{persp}|{idx}",
        "question_id": qid,
        "question": question or f"Question {qid}: how many apples are there?",
        "gold": gold,
        "kind": "number",
        "source": "svamp:train",
        "teacher": teacher,
        "teacher_model": f"{teacher}-model",
        "backend": "openai",
        "perspective": persp,
        "sample_idx": idx,
        "prompt": [{"role": "user", "content": "q"}],
        "prompt_version": "v1",
        "gen_params": {"temperature": 0.7},
        "raw_response": raw,
        "parsed_answer": None,
        "correct": correct,
        "usage": {},
        "status": "ok",
        "error": None,
        "created_at": "2026-01-01T00:00:00Z",
    }
    r.update(extra)
    return r


def make_store(tmp_path, records, name="rationales"):
    d = tmp_path / name
    RationaleStore(d).append(records)
    return d


def cfg(**curate):
    """A Config with the given curate.* keys (nested dicts for filter/difficulty); no eval guard by default."""
    curate.setdefault("eval_guard", [])
    return Config.model_validate({"curate": curate})


def build(tmp_path, records, out="dataset", **curate):
    store = make_store(tmp_path, records, name=f"store_{out}")
    out_dir = curate_store(cfg(**curate), store, tmp_path / out)
    return load_path_dataset(out_dir), load_data_card(out_dir)


def paths_of(ds, qid, split="train"):
    return [p for r in ds[split] if r["question_id"] == qid for p in r["paths"]]


# --------------------------------------------------------------------------- text rules


def test_clean_rationale_drops_answer_line_and_think_tags():
    assert clean_rationale("  <think>a + b = 3.</think>\nSo it is 3.\nThe answer is: 3\n") == "a + b = 3.\nSo it is 3."
    # EIT style: the answer sentence shares the last line with reasoning
    assert clean_rationale("290 / 2 = 145 per group.  The answer is 145") == "290 / 2 = 145 per group."
    assert clean_rationale("5 + 2 = 7\n#### 7") == "5 + 2 = 7"
    # glued to the reasoning (real EIT rows): no space, or no punctuation, before "The answer is"
    assert clean_rationale("412 - 90 = 322.The answer is 322") == "412 - 90 = 322."
    assert clean_rationale("13 + 21 = 34 The answer is 34") == "13 + 21 = 34"
    assert clean_rationale("35 - 3 = 32Therefore, the answer is 32") == "35 - 3 = 32"
    assert clean_rationale("Find The answer is\nnot here.") == "Find The answer is\nnot here."  # not last line
    assert clean_rationale("MCC-KD style: 100 - 68 = 32 more wrappers.") == "MCC-KD style: 100 - 68 = 32 more wrappers."
    assert clean_rationale("The answer is 7") == ""


def test_jaccard_by_hand():
    a, b = shingles("a b c d", n=3), shingles("a b c e", n=3)
    # {(a,b,c),(b,c,d)} vs {(a,b,c),(b,c,e)}: 1 shared of 3 distinct
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert shingles("Hi!", n=3) == frozenset({("hi",), ("!",)})  # short text: unigrams
    assert jaccard(frozenset(), frozenset()) == 1.0
    texts = ["x y z w", "X y z w", "x y z q", "totally different words here"]
    # texts[1] equals texts[0] after lower-casing; texts[2] shares 1 of 3 trigrams with texts[0]
    assert dedup_indices(texts, threshold=0.9) == [0, 2, 3]
    assert dedup_indices(texts, threshold=0.3) == [0, 3]


# --------------------------------------------------------------------------- filter, dedup, caps


def test_correctness_recomputed_from_raw_not_stored_flag(tmp_path):
    records = [
        rec("q1", persp="a", raw="3 + 4 = 8.\nThe answer is: 8", correct=True),  # stored flag is stale: wrong
        rec("q1", persp="b", raw="3 + 4 = 7. The answer is 7", correct=False),  # stale the other way: right
        rec("q1", persp="c", raw="I add them.\nThe answer is: 7"),
    ]
    ds, card = build(tmp_path, records)
    kept = paths_of(ds, "q1")
    assert [p["perspective"] for p in kept] == ["b", "c"]
    assert [p["text"] for p in kept] == ["3 + 4 = 7.", "I add them."]
    assert card["paths_dropped"]["incorrect"] == 1
    assert card["records"]["verdict_changed_on_rescore"] == 2
    row = {r["perspective"]: r for r in card["by_teacher_perspective"]}
    assert row["a"]["correct"] == 0 and row["b"]["correct_rate"] == 1.0

    ds2, card2 = build(tmp_path, records, out="ds_none", filter={"judge": "none"})
    assert len(paths_of(ds2, "q1")) == 3
    assert "incorrect" not in card2["paths_dropped"]
    assert card2["by_perspective"]["a"]["correct_rate"] == 0.0  # still measured, just not filtered


def test_near_duplicates_removed_within_question_only(tmp_path):
    same = "First add 3 and 4 to get 7 apples in total.\nThe answer is: 7"
    records = [
        rec("q1", persp="a", raw=same),
        rec("q1", persp="b", raw=same.replace("First", "first")),  # identical after lower-casing
        rec("q1", persp="c", raw="Count: three plus four makes seven.\nThe answer is: 7"),
        rec("q2", persp="a", raw=same),  # same text, other question: kept
    ]
    ds, card = build(tmp_path, records)
    assert [p["perspective"] for p in paths_of(ds, "q1")] == ["a", "c"]
    assert len(paths_of(ds, "q2")) == 1
    assert card["paths_dropped"]["near_duplicate"] == 1


def test_max_paths_keeps_every_teacher_and_min_paths_drops_questions(tmp_path):
    records = [
        rec("q1", teacher=t, persp=p, raw=f"{t} {p}: 3 + 4 = 7 apples.\nThe answer is 7")
        for t in ("t1", "t2", "t3") for p in ("p1", "p2", "p3")
    ]
    records += [rec("q2", persp="p1", raw="only one path: 7.\nThe answer is 7"),
                rec("q3", persp="p1", raw="wrong: 9.\nThe answer is 9")]
    ds, card = build(tmp_path, records, max_paths_per_question=3, filter={"min_correct_paths": 2})
    assert [p["teacher"] for p in paths_of(ds, "q1")] == ["t1", "t2", "t3"]  # one each, in teacher order
    assert [r["question_id"] for r in ds["train"]] == ["q1"]
    assert card["questions"]["dropped"] == {"too_few_paths": 1, "no_correct_path": 1}
    assert card["paths_dropped"]["over_max_multi_paths"] == 6
    assert card["paths_per_question"] == {"3": 1}

    with pytest.raises(CotdistillError, match="curate.max_paths_per_question"):
        curate_store(cfg(max_paths_per_question=1, filter={"min_correct_paths": 2}), tmp_path / "store_dataset",
                     tmp_path / "never")


def test_cap_picks_perspectives_seeded_per_question(tmp_path):
    records = [rec(f"q{i}", persp=f"p{k}", raw=f"q{i} view {k}: 3 + 4 = 7.\nThe answer is 7")
               for i in range(20) for k in range(4)]
    ds, _ = build(tmp_path, records, max_paths_per_question=2)
    picks = [tuple(p["perspective"] for p in r["paths"]) for r in ds["train"]]
    assert all(len(p) == 2 and list(p) == sorted(p) for p in picks)
    assert len(set(picks)) > 2  # not always the same two perspectives
    ds2, _ = build(tmp_path, records, out="again", max_paths_per_question=2)
    assert [tuple(p["perspective"] for p in r["paths"]) for r in ds2["train"]] == picks


def test_cap_below_teacher_count_rotates_teachers(tmp_path):
    """Regression: with fewer slots than teachers, the cap kept the alphabetically first teachers on every
    question (4 teachers, cap 2: gemini and gpt-3.5 always, gpt-4o and llama never)."""
    teachers = ("a", "b", "c", "d")
    records = [rec(f"q{i}", teacher=t, raw=f"q{i} {t}: 3 + 4 = 7.\nThe answer is 7") for i in range(40) for t in teachers]
    ds, _ = build(tmp_path, records, max_paths_per_question=2)
    kept = [p["teacher"] for r in ds["train"] for p in r["paths"]]
    assert len(kept) == 80 and all(len(r["paths"]) == 2 for r in ds["train"])
    assert all(kept.count(t) >= 10 for t in teachers), {t: kept.count(t) for t in teachers}
    assert all(len({p["teacher"] for p in r["paths"]}) == 2 for r in ds["train"])  # still two teachers each


def test_teacher_and_perspective_selection_and_labels(tmp_path):
    records = [
        rec(q, teacher=t, persp=p, raw=f"{q} by {t} in style {p}: 3 + 4 = 7.\nThe answer is 7")
        for q in ("q1", "q2") for t in ("gpt", "llama") for p in ("level1", "level2")
    ]
    ds, card = build(tmp_path, records, out="one_teacher", teachers=["gpt"])
    assert card["label_scheme"] == "perspective"
    assert {p["label"] for p in paths_of(ds, "q1")} == {"level1", "level2"}
    assert card["paths_dropped"]["teacher_not_selected"] == 4

    ds, card = build(tmp_path, records, out="one_persp", perspectives=["level2"])
    assert card["label_scheme"] == "teacher"
    assert sorted(p["label"] for p in paths_of(ds, "q2")) == ["gpt", "llama"]

    ds, card = build(tmp_path, records, out="both")
    assert card["label_scheme"] == "teacher/perspective"
    assert card["labels"] == ["gpt/level1", "gpt/level2", "llama/level1", "llama/level2"]

    with pytest.raises(CotdistillError, match=r"curate.teachers: \['gtp'\] not in the store .*gpt, llama"):
        build(tmp_path, records, out="typo", teachers=["gtp"])

    ds, card = build(tmp_path, records, out="forced", label_by="teacher")
    assert sorted(p["label"] for p in paths_of(ds, "q1")) == ["gpt", "gpt", "llama", "llama"]


def test_same_question_under_two_ids_is_merged(tmp_path):
    text = "Dan has 3 apples and buys 4. How many apples now?"
    records = [
        rec("mcc-1", teacher="gpt35", question=text, raw="3 + 4 = 7.", gold="7"),
        rec("chal-9", teacher="gemini", question=text + "\n", raw="He has 3, adds 4: 7. The answer is 7", gold="7.0"),
    ]
    ds, card = build(tmp_path, records)
    assert len(ds["train"]) == 1
    row = ds["train"][0]
    assert row["question_id"] == "chal-9"  # first id in sorted order
    assert sorted(p["teacher"] for p in row["paths"]) == ["gemini", "gpt35"]
    assert card["questions"]["merged_duplicate_ids"] == 1


# --------------------------------------------------------------------------- difficulty


def _ten_questions():
    return [rec(f"q{i}", raw=f"Step for q{i}: 3 + 4 = 7.\nThe answer is 7") for i in range(10)]


def test_difficulty_given_keeps_all_hard_and_seeded_easy(tmp_path):
    hard = tmp_path / "hard.txt"
    hard.write_text("# hard ones\nq1\nq4\nq7\nnot-in-store\n")
    ds, card = build(tmp_path, _ten_questions(), difficulty={"criterion": "given", "hard_ids_file": str(hard),
                                                              "target_size": 5})
    rows = {r["question_id"]: r["difficulty"] for r in ds["train"]}
    assert len(rows) == 5
    assert {q for q, d in rows.items() if d == "hard"} == {"q1", "q4", "q7"}
    assert list(rows.values()).count("easy") == 2
    assert card["questions"]["dropped"] == {"easy_subsampled": 5}
    assert card["difficulty"]["kept"] == {"hard": 3, "easy": 2}
    # same seed, same pick
    ds2, _ = build(tmp_path, _ten_questions(), out="again",
                   difficulty={"criterion": "given", "hard_ids_file": str(hard), "target_size": 5})
    assert ds2["train"]["question_id"] == ds["train"]["question_id"]


def test_difficulty_student_greedy_fail_from_eval_jsonl_and_hard_overflow(tmp_path, caplog):
    ev = tmp_path / "svamp_train.jsonl"
    ev.write_text("".join(json.dumps({"id": f"q{i}", "correct": i % 2 == 0, "output": "..."}) + "\n"
                          for i in range(10)))
    with caplog.at_level(logging.WARNING):
        ds, card = build(tmp_path, _ten_questions(),
                         difficulty={"criterion": "student_greedy_fail", "hard_ids_file": str(ev), "target_size": 3})
    assert len(ds["train"]) == 3
    assert set(ds["train"]["difficulty"]) == {"hard"}
    assert all(int(q[1:]) % 2 == 1 for q in ds["train"]["question_id"])  # failed = odd ids
    assert card["questions"]["dropped"] == {"hard_subsampled": 2, "easy_subsampled": 5}
    assert "sub-sampling hard" in caplog.text

    bad = tmp_path / "other.jsonl"
    bad.write_text(json.dumps({"id": "zzz", "correct": False}) + "\n")
    with pytest.raises(CotdistillError, match="no id matches"):
        build(tmp_path, _ten_questions(), out="bad",
              difficulty={"criterion": "student_greedy_fail", "hard_ids_file": str(bad)})


def test_target_size_without_criterion_is_a_seeded_cap(tmp_path):
    ds, card = build(tmp_path, _ten_questions(), difficulty={"target_size": 4})
    assert len(ds["train"]) == 4 and set(ds["train"]["difficulty"]) == {None}
    assert card["questions"]["dropped"] == {"subsampled": 6}


def test_difficulty_math_level(tmp_path):
    records = [rec(f"m{i}", raw=f"Work {i}: 3 + 4 = 7. The answer is 7", level=f"Level {i}") for i in range(1, 6)]
    ds, card = build(tmp_path, records, difficulty={"criterion": "math_level", "min_level": 4})
    assert {r["question_id"]: r["difficulty"] for r in ds["train"]} == {
        "m1": "easy", "m2": "easy", "m3": "easy", "m4": "hard", "m5": "hard"}
    with pytest.raises(CotdistillError, match="math_level needs records with a 'level'"):
        build(tmp_path, _ten_questions(), out="nolevel", difficulty={"criterion": "math_level"})


# --------------------------------------------------------------------------- splits, output, card


def test_dev_split_output_and_overwrite_rules(tmp_path):
    c = cfg(dev_fraction=0.3)
    store = make_store(tmp_path, _ten_questions())
    out = curate_store(c, store, tmp_path / "ds")
    dd = load_path_dataset(out)
    assert (len(dd["train"]), len(dd["dev"])) == (7, 3)
    assert not set(dd["train"]["question_id"]) & set(dd["dev"]["question_id"])
    row = dd["train"][0]
    assert set(row) == {"question_id", "question", "gold", "kind", "source", "choices", "difficulty", "paths"}
    assert row["choices"] is None
    assert set(row["paths"][0]) == {"teacher", "perspective", "role", "twin", "injected", "label", "text", "record_key"}
    assert row["difficulty"] is None and row["kind"] == "number" and row["source"] == "svamp:train"
    card = load_data_card(out)
    assert card["splits"] == {"train": {"questions": 7, "paths": 7}, "dev": {"questions": 3, "paths": 3}}
    assert card["provenance"]["extractor_version"] and card["provenance"]["store_stats"]["ok"] == 10
    assert "## Questions" in (out / "data_card.md").read_text()
    assert not list(tmp_path.glob(".ds.tmp-*"))

    # identical rerun: left as is; a different dataset: refused
    mtime = (out / "data_card.json").stat().st_mtime_ns
    assert curate_store(c, store, out) == out
    assert (out / "data_card.json").stat().st_mtime_ns == mtime
    with pytest.raises(CotdistillError, match="different dataset"):
        curate_store(cfg(dev_fraction=0.5), store, out)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("user data")
    with pytest.raises(CotdistillError, match="already exists"):
        curate_store(c, store, tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "user data"

    compact = export_compact_json(out, tmp_path / "compact.json")
    data = json.loads(compact.read_text())
    assert data[0]["Answer"] == "7" and data[0]["CoT"][0].endswith("\nThe answer is: 7")


def test_choice_questions_keep_their_options(tmp_path):
    r = rec("c1", raw="Birds fly, so (B).\nThe answer is (B)", gold="B", kind="choice", choices=["fish", "bird", "rock"])
    ds, _ = build(tmp_path, [r])
    row = ds["train"][0]
    assert (row["kind"], row["gold"], row["choices"]) == ("choice", "B", ["fish", "bird", "rock"])
    assert row["paths"][0]["text"] == "Birds fly, so (B)."


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(CotdistillError, match="no rationale store"):
        curate_store(cfg(), tmp_path / "missing", tmp_path / "out")
    r = rec("q1")
    del r["gold"]
    with pytest.raises(CotdistillError, match="missing field 'gold'"):
        curate_store(cfg(), make_store(tmp_path, [r], name="s2"), tmp_path / "out")
    with pytest.raises(CotdistillError, match="no question survived"):
        build(tmp_path, [rec("q1", raw="The answer is 9")], out="o3")
    with pytest.raises(CotdistillError, match="not a curated path dataset"):
        load_path_dataset(tmp_path)


# --------------------------------------------------------------------------- contamination guard


def test_guard_refuses_svamp_eval_question(tmp_path, data_dir):
    from cotdistill.data.registry import load_benchmark

    ev = load_benchmark("svamp")[0]
    records = [
        rec("leak-1", question="  " + ev.question.upper() + " ", gold=ev.answer,
            raw=f"Compute it.\nThe answer is {ev.answer}"),
        rec("fine-1", raw="3 + 4 = 7.\nThe answer is 7"),
    ]
    store = make_store(tmp_path, records)
    with pytest.raises(CotdistillError) as e:
        curate_store(cfg(eval_guard=["svamp"]), store, tmp_path / "ds")
    msg = str(e.value)
    assert "leak-1" in msg and f"svamp:{ev.id}" in msg and "fine-1" not in msg and "\n" not in msg
    assert not (tmp_path / "ds").exists()

    out = curate_store(cfg(eval_guard=["svamp"], eval_guard_action="drop"), store, tmp_path / "ds")
    dd, card = load_path_dataset(out), load_data_card(out)
    assert dd["train"]["question_id"] == ["fine-1"]
    assert card["questions"]["dropped"] == {"contaminated": 1}
    assert card["eval_guard"]["contaminated_ids"] == ["leak-1"]


def test_guard_error_truncates_long_lists():
    from cotdistill.curate.guard import contamination_error

    hits = {f"q{i:02d}": [f"svamp:chal-{i}"] for i in range(25)}
    msg = str(contamination_error("store/records.jsonl", hits))
    assert msg.startswith("store/records.jsonl: curate.eval_guard: 25 training question(s)")
    assert "q09 (= svamp:chal-9)" in msg and "q10" not in msg and "(+15 more)" in msg


# --------------------------------------------------------------------------- CLI


def test_cli_curate_defaults_to_run_folder(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cotdistill.cli import app

    (tmp_path / "cfg.yaml").write_text(
        f"run: {{name: r1, output_dir: {tmp_path / 'runs'}}}\ncurate: {{eval_guard: []}}\n")
    make_store(tmp_path / "runs" / "r1", _ten_questions())
    res = CliRunner().invoke(app, ["curate", str(tmp_path / "cfg.yaml")])
    assert res.exit_code == 0, res.output
    assert "train: 10 questions / 10 paths" in res.output
    assert load_path_dataset(tmp_path / "runs" / "r1" / "dataset")["train"].num_rows == 10


def test_cli_curate_error_exit_code(tmp_path, monkeypatch, capsys):
    from cotdistill import cli

    (tmp_path / "cfg.yaml").write_text("curate: {eval_guard: []}\n")
    monkeypatch.setattr("sys.argv", ["cotdistill", "curate", str(tmp_path / "cfg.yaml"), "--store",
                                     str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    assert "no rationale store" in capsys.readouterr().err


def test_keep_rejected_keeps_wrong_paths_with_their_answer(tmp_path):
    records = [
        rec("q1", raw="3 + 4 = 7.\nThe answer is: 7"),
        rec("q1", teacher="t2", raw="3 + 4 = 8.\nThe answer is: 8"),
        rec("q2", raw="2 + 2 = 5.\nThe answer is: 5", gold="4"),
    ]
    ds, _ = build(tmp_path, records, keep_rejected=True)
    rows = {r["question_id"]: r for r in ds["train"]}
    assert list(rows) == ["q1"]  # q2 has no correct path
    (wrong,) = rows["q1"]["rejected_paths"]
    assert wrong["answer"] == "8" and wrong["teacher"] == "t2" and "The answer is" not in wrong["text"]
    ds2, _ = build(tmp_path, records, out="plain")
    assert "rejected_paths" not in ds2["train"].column_names


# --------------------------------------------------------------------------- path roles (issue 13)


def test_roles_caps_and_counts_per_group(tmp_path):
    """Standard paths and the multi-path set are capped and counted apart; a store with standard paths keeps
    only questions that have one (so every method of a comparison trains on the same questions)."""
    records = []
    for q in ("q1", "q2", "q3"):
        for k in range(3):  # three sampled standard paths (MCC-KD style)
            if q != "q3":
                records.append(rec(q, teacher="s", persp=f"sample{k}", role="standard", idx=k,
                                   raw=f"{q} std {k}: 3 + 4 = {7}.\nThe answer is 7"))
        for p in ("p1", "p2", "p3"):
            if not (q == "q2" and p != "p1"):
                records.append(rec(q, teacher="t", persp=p, raw=f"{q} {p} view: add 3 and 4 to get 7.\nThe answer is 7"))
    ds, card = build(tmp_path, records, max_paths_per_question=2, filter={"min_correct_paths": 2})
    # q1: 2 standard (cap) + 2 perspective (cap); q2: one perspective < 2 → dropped; q3: no standard → dropped
    assert [r["question_id"] for r in ds["train"]] == ["q1"]
    roles = [p["role"] for p in paths_of(ds, "q1")]
    assert roles.count("standard") == 2 and sum(r.startswith("perspective:") for r in roles) == 2
    assert card["questions"]["dropped"] == {"too_few_paths": 1, "no_standard_path": 1}
    assert card["paths_dropped"]["over_max_standard_paths"] == 2 and card["paths_dropped"]["over_max_multi_paths"] == 2
    assert card["roles"]["kinds"] == {"standard": {"paths": 2, "questions": 1},
                                      "perspective": {"paths": 2, "questions": 1}}
    assert card["roles"]["min_correct_paths_counts"] == "perspective/teacher paths"
    assert card["roles"]["require_standard_path"] is True and card["roles"]["sources"] == {
        "synthesis": card["roles"]["sources"]["synthesis"]}

    # max_standard_paths overrides the cap of the standard group; require_standard: false keeps q3
    ds2, card2 = build(tmp_path, records, out="d2", max_paths_per_question=2, max_standard_paths=1,
                       filter={"min_correct_paths": 2, "require_standard": False})
    assert [r["question_id"] for r in ds2["train"]] == ["q1", "q3"]
    assert [p["role"] for p in paths_of(ds2, "q1")].count("standard") == 1


def test_roles_rejected_twins_and_bad_roles(tmp_path):
    ok = rec("q1", persp="standard", raw="3 + 4 = 7.\nThe answer is 7")
    ccp = rec("q1", persp="ccp", role="rejected", twin=ok["key"], raw="3 + 4 = 8.\nThe answer is 8")
    failed_ccp = rec("q1", persp="ccp", idx=1, role="rejected", twin=ok["key"], raw="3 + 4 = 7 still.\nThe answer is 7")
    ds, card = build(tmp_path, [ok, ccp, failed_ccp], keep_rejected=True)
    row = ds["train"][0]
    assert [p["role"] for p in row["paths"]] == ["standard"]
    assert [(r["role"], r["twin"], r["answer"]) for r in row["rejected_paths"]] == [("rejected", ok["key"], "8")]
    assert card["paths_dropped"]["rejected_but_correct"] == 1
    assert card["roles"]["dual_cot"] == {"questions_with_twin_pair": 1, "questions_with_rejected_only_unlinked": 0,
                                         "questions_without_rejected": 0}

    with pytest.raises(CotdistillError, match=r"records.jsonl: record .*: role: unknown path role 'boss'"):
        build(tmp_path, [rec("q1", role="boss")], out="bad")
