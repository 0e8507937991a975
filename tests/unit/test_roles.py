"""Each method trains on the paths its paper defines (issue 13): the roles it receives through the trainer's
own selection (``train.run.prepare_dataset``), on one dataset that holds every role."""

from __future__ import annotations

from collections import Counter

import pytest
from datasets import Dataset

from cotdistill.config import Config
from cotdistill.methods.registry import get_method
from cotdistill.pathset.roles import one_per_teacher, role_kind, role_of_record
from cotdistill.train.mode import dev_targets, expert_rows
from cotdistill.train.run import prepare_dataset, role_counts


def _p(teacher, perspective, role, key, twin=""):
    return {"teacher": teacher, "perspective": perspective, "role": role, "label": f"{teacher}/{perspective}",
            "text": f"{teacher} {perspective} 3 + 4 = 7.", "record_key": key, "twin": twin}


def _row(i=0, n_std=2):
    paths = [_p("gpt", f"sample{k}", "standard", f"s{k}") for k in range(n_std)]
    paths += [_p("gpt", pid, f"perspective:{pid}", f"gpt-{pid}") for pid in ("intuitive", "planning", "socratic")]
    paths += [_p("gemini", "level2", "perspective:level2", "gem"), _p("human", "human", "teacher:human", "hum"),
              _p("gpt", "ahp", "chosen", "ahp", twin="s9")]
    rejected = [{**_p("gpt", "ccp", "rejected", "ccp", twin="s0"), "answer": "8"},
                {**_p("gpt", "sample9", "rejected", "s9"), "answer": "6"},
                {**_p("gemini", "level4", "rejected", "wrong-gem"), "answer": "9"}]
    return {"question_id": f"q{i}", "question": "How many?", "gold": "7", "paths": paths, "rejected_paths": rejected}


def _trained(method: str, rows=None, **cfg) -> Counter:
    ds = Dataset.from_list(rows or [_row()])
    out = prepare_dataset(ds, get_method(method, Config.model_validate({"method": method, **cfg})))
    return Counter(role_counts(out))


def test_role_kinds_and_record_roles():
    assert [role_kind(r) for r in ("standard", "perspective:x", "teacher:y", "rejected", "chosen")] == [
        "standard", "perspective", "teacher", "rejected", "chosen"]
    with pytest.raises(ValueError, match="unknown path role 'boss'"):
        role_kind("boss")
    # stores written before roles: derived from the perspective
    assert role_of_record({"perspective": "standard"}) == "standard"
    assert role_of_record({"perspective": "socratic"}) == "perspective:socratic"
    assert role_of_record({"perspective": "x", "role": "teacher:human"}) == "teacher:human"


def test_std_cot_trains_on_one_standard_path_by_default():
    assert _trained("std_cot") == {"standard": 1}
    # `all`: every correct path a teacher wrote without the hint (no rejected, no AHP twin)
    assert _trained("std_cot", std_cot={"paths": "all"}) == {
        "standard": 2, "perspective:intuitive": 1, "perspective:planning": 1, "perspective:socratic": 1,
        "perspective:level2": 1, "teacher:human": 1}


def test_sbs_one_rationale_per_question():
    assert _trained("sbs") == {"standard": 1}


def test_mcc_kd_sampled_standard_paths_else_the_multi_path_set():
    assert _trained("mcc_kd") == {"standard": 2}  # MCC-KD's own data: samples of the plain CoT prompt
    one_std = _trained("mcc_kd", rows=[_row(n_std=1)])
    assert one_std == {"perspective:intuitive": 1, "perspective:planning": 1, "perspective:socratic": 1,
                       "perspective:level2": 1, "teacher:human": 1}
    assert _trained("mcc_kd", mcc_kd={"paths": "multi"}) == one_std


def test_mind_perspective_paths_only():
    got = _trained("mind")
    assert set(got) == {"perspective:intuitive", "perspective:planning", "perspective:socratic", "perspective:level2"}


def test_compact_one_path_per_teacher():
    assert _trained("compact") == {"standard": 1, "perspective:level2": 1, "teacher:human": 1}
    assert [p["teacher"] for p in one_per_teacher(_row()["paths"])] == ["gpt", "gemini", "human"]


