"""EDIT's dual CoTs built as the paper does (issue 13): CCP twins of correct standard paths, AHP twins of wrong
ones, from a real local teacher server; curation links them and EDIT trains on exactly those pairs."""

from __future__ import annotations

import re

import pytest
from _synth_helpers import make_responder, write_config, write_questions

from cotdistill.config import load_config
from cotdistill.teachers.store import RationaleStore
from cotdistill.utils.openai_server import start_server

pytestmark = pytest.mark.integration


def _responder():
    """The scripted teacher, plus CCP (a wrong twin: one changed step) and AHP (the hinted answer) replies."""
    base = make_responder()

    def respond(messages, params):
        user = messages[-1]["content"]
        n = int(re.search(r"Tom has (\d+)", user).group(1))
        if "WRONG solution" in user:
            return f"Start with {n} apples.\nAdd 2: {n} + 2 = {n + 5}.\nThe answer is: {n + 5}"
        if "Hint: the correct answer is" in user:
            ans = re.search(r"correct answer is (\S+?)\.", user).group(1)
            return f"Start with {n} apples.\nAdd 2: {n} + 2 = {ans}.\nThe answer is: {ans}"
        return base(messages, params)

    return respond


def test_dual_cot_round_links_twins_and_edit_trains_on_them(tmp_path, tiny_model_dir):
    import yaml

    from cotdistill.curate import curate_store, load_data_card, load_path_dataset
    from cotdistill.methods.registry import get_method
    from cotdistill.pipeline import run_pipeline
    from cotdistill.train.run import prepare_dataset

    q = write_questions(tmp_path / "q.jsonl", 12)
    with start_server(_responder()) as srv:
        path = write_config(tmp_path / "c.yaml", questions=q, base_url=srv.url, run_dir=tmp_path / "run",
                            perspectives=[], samples_per_perspective=1)
        raw = yaml.safe_load(path.read_text())
        raw["synthesis"] = {"dual_cot": True}
        raw["curate"] = {"keep_rejected": True, "eval_guard": []}
        raw["eval"] = {"benchmarks": ["svamp"]}
        raw["method"] = "edit"
        raw["train"] = {"model": str(tiny_model_dir)}
        path.write_text(yaml.safe_dump(raw))
        cfg = load_config(path)
        run_pipeline(cfg, only={"rationales"}, echo=lambda s: None)
        requests = [r["body"]["messages"][-1]["content"] for r in srv.requests]
    store = RationaleStore(tmp_path / "run" / "rationales")
    recs = list(store.iter_records())
    std = [r for r in recs if r["role"] == "standard"]
    ccp = [r for r in recs if r["perspective"] == "ccp"]
    ahp = [r for r in recs if r["perspective"] == "ahp"]
    assert len(std) == 12 and len(ccp) + len(ahp) == 12 and ccp and ahp
    by_key = {r["key"]: r for r in recs}
    assert all(r["role"] == "rejected" and by_key[r["twin"]]["correct"] for r in ccp)  # twin of a correct path
    assert all(r["role"] == "chosen" and not by_key[r["twin"]]["correct"] for r in ahp)  # ... of a wrong one
    ccp_prompt = next(t for t in requests if "WRONG solution" in t)
    assert "Correct solution:" in ccp_prompt and "The answer is:" in ccp_prompt
    assert sum("Hint: the correct answer is" in t for t in requests) == len(ahp)
    # a second run sends nothing new
    n_before = len(recs)
    with start_server(_responder()) as srv2:
        raw["teachers"][0]["base_url"] = srv2.url
        path.write_text(yaml.safe_dump(raw))
        run_pipeline(load_config(path), only={"rationales"}, echo=lambda s: None)
        assert srv2.requests == []
    assert len(list(store.iter_records())) == n_before

    # default: a question needs a correct standard path (every method sees the same questions), so the AHP
    # questions (teacher wrong) drop out; require_standard: false keeps them for EDIT
    card = load_data_card(curate_store(cfg, store.dir, tmp_path / "ds0"))
    assert card["roles"]["dual_cot"]["questions_with_twin_pair"] == len(ccp)
    assert card["questions"]["dropped"] == {"no_standard_path": len(ahp)}
    raw["curate"]["filter"] = {"require_standard": False}
    path.write_text(yaml.safe_dump(raw))
    cfg = load_config(path)
    out = curate_store(cfg, store.dir, tmp_path / "ds")
    card = load_data_card(out)
    assert card["roles"]["dual_cot"]["questions_with_twin_pair"] == 12
    ds = prepare_dataset(load_path_dataset(out)["train"], get_method("edit", cfg))
    pairs = [(c["role"], r["role"]) for row in ds for c, r in zip(row["paths"], row["rejected_paths"])]
    assert sorted(set(pairs)) == [("chosen", "rejected"), ("standard", "rejected")] and len(pairs) == 12
