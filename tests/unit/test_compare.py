"""Comparison table: accuracy per method pooled over seeds, bootstrap CI, ID/OOD averages, gain over base."""

import json

import numpy as np
import pytest

from cotdistill.compare import bootstrap_ci, build_table, cell_order, method_config, table_markdown
from cotdistill.config import Config


def _eval(dirpath, bench_stem, correct):
    dirpath.mkdir(parents=True, exist_ok=True)
    with open(dirpath / f"{bench_stem}.jsonl", "w") as f:
        for i, c in enumerate(correct):
            f.write(json.dumps({"id": f"q{i}", "correct": c}) + "\n")


def test_table_hand_values(tmp_path):
    _eval(tmp_path / "eval" / "base", "svamp", [1, 0, 0, 0])
    _eval(tmp_path / "eval" / "base", "csqa", [1, 1, 0, 0])
    for seed, (s, c) in enumerate([([1, 1, 0, 0], [1, 1, 1, 0]), ([1, 1, 1, 0], [1, 1, 0, 0])]):
        d = tmp_path / f"mind-s{seed}" / "eval" / "mind"
        _eval(d, "svamp", s)
        _eval(d, "csqa", c)
    cells = {"mind": [tmp_path / "mind-s0" / "eval" / "mind", tmp_path / "mind-s1" / "eval" / "mind"]}
    t = build_table(tmp_path, cells, ["svamp", "csqa"])
    mind = t["rows"]["mind"]
    assert mind["benchmarks"]["svamp"]["accuracy"] == pytest.approx(5 / 8)
    assert mind["benchmarks"]["svamp"]["per_seed"] == [0.5, 0.75]
    assert mind["benchmarks"]["svamp"]["gain"] == pytest.approx(5 / 8 - 1 / 4)
    assert mind["id_avg"] == pytest.approx(5 / 8) and mind["ood_avg"] == pytest.approx(5 / 8)
    assert mind["ood_gain"] == pytest.approx(5 / 8 - 1 / 2)
    lo, hi = mind["benchmarks"]["svamp"]["ci95"]
    assert lo <= 5 / 8 <= hi
    md = table_markdown(t)
    assert "| mind (×2 seeds) | 62.5" in md and "svamp (ID)" in md and "csqa (OOD)" in md


def test_missing_eval_is_a_clear_error(tmp_path):
    from cotdistill.errors import CotdistillError

    _eval(tmp_path / "eval" / "base", "svamp", [1])
    with pytest.raises(CotdistillError, match="evaluation output missing"):
        build_table(tmp_path, {"sbs": [tmp_path / "nope"]}, ["svamp"])


def test_bootstrap_ci_degenerate_and_width():
    assert bootstrap_ci(np.ones((1, 10))) == (1.0, 1.0)
    lo, hi = bootstrap_ci(np.array([[0, 1] * 50], dtype=float))
    assert 0.35 < lo < 0.5 < hi < 0.65


def test_method_config_keeps_data_and_eval():
    cfg = Config.model_validate({"run": {"name": "cmp"}, "eval": {"limit": 7}})
    m = method_config(cfg, "sbs", 3)
    assert (m.method, m.train.seed, m.run.name, m.eval.limit) == ("sbs", 3, "cmp/sbs-s3", 7)
    assert cfg.method == "std_cot" and cfg.train.seed == 0  # the original is untouched


def test_edit_continues_the_std_cot_cell():
    cfg = Config.model_validate({"run": {"name": "cmp", "output_dir": "out"},
                                 "compare": {"methods": ["edit", "std_cot"], "seeds": [1]},
                                 "edit": {"train": {"max_steps": 5}}})
    m = method_config(cfg, "edit", 1)
    assert m.edit.init_from == "none"
    assert m.edit.train == {"max_steps": 5, "init_adapter": str(cfg.run_dir() / "std_cot-s1" / "student")}
    assert cell_order(["edit", "mind", "std_cot"]) == ["mind", "std_cot", "edit"]
    alone = Config.model_validate({"compare": {"methods": ["edit"]}})
    assert method_config(alone, "edit", 0).edit.init_from == "std_cot"  # no Std-CoT cell: EDIT warms up itself


def test_methods_subset_must_be_compared(tmp_path):
    from cotdistill.compare import run_compare
    from cotdistill.errors import CotdistillError

    cfg = Config.model_validate({"run": {"output_dir": str(tmp_path)}, "compare": {"methods": ["std_cot"]}})
    with pytest.raises(CotdistillError, match="--methods: mind not in compare.methods"):
        run_compare(cfg, methods=["mind"], dry_run=True)