def test_mode_experts_and_dev_target():
    units = expert_rows([_row()], "teacher")
    assert set(units) == {"gpt", "gemini", "human"}  # the standard path is no expert, the AHP twin neither
    assert {p["role"] for p in units["gpt"][0]["paths"]} == {"perspective:intuitive", "perspective:planning",
                                                            "perspective:socratic"}
    assert [p["role"] for p in dev_targets([_row()], "ds")[0]["paths"]] == ["standard"]
    with pytest.raises(Exception, match="MoDE composes its experts on the standard path"):
        dev_targets([{**_row(), "paths": _row()["paths"][2:5]}], "ds")


def test_edit_twin_pairs_and_explicit_similarity_fallback():
    ds = prepare_dataset(Dataset.from_list([_row()]), get_method("edit", Config.model_validate({"method": "edit"})))
    row = ds[0]
    pairs = [(c["record_key"], r["record_key"]) for c, r in zip(row["paths"], row["rejected_paths"])]
    assert pairs == [("s0", "ccp"), ("ahp", "s9")]  # CCP: wrong twin of a correct path; AHP: hinted twin of a wrong one
    sim = prepare_dataset(Dataset.from_list([_row()]),
                          get_method("edit", Config.model_validate({"method": "edit", "edit": {"pairing": "similarity"}})))
    assert len(sim[0]["rejected_paths"]) == 3 and "chosen" not in {p["role"] for p in sim[0]["paths"]}


def test_methods_without_the_roles_they_need_fail_with_one_line(tmp_path, tiny_model_dir):
    from datasets import DatasetDict

    from cotdistill.errors import CotdistillError
    from cotdistill.train.run import train

    rows = [{**_row(i), "kind": "number", "source": "t", "choices": None, "difficulty": None,
             "paths": [_p("gpt", "intuitive", "perspective:intuitive", f"k{i}")]} for i in range(2)]
    for r in rows:
        r.pop("rejected_paths")
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    cfg = Config.model_validate({"method": "std_cot", "train": {"model": str(tiny_model_dir)}})
    with pytest.raises(CotdistillError, match=r"ds: paths: method std_cot trains on standard path .*no question has "
                                              r"one \(the dataset holds: perspective:intuitive 2\)$"):
        train(cfg, tmp_path / "ds", tmp_path / "run")


@pytest.mark.parametrize("cfg, problem", [
    ({"method": "mind", "data": {"imports": [{"format": "mcc-kd"}]}}, "method mind trains on the perspective paths; "
     "the configured data (data.imports, teachers, curate.keep_rejected) yields no perspective paths (it yields: standard)"),
    ({"method": "std_cot", "data": {"imports": [{"format": "eit"}]}}, "method std_cot trains on standard path"),
    ({"method": "edit", "data": {"imports": [{"format": "mcc-kd"}]}}, "yields no rejected/twin paths"),
    ({"method": "edit", "edit": {"pairing": "similarity"}, "curate": {"keep_rejected": True},
      "data": {"imports": [{"format": "mcc-kd"}]}}, None),
    ({"method": "mode", "data": {"imports": [{"format": "eit"}]}}, "yields no standard paths"),
    ({"method": "mind", "data": {"imports": [{"format": "eit"}, {"format": "mcc-kd"}]}}, None),
    ({"method": "mind", "data": {"imports": [{"format": "store", "path": "x"}]}}, None),  # unknown until curated
    ({"method": "std_cot", "std_cot": {"paths": "all"}, "data": {"imports": [{"format": "eit"}]}}, None),
])
def test_validate_names_roles_a_method_cannot_get(cfg, problem):
    from cotdistill.methods.registry import missing_roles

    got = missing_roles(Config.model_validate(cfg))
    assert (got is None) if problem is None else (problem in got)


def test_cli_validate_and_run_refuse_before_any_stage(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from cotdistill.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"method": "mind", "run": {"output_dir": str(tmp_path / "runs")},
                                    "data": {"imports": [{"format": "mcc-kd"}]}, "compare": {"methods": ["mind"]}}))
    for cmd in (["validate", str(path)], ["run", str(path)]):
        res = CliRunner().invoke(app, cmd)
        assert res.exit_code != 0
        assert "method: method mind trains on the perspective paths" in str(res.exception), res.output
    assert not (tmp_path / "runs").exists()
