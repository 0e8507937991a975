"""Held-out rationale NLL (issue 14): the metric against a hand computation, the set on the real EIT files."""

from __future__ import annotations

import pytest
import torch

from cotdistill.curate.heldout import load_rationale_set, parse_set, set_file_stem
from cotdistill.errors import CotdistillError
from cotdistill.evaluate.rationale_nll import nll_by_source, rationale_nll


def test_nll_matches_a_hand_computation(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    items = [{"question_id": "q1", "question": "Jack had 5 apples and ate 2. How many are left?", "gold": "3",
              "kind": "number", "choices": None,
              "rationales": [{"teacher": "gpt-4o", "perspective": "level2", "text": "5 - 2 = 3."},
                             {"teacher": "gemini", "text": "He ate two of five, so three remain."}]}]
    got = rationale_nll(model, tok, items, instruction="", batch_size=1)[0]

    # by hand: prompt = the chat template's user turn with the generation prompt; target = rationale +
    # "\nThe answer is:" + " 3" + the end-of-turn text (each segment tokenised on its own, as METHODS.md §0.1)
    from cotdistill.pathset.collate import end_of_turn_text

    assert tok.chat_template
    prompt_text = tok.apply_chat_template([{"role": "user", "content": items[0]["question"]}], tokenize=False,
                                          add_generation_prompt=True)
    prompt = tok(prompt_text, add_special_tokens=False)["input_ids"]

    def nll(text: str) -> float:
        target = [t for seg in (text, "\nThe answer is:", " 3", end_of_turn_text(tok))
                  for t in tok(seg, add_special_tokens=False)["input_ids"]]
        ids = prompt + target
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        # position p predicts token p + 1: the j-th target token is predicted at len(prompt) + j - 1
        total = -sum(float(logp[len(prompt) + j - 1, target[j]]) for j in range(len(target)))
        return total / len(target)

    each = [nll(r["text"]) for r in items[0]["rationales"]]
    assert got["nll_each"] == pytest.approx(each, rel=1e-5)
    assert got["nll"] == pytest.approx(sum(each) / 2, rel=1e-5) and got["n_rationales"] == 2
    assert got["sources"] == ["gpt-4o/level2", "gemini"]


def test_nll_by_source_is_the_mean_over_each_sources_rationales():
    rows = [{"nll_each": [1.0, 2.0], "sources": ["a/x", "b"]},
            {"nll_each": [3.0], "sources": ["a/x"]},
            {"nll_each": [0.5]}]  # a row written before sources were recorded
    assert nll_by_source(rows) == {"": {"mean_nll": 0.5, "n_rationales": 1},
                                   "a/x": {"mean_nll": 2.0, "n_rationales": 2},
                                   "b": {"mean_nll": 2.0, "n_rationales": 1}}


def test_set_spec_errors():
    with pytest.raises(CotdistillError, match="expected SOURCE:QUESTIONS"):
        parse_set("eit")
    with pytest.raises(CotdistillError, match="'nope' is not a benchmark spec"):
        parse_set("eit:nope")
    assert set_file_stem(parse_set("mcc-kd:svamp:dev")) == "rationale_nll-mcc-kd-svamp-dev"


def test_eit_set_of_svamp_test_questions(data_dir, tmp_path, monkeypatch):
    """EIT trains on 213 of the 300 SVAMP test questions: their rationales are the held-out set (curation drops
    those questions from training)."""
    monkeypatch.setenv("COTDISTILL_CACHE_DIR", str(tmp_path))
    items = load_rationale_set(parse_set("eit:svamp", {"datasets": ["svamp"], "levels": [2, 4]}, 3))
    assert 205 <= len(items) <= 213  # a few have no correct level-2/4 rationale
    assert all(1 <= len(it["rationales"]) <= 3 for it in items)
    assert sum(len({r["teacher"] for r in it["rationales"]}) == 3 for it in items) > 0.9 * len(items)  # round-robin
    from cotdistill.data.registry import load_benchmark

    assert {it["question_id"] for it in items} <= {e.id for e in load_benchmark("svamp")}
    assert not any("The answer is" in r["text"].splitlines()[-1] for it in items for r in it["rationales"])


def test_rows_written_before_sources_get_them_from_the_set(data_dir, tmp_path, monkeypatch):
    """A run finished by an older version has no ``sources``: they follow the set's rationale order."""
    import json

    from cotdistill.evaluate.rationale_nll import read_nll_rows

    monkeypatch.setenv("COTDISTILL_CACHE_DIR", str(tmp_path / "cache"))
    rset = parse_set("eit:svamp", {"datasets": ["svamp"], "levels": [2, 4]}, 2)
    first, second = load_rationale_set(rset)[:2]
    rows = [{"id": first["question_id"], "nll": 1.0, "nll_each": [0.5, 1.5]},
            {"id": second["question_id"], "nll": 1.0, "nll_each": [1.0]}]  # length differs from the set: unnamed
    (tmp_path / f"{set_file_stem(rset)}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = read_nll_rows(tmp_path, rset)
    assert len(first["rationales"]) == 2 and len(second["rationales"]) == 2
    assert got[0]["sources"] == [f"{r['teacher']}/{r['perspective']}" for r in first["rationales"]]
    assert got[0]["sources"][0] != got[0]["sources"][1]  # round-robin over teachers
    assert got[1]["sources"] == [""]


def test_old_rows_without_the_sets_files_keep_their_table(tmp_path, monkeypatch, caplog):
    """Reading an older run where the data directory is absent: the rows load, their sources stay unnamed."""
    import json

    from cotdistill.evaluate.rationale_nll import read_nll_rows

    monkeypatch.setenv("COTDISTILL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COTDISTILL_DATA_DIR", str(tmp_path / "no-data"))
    rset = parse_set("eit:svamp", {"datasets": ["svamp"], "levels": [2, 4]}, 2)
    (tmp_path / f"{set_file_stem(rset)}.jsonl").write_text(json.dumps({"id": "q", "nll": 1.0, "nll_each": [1.0]}) + "\n")
    assert read_nll_rows(tmp_path, rset) == [{"id": "q", "nll": 1.0, "nll_each": [1.0], "sources": [""]}]
    assert "rationale sources unknown" in caplog.text and "no-data" in caplog.text
