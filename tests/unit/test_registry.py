"""Benchmark registry against the real local data dir (counts, golds, the SVAMP split) and user JSONL files."""

from __future__ import annotations

import csv
import json

import pytest

from cotdistill.data.prompts import normalize_question
from cotdistill.data.registry import benchmark_info, gpqa_example, list_benchmarks, load_benchmark
from cotdistill.errors import CotdistillError

COUNTS = {
    "gsm8k": 1319,
    "gsm8k:train": 7473,
    "svamp": 300,
    "svamp:train": 700,
    "svamp:all": 1000,
    "svamp:dev150": 150,
    "svamp:test150": 150,
    "math500": 500,
    "csqa": 1221,
    "csqa:train": 9741,
    "strategyqa": 2290,
}


@pytest.mark.parametrize("name,n", sorted(COUNTS.items()))
def test_counts_and_basic_shape(data_dir, name, n):
    exs = load_benchmark(name)
    assert len(exs) == n == benchmark_info(name).size
    assert len({e.id for e in exs}) == n  # ids unique
    info = benchmark_info(name)
    assert all(e.kind == info.kind and e.benchmark == name and e.question and e.answer for e in exs)


def test_list_and_info():
    names = list_benchmarks()
    assert {"gsm8k", "svamp", "math500", "csqa", "strategyqa", "gpqa_diamond"} <= set(names)
    assert benchmark_info("csqa").role == "ood" and benchmark_info("gsm8k").role == "id"
    assert benchmark_info("svamp:test300").name == "svamp"  # alias


def test_gsm8k_gold(data_dir):
    first = load_benchmark("gsm8k", limit=1)[0]
    assert first.id == "gsm8k-test-0" and first.answer == "18" and first.question.startswith("Janet")
    # commas stripped from every gold; every gold is an integer
    assert all("," not in e.answer and e.answer.lstrip("-").isdigit() for e in load_benchmark("gsm8k:train"))


def test_limit_takes_first_n_in_file_order(data_dir):
    full = load_benchmark("csqa")
    assert load_benchmark("csqa", limit=7) == full[:7]
    with pytest.raises(CotdistillError, match="limit"):
        load_benchmark("csqa", limit=0)


def test_svamp_split_policy(data_dir):
    """eval 300 = MCC-KD dev+test = SVAMP minus MCC-KD's 700 train; train = those 700; disjoint; ids chal-N."""
    test = load_benchmark("svamp")
    train = load_benchmark("svamp:train")
    allq = load_benchmark("svamp:all")
    assert {e.id for e in test}.isdisjoint({e.id for e in train})
    assert {e.id for e in test} | {e.id for e in train} == {e.id for e in allq}
    assert allq[0].id == "chal-1" and allq[0].answer == "51"
    assert allq[0].question == ("Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
                                "How much do you have to pay to buy each pack?")

    def qs(path, key="instruction"):
        return {normalize_question(r[key]) for r in json.loads((data_dir / path).read_text())}

    mcc = "teacher_rationales_mcc_kd/data/SVAMP/"
    mcc_train, mcc_dev, mcc_test = qs(mcc + "train.json"), qs(mcc + "dev.json"), qs(mcc + "test.json")
    test_q = {normalize_question(e.question) for e in test}
    assert {normalize_question(e.question) for e in train} == mcc_train
    assert test_q == mcc_dev | mcc_test
    assert {normalize_question(e.question) for e in load_benchmark("svamp:dev150")} == mcc_dev
    # Other public sets use other splits: their train questions include eval ones (the curation guard drops them).
    eit_train = qs("teacher_rationales_eit_cot_distill/data/SVAMP_gemini_level1_ranked.json")
    assert len(eit_train) == 700 and len(eit_train & test_q) == 213
    dss = "teacher_rationales_distilling_step_by_step/datasets/svamp/svamp_train.json"
    dss_train = {normalize_question(json.loads(line)["input"]) for line in open(data_dir / dss, encoding="utf-8")}
    assert len(dss_train) == 800 and len(dss_train & test_q) == 236


def test_math500_csqa_strategyqa_fields(data_dir):
    m = load_benchmark("math500", limit=1)[0]
    assert m.answer == "\\left( 3, \\frac{\\pi}{2} \\right)" and m.meta["level"] == 2
    c = load_benchmark("csqa", limit=1)[0]
    assert c.choices == ("bank", "library", "department store", "mall", "new york") and c.answer == "A"
    assert c.question.endswith("security measure at a what?")
    assert {e.answer for e in load_benchmark("csqa")} == set("ABCDE")
    s = load_benchmark("strategyqa")
    assert s[0].answer == "yes" and s[0].id == "2bc9c4f9c19c167187f2"
    assert sum(e.answer == "yes" for e in s) == 964 + 107  # train + dev "True" labels (strategyqa/README.md)


def test_unknown_benchmark_lists_known():
    with pytest.raises(CotdistillError, match="unknown.*gsm8k.*strategyqa"):
        load_benchmark("nope")


def test_missing_file_names_path(tmp_path, monkeypatch):
    monkeypatch.setenv("COTDISTILL_DATA_DIR", str(tmp_path))
    with pytest.raises(CotdistillError) as e:
        load_benchmark("gsm8k")
    assert str(tmp_path / "gsm8k" / "test.jsonl") in str(e.value) and "\n" not in str(e.value)


def test_gpqa_missing_explains_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COTDISTILL_DATA_DIR", str(tmp_path))
    with pytest.raises(CotdistillError, match="gpqa_diamond.csv.*Idavidrein/gpqa"):
        load_benchmark("gpqa_diamond")


def test_gpqa_csv_shuffle(tmp_path, monkeypatch):
    """A CSV the user provides (here a synthetic one with the official columns) is read and shuffled reproducibly."""
    (tmp_path / "gpqa_diamond").mkdir()
    cols = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
            "Incorrect Answer 3", "High-level domain", "Subdomain"]
    rows = [[f"rec{i}", f"Question {i}?", f"right {i}", f"wrong1 {i}", f"wrong2 {i}", f"wrong3 {i}", "Physics", "x"]
            for i in range(40)]
    with open(tmp_path / "gpqa_diamond" / "gpqa_diamond.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([cols, *rows])
    monkeypatch.setenv("COTDISTILL_DATA_DIR", str(tmp_path))
    exs = load_benchmark("gpqa_diamond")
    assert len(exs) == 40 and exs[0].id == "rec0" and exs[0].kind == "choice"
    for e in exs:
        assert e.choices["ABCD".index(e.answer)].startswith("right")
        assert [e.choices[k] for k in range(4)] == [
            ([f"right {e.id[3:]}"] + [f"wrong{j} {e.id[3:]}" for j in (1, 2, 3)])[p] for p in e.meta["permutation"]
        ]
    assert len({e.answer for e in exs}) > 1  # the correct option does not always sit at A
    assert load_benchmark("gpqa_diamond") == exs  # same seed -> same permutation
    assert [e.meta["permutation"] for e in exs] == [e.meta["permutation"] for e in load_benchmark("gpqa_diamond")]
    other = load_benchmark("gpqa_diamond", gpqa_shuffle_seed=1)
    assert [e.meta["permutation"] for e in other] != [e.meta["permutation"] for e in exs]
    # the permutation depends on (seed, id), not on the row position
    row = dict(zip(cols, rows[5]))
    assert gpqa_example(row, 99).meta["permutation"] == exs[5].meta["permutation"]


def _write(path, lines):
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")
    return path


def test_jsonl_benchmark_kinds(tmp_path):
    p = _write(tmp_path / "mine.jsonl", [
        {"question": "2+2?", "answer": "4"},
        {"question": "Big?", "answer": "1,200", "id": "q-big"},
        {"question": "Sky blue?", "answer": True},
        {"question": "Pick", "answer": "library", "choices": ["bank", "library"]},
        {"question": "Pick again", "answer": "(a)", "choices": ["bank", "library"]},
        {"question": "Simplify", "answer": "\\frac{1}{2}"},
        {"question": "Forced", "answer": "7", "kind": "math"},
    ])
    exs = load_benchmark(f"jsonl:{p}")
    assert [e.kind for e in exs] == ["number", "number", "yesno", "choice", "choice", "math", "math"]
    assert [e.answer for e in exs] == ["4", "1200", "yes", "B", "A", "\\frac{1}{2}", "7"]
    assert exs[0].id == "mine-1" and exs[1].id == "q-big" and exs[3].choices == ("bank", "library")
    assert all(e.benchmark == f"jsonl:{p}" for e in exs)
    assert load_benchmark(f"jsonl:{p}", limit=2) == exs[:2]


@pytest.mark.parametrize("bad,msg", [
    ({"question": "no answer here"}, r":2: answer: missing"),
    ({"answer": "3"}, r":2: question: missing"),
    ("{not json", r":2: invalid JSON"),
    ({"question": "q", "answer": "x", "kind": "essay"}, r":2: kind:"),
    ({"question": "q", "answer": "Z", "choices": ["a", "b"]}, r":2: answer:"),
    ({"question": "q", "answer": "seven", "kind": "number"}, r":2: answer:"),
])
def test_jsonl_errors_name_path_line_field(tmp_path, bad, msg):
    p = _write(tmp_path / "bad.jsonl", [{"question": "ok", "answer": "1"}, bad])
    with pytest.raises(CotdistillError, match=f"bad.jsonl{msg}"):
        load_benchmark(f"jsonl:{p}")


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(CotdistillError, match="nothere.jsonl: file not found"):
        load_benchmark(f"jsonl:{tmp_path / 'nothere.jsonl'}")


def test_hub_path_gives_the_same_examples(data_dir, monkeypatch):
    """Without a data dir the loaders read Hub rows; fed the same data in each Hub dataset's schema (no network
    here), they must produce exactly the local Examples."""
    import cotdistill.data.registry as reg

    def jsonl(rel):
        return [json.loads(line) for line in open(data_dir / rel, encoding="utf-8") if line.strip()]

    svamp = json.loads((data_dir / "svamp/SVAMP.json").read_text())
    for r in svamp:  # ChilleD/SVAMP stores answers as strings, in a shuffled 700/300 split
        r["Answer"] = str(r["Answer"])
    sqa = json.loads((data_dir / "strategyqa/train.json").read_text()) + json.loads(
        (data_dir / "strategyqa/dev.json").read_text())

    def csqa_hub(rows):
        return [{"id": r["id"], "question": r["question"]["stem"], "question_concept": r["question"]["question_concept"],
                 "choices": {"label": [c["label"] for c in r["question"]["choices"]],
                             "text": [c["text"] for c in r["question"]["choices"]]},
                 "answerKey": r["answerKey"]} for r in rows]

    hub = {
        ("openai/gsm8k", "main", "test"): jsonl("gsm8k/test.jsonl"),
        ("openai/gsm8k", "main", "train"): jsonl("gsm8k/train.jsonl"),
        ("ChilleD/SVAMP", None, "train"): svamp[::-1][:700],
        ("ChilleD/SVAMP", None, "test"): svamp[::-1][700:],
        ("HuggingFaceH4/MATH-500", None, "test"): jsonl("math500/test.jsonl"),
        ("tau/commonsense_qa", None, "validation"): csqa_hub(jsonl("commonsenseqa/dev_rand_split.jsonl")),
        ("tau/commonsense_qa", None, "train"): csqa_hub(jsonl("commonsenseqa/train_rand_split.jsonl")),
        ("ChilleD/StrategyQA", None, "train"): sqa[:1603],
        ("ChilleD/StrategyQA", None, "test"): sqa[1603:],
    }
    local = {name: load_benchmark(name) for name in COUNTS}
    monkeypatch.setattr(reg, "_hub", lambda path, name, split: [dict(r) for r in hub[(path, name, split)]])
    monkeypatch.setattr(reg, "data_dir", lambda required=False: None)
    for name, exs in local.items():
        assert load_benchmark(name) == exs, name


def test_hub_offline_error_is_one_line(tmp_path):
    """A real ``datasets.load_dataset`` call in offline mode (fresh interpreter, so no network is tried)."""
    import os
    import subprocess
    import sys

    code = ("import cotdistill.data.registry as r\n"
            "r.data_dir = lambda required=False: None\n"
            "try:\n    r.load_benchmark('gsm8k')\n"
            "except r.CotdistillError as e:\n    print('ERR', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stdout
    assert out.startswith("ERR hub dataset openai/gsm8k (main) split test: could not load")
    assert out.count("\n") == 1 and "COTDISTILL_DATA_DIR" in out


def test_dev_splits_are_fixed_slices_of_the_training_side(data_dir):
    """Issue 13: budgets are tuned on a dev split disjoint from every test question."""
    import hashlib

    from cotdistill.data.registry import is_dev_split, load_benchmark

    for dev, train, test, n in (("svamp:dev", "svamp:train", "svamp", 100), ("gsm8k:dev", "gsm8k:train", "gsm8k", 200)):
        ids = [e.id for e in load_benchmark(dev)]
        train_ids = [e.id for e in load_benchmark(train)]
        assert len(ids) == len(set(ids)) == n and set(ids) <= set(train_ids)
        assert not set(ids) & {e.id for e in load_benchmark(test)}
        # the documented rule: the n smallest sha256("cotdistill-dev/" + id), in file order
        h = lambda i: hashlib.sha256(f"cotdistill-dev/{i}".encode()).hexdigest()  # noqa: E731
        assert ids == [i for i in train_ids if h(i) <= sorted(map(h, train_ids))[n - 1]]
        assert is_dev_split(dev) and not is_dev_split(test) and not is_dev_split(train)
