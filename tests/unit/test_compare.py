"""Comparison table: accuracy per method over seeds with its CI, ID/OOD averages, gain over base, and the
paired differences to base and to the reference method (Δ, CI, McNemar per seed, Holm, verdict)."""

import json

import pytest

from cotdistill.compare import build_table, cell_order, method_config, table_markdown
from cotdistill.config import Config
from cotdistill.evaluate.stats import wilson_interval


def _eval(dirpath, bench_stem, correct):
    dirpath.mkdir(parents=True, exist_ok=True)
    with open(dirpath / f"{bench_stem}.jsonl", "w") as f:
        for i, c in enumerate(correct):
            f.write(json.dumps({"id": f"q{i}", "correct": c}) + "\n")


def _cell(tmp_path, method, seed):
    return tmp_path / f"{method}-s{seed}" / "eval" / method


def test_table_hand_values(tmp_path):
    _eval(tmp_path / "eval" / "base", "svamp", [1, 0, 0, 0])
    _eval(tmp_path / "eval" / "base", "csqa", [1, 1, 0, 0])
    for seed, (s, c) in enumerate([([1, 1, 0, 0], [1, 1, 1, 0]), ([1, 1, 1, 0], [1, 1, 0, 0])]):
        _eval(_cell(tmp_path, "mind", seed), "svamp", s)
        _eval(_cell(tmp_path, "mind", seed), "csqa", c)
    cells = {"mind": [_cell(tmp_path, "mind", 0), _cell(tmp_path, "mind", 1)]}
    t = build_table(tmp_path, cells, ["svamp", "csqa"], n_boot=500)
    mind = t["rows"]["mind"]
    assert mind["benchmarks"]["svamp"]["accuracy"] == pytest.approx(5 / 8)
    assert mind["benchmarks"]["svamp"]["per_seed"] == [0.5, 0.75]
    assert mind["benchmarks"]["svamp"]["gain"] == pytest.approx(5 / 8 - 1 / 4)
    assert mind["seed_labels"] == ["0", "1"]
    assert mind["id_avg"] == pytest.approx(5 / 8) and mind["ood_avg"] == pytest.approx(5 / 8)
    assert mind["ood_gain"] == pytest.approx(5 / 8 - 1 / 2)
    # 4 questions < 100: Wilson with n = 4 questions, k = 5/8 · 4 = 2.5 (seeds do not multiply n)
    assert mind["benchmarks"]["svamp"]["ci_method"] == "wilson"
    assert mind["benchmarks"]["svamp"]["ci95"] == pytest.approx(list(wilson_interval(2.5, 4)))
    # base: 1 of 4, one seed (the Wilson formula itself is checked by hand in test_stats.py)
    assert t["rows"]["base"]["benchmarks"]["svamp"]["ci95"] == pytest.approx(list(wilson_interval(1, 4)))
    md = table_markdown(t)
    assert "| mind (×2 seeds) | 62.5 [" in md and "svamp (ID)" in md and "csqa (OOD)" in md and "ʷ" in md
    # no std_cot row: the comparison to the reference is skipped with a note, the one to base is made
    assert list(t["paired"]) == ["base"] and "'std_cot' is not in this table" in t["notes"][0]
    assert "Note: reference method 'std_cot'" in md


def test_paired_differences_by_hand(tmp_path):
    """Three methods, two seeds, 40 questions; the base gets q0–q9 right.

    mind: both seeds also get q10–q17 (8 A-only, 0 B-only vs base: exact McNemar p = 2/2^8 = 0.0078125)
    sbs:  seed 0 gains q10–q12 (3:0, p = 2/8 = 0.25), seed 1 gains q10–q16 (7:0, p = 2/128 = 0.015625)
    std_cot: exactly the base (Δ = 0, no discordant pair, p = 1).
    Over seeds (sign flips of each question's difference of seed means): mind 8 × (+1) → 2/2^8 = 0.0078125;
    sbs q10–q12 +1, q13–q16 +0.5: 7 nonzero, the observed sum is the largest of 2^7 → 2/128 = 0.015625;
    std_cot 1. Holm vs base: 3 × 0.0078125 = 0.0234375, 2 × 0.015625 = 0.03125, 1.
    Vs std_cot (= base) over (mind, sbs): 2 × 0.0078125 = 0.015625, max(1 × 0.015625, ·) = 0.015625.
    """
    n = 40
    base = [1] * 10 + [0] * 30
    _eval(tmp_path / "eval" / "base", "svamp", base)

    def gains(k):
        return [1] * (10 + k) + [0] * (30 - k)

    runs = {"mind": [gains(8), gains(8)], "sbs": [gains(3), gains(7)], "std_cot": [base, base]}
    cells = {}
    for m, per_seed in runs.items():
        for seed, v in zip((3, 4), per_seed):
            _eval(_cell(tmp_path, m, seed), "svamp", v)
            cells.setdefault(m, []).append(_cell(tmp_path, m, seed))
    t = build_table(tmp_path, cells, ["svamp"], n_boot=1000)
    vs_base = t["paired"]["base"]["svamp"]
    assert list(vs_base) == ["mind", "sbs", "std_cot"]
    mind, sbs, std = vs_base["mind"], vs_base["sbs"], vs_base["std_cot"]
    assert mind["delta"] == pytest.approx(8 / n) and sbs["delta"] == pytest.approx(5 / n) and std["delta"] == 0
    assert [(s["seed"], s["a_only"], s["b_only"]) for s in mind["per_seed"]] == [("3", 8, 0), ("4", 8, 0)]
    assert [s["p"] for s in sbs["per_seed"]] == pytest.approx([0.25, 0.015625])
    assert [r["p_combined"] for r in (mind, sbs, std)] == pytest.approx([0.0078125, 0.015625, 1.0])
    assert [r["p_holm"] for r in (mind, sbs, std)] == pytest.approx([0.0234375, 0.03125, 1.0])
    # mind: both seeds identical, so resampling seeds changes nothing; every question resample keeps Δ ≥ 0
    assert mind["ci95"][0] > 0 and mind["verdict"] == "better"
    assert sbs["ci95"][0] > 0 and sbs["verdict"] == "better" and std["verdict"] == "not separable"
    vs_ref = t["paired"]["std_cot"]["svamp"]
    assert list(vs_ref) == ["mind", "sbs"]
    assert vs_ref["mind"]["ci_method"] == "hierarchical bootstrap over seed pairs and questions"
    assert [vs_ref[m]["p_holm"] for m in ("mind", "sbs")] == pytest.approx([0.015625, 0.015625])
    assert t["rows"]["mind"]["benchmarks"]["svamp"]["ci_method"] == "wilson"  # 40 questions
    md = table_markdown(t)
    assert "### Paired differences" in md
    assert "| svamp | mind | base | +20.0 [" in md and "s3: 0.008 (8:0), s4: 0.008 (8:0) | 0.023 | better |" in md
    assert "| svamp | sbs | std_cot | +12.5 [" in md and "s3: 0.250 (3:0), s4: 0.016 (7:0) | 0.016 | better |" in md
    assert ("| svamp | std_cot | base | +0.0 [+0.0, +0.0] | s3: 1.000 (0:0), s4: 1.000 (0:0) | 1.000 "
            "| not separable |") in md
    assert md.index("| Method |") < md.index("### Paired differences")
    json.dumps(t, allow_nan=False)  # compare.json stays strict JSON


def test_also_vs_adds_a_target_with_its_own_holm_family(tmp_path):
    """compare.also_vs: the runs of test_paired_differences_by_hand, also compared with sbs.

    mind vs sbs: seed 3 mind-only q13–q17 (5:0, exact McNemar 2/2^5 = 0.0625), seed 4 q17 only (1:0, p = 1);
    over seeds q13–q16 +0.5 and q17 +1: 5 nonzero, all positive → 2/2^5 = 0.0625.
    std_cot vs sbs: sbs-only 3 and 7 → over seeds 7 nonzero, all negative → 2/2^7 = 0.015625.
    Holm over this family of two: 2 × 0.015625 = 0.03125 (std_cot), max(0.0625, 0.03125) = 0.0625 (mind).
    """
    base = [1] * 10 + [0] * 30
    _eval(tmp_path / "eval" / "base", "svamp", base)
    runs = {"mind": [[1] * 18 + [0] * 22] * 2, "sbs": [[1] * 13 + [0] * 27, [1] * 17 + [0] * 23],
            "std_cot": [base, base]}
    cells = {}
    for m, per_seed in runs.items():
        for seed, v in zip((3, 4), per_seed):
            _eval(_cell(tmp_path, m, seed), "svamp", v)
            cells.setdefault(m, []).append(_cell(tmp_path, m, seed))
    t = build_table(tmp_path, cells, ["svamp"], also=["sbs", "std_cot"], n_boot=500)
    assert list(t["paired"]) == ["base", "std_cot", "sbs"]  # a target named twice is compared once
    vs_sbs = t["paired"]["sbs"]["svamp"]
    assert list(vs_sbs) == ["mind", "std_cot"]
    assert [s["p"] for s in vs_sbs["mind"]["per_seed"]] == pytest.approx([0.0625, 1.0])
    assert [vs_sbs[m]["p_combined"] for m in ("mind", "std_cot")] == pytest.approx([0.0625, 0.015625])
    assert [vs_sbs[m]["p_holm"] for m in ("mind", "std_cot")] == pytest.approx([0.0625, 0.03125])
    assert vs_sbs["std_cot"]["delta"] == pytest.approx(-5 / 40)
    # the existing families are unchanged by the extra target
    assert t["paired"]["base"]["svamp"]["mind"]["p_holm"] == pytest.approx(0.0234375)
    assert "| svamp | mind | sbs | +7.5 [" in table_markdown(t)
    with pytest.raises(ValueError, match="also_vs: 'sbs' is not in compare.methods"):
        Config.model_validate({"compare": {"methods": ["std_cot", "mind"], "also_vs": ["sbs"]}})


def test_rows_with_different_seed_counts_and_a_custom_reference(tmp_path):
    _eval(tmp_path / "eval" / "base", "svamp", [0] * 120)
    cells = {"std_cot_all": [_cell(tmp_path, "std_cot_all", 0)],
             "mind": [_cell(tmp_path, "mind", s) for s in (0, 1, 2)]}
    _eval(cells["std_cot_all"][0], "svamp", [1] * 30 + [0] * 90)
    for s, d in enumerate(cells["mind"]):
        _eval(d, "svamp", [1] * (30 + 10 * s) + [0] * (90 - 10 * s))
    t = build_table(tmp_path, cells, ["svamp"], reference="std_cot_all", n_boot=500)
    r = t["paired"]["std_cot_all"]["svamp"]["mind"]
    assert (r["seeds_a"], r["seeds_b"]) == (3, 1) and r["delta"] == pytest.approx(10 / 120)
    # one reference seed stands against each of mind's three: per-seed a_only = 0, 10, 20
    assert [s["a_only"] for s in r["per_seed"]] == [0, 10, 20] and [s["p"] for s in r["per_seed"]][0] == 1.0
    assert r["p_combined"] < 0.01  # 20 questions up by 1/3 or 2/3 of a seed, none down
    assert t["rows"]["mind"]["benchmarks"]["svamp"]["ci_method"] == "bootstrap"  # 120 questions
    assert t["notes"] == []


def test_missing_eval_is_a_clear_error(tmp_path):
    from cotdistill.errors import CotdistillError

    _eval(tmp_path / "eval" / "base", "svamp", [1])
    with pytest.raises(CotdistillError, match="evaluation output missing"):
        build_table(tmp_path, {"sbs": [tmp_path / "nope"]}, ["svamp"])


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


def test_nll_table_pairs_questions_and_seeds(tmp_path):
    """Issue 14: held-out rationale NLL per row with paired Δ to base and reference (hand-made folders)."""
    import json

    from cotdistill.compare import build_nll_table, nll_markdown
    from cotdistill.curate.heldout import parse_set, set_file_stem

    rset = parse_set("eit:svamp")
    ids = [f"q{i}" for i in range(30)]

    def write(folder, vals):  # two rationales per question: teacher a at v - 0.1, teacher b at v + 0.1
        folder.mkdir(parents=True)
        (folder / f"{set_file_stem(rset)}.jsonl").write_text("".join(
            json.dumps({"id": i, "nll": v, "nll_each": [v - 0.1, v + 0.1], "sources": ["a/l2", "b/l2"]}) + "\n"
            for i, v in zip(ids, vals)))

    base = [1.0 + 0.01 * k for k in range(30)]
    write(tmp_path / "nll" / "base", base)
    cells = {}
    for name, shift in (("std_cot", -0.10), ("mind", -0.10), ("compact", -0.30)):
        cells[name] = []
        for s in (0, 1):
            d = tmp_path / f"{name}-s{s}" / "nll" / name
            write(d, [b + shift + (0.001 * s) for b in base])
            cells[name].append(d)
    t = build_nll_table(tmp_path, cells, rset, reference="std_cot", n_boot=2000)
    assert t["rows"]["base"]["mean_nll"] == pytest.approx(sum(base) / 30)
    assert t["rows"]["compact"]["mean_nll"] == pytest.approx(sum(base) / 30 - 0.30 + 0.0005)
    assert t["rows"]["compact"]["per_seed"] == pytest.approx([sum(base) / 30 - 0.30, sum(base) / 30 - 0.299])
    vs_base = t["paired"]["base"]
    assert vs_base["compact"]["delta"] == pytest.approx(-0.2995) and vs_base["compact"]["verdict"] == "better"
    vs_ref = t["paired"]["std_cot"]
    assert vs_ref["mind"]["delta"] == pytest.approx(0.0) and vs_ref["mind"]["verdict"] == "not separable"
    assert vs_ref["compact"]["delta"] == pytest.approx(-0.2) and vs_ref["compact"]["verdict"] == "better"
    assert t["rows"]["compact"]["by_source"]["a/l2"] == {"mean_nll": pytest.approx(sum(base) / 30 - 0.40 + 0.0005),
                                                          "n_rationales": 30}
    also = build_nll_table(tmp_path, cells, rset, reference="std_cot", also=["mind"], n_boot=200)["paired"]
    assert list(also) == ["base", "std_cot", "mind"] and list(also["mind"]) == ["std_cot", "compact"]
    assert also["mind"]["compact"]["delta"] == pytest.approx(-0.2)
    md = nll_markdown(t)
    assert "Held-out rationale NLL on `eit:svamp`" in md and "| compact (×2 seeds) |" in md
    assert "| Method | a/l2 (n=30) | b/l2 (n=30) |" in md
    assert f"| base | {sum(base) / 30 - 0.1:.4f} | {sum(base) / 30 + 0.1:.4f} |" in md


def test_uniform_injected_share_counts_the_paths_a_method_selects(tmp_path):
    from datasets import Dataset, DatasetDict

    from cotdistill.compare import uniform_injected_share
    from cotdistill.config import Config

    def path(t, inj=""):
        return {"teacher": t, "perspective": t, "role": f"perspective:{t}", "twin": "", "injected": inj,
                "label": t, "text": "x", "record_key": t}

    rows = [{"question_id": "a", "question": "?", "gold": "1",
             "paths": [path("g"), path("h"), path("injected-shuffled", "shuffled")]},
            {"question_id": "b", "question": "?", "gold": "1",
             "paths": [path("g"), path("injected-off_topic", "off_topic"), path("injected-truncated", "truncated")]},
            {"question_id": "c", "question": "?", "gold": "1", "paths": [path("g")]}]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "ds"))
    cfg = Config.model_validate({"method": "std_cot", "std_cot": {"paths": "all"}})
    assert uniform_injected_share(cfg, tmp_path / "ds") == pytest.approx((1 / 3 + 2 / 3) / 2)


def test_table_only_lists_cells_not_run(tmp_path):
    """A comparison done in parts: --table tabulates the finished cells and names every other one."""
    import json

    from cotdistill.compare import method_config, run_compare
    from cotdistill.config import Config
    from cotdistill.errors import CotdistillError

    cfg = Config.model_validate({"run": {"name": "cmp", "output_dir": str(tmp_path)},
                                 "data": {"imports": [{"format": "mcc-kd"}]}, "eval": {"benchmarks": ["svamp"]},
                                 "compare": {"methods": ["std_cot", "mcc_kd", "sbs"], "seeds": [0, 1]}})
    ids = [f"chal-{i}" for i in range(1, 11)]

    def write_eval(d, k):
        d.mkdir(parents=True)
        (d / "svamp.jsonl").write_text("".join(json.dumps({"id": i, "correct": j < k}) + "\n" for j, i in enumerate(ids)))

    write_eval(tmp_path / "cmp" / "eval" / "base", 1)
    for row, seed in (("std_cot", 0), ("std_cot", 1), ("mcc_kd", 0)):
        mc = method_config(cfg, row, seed)
        write_eval(mc.run_dir() / "eval" / mc.method, 3)
        (mc.run_dir() / "stages.json").write_text(json.dumps({"eval_student": {"complete": True}}))
    lines = []
    t = run_compare(cfg, table_only=True, echo=lines.append)
    assert t["not_run"] == ["mcc_kd seed 1", "sbs seed 0", "sbs seed 1"] and t["rows_not_run"] == ["sbs"]
    assert t["rows"]["std_cot"]["seeds"] == 2 and t["rows"]["mcc_kd"]["seeds"] == 1
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| sbs | not run |" in md and "not run yet (not in this table): mcc_kd seed 1, sbs seed 0, sbs seed 1" in md
    # an export a reader can check: per-question outputs of every finished cell and the base, no checkpoints
    out = tmp_path / "results"
    run_compare(cfg, table_only=True, echo=lines.append, results_dir=out)
    got = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert got == ["EXPORTED_FROM", "base/eval/svamp.jsonl", "compare.json", "compare.md", "mcc_kd-s0/eval/svamp.jsonl",
                   "std_cot-s0/eval/svamp.jsonl", "std_cot-s1/eval/svamp.jsonl"]
    run_compare(cfg, table_only=True, echo=lines.append, results_dir=out)  # refreshing its own export is fine
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("user data")
    with pytest.raises(CotdistillError, match="not empty and not an export"):
        run_compare(cfg, table_only=True, echo=lines.append, results_dir=tmp_path / "other")


def test_probe_table_of_a_partial_run_lists_finished_cells_only(tmp_path):
    """Regression: --table on a probe run in parts (seed 0 finished, seeds 1-2 not) raised IndexError: the probe
    section listed every configured seed and indexed the finished seeds' NLL values with the unfinished ones."""
    from datasets import Dataset, DatasetDict

    from cotdistill.compare import method_config, run_compare
    from cotdistill.curate.heldout import parse_set, set_file_stem

    cfg = Config.model_validate({
        "run": {"name": "probe", "output_dir": str(tmp_path)}, "data": {"imports": [{"format": "mcc-kd"}]},
        "curate": {"inject": {"fraction": 0.5}}, "method": "std_cot",
        "eval": {"benchmarks": ["svamp"], "rationale_nll": {"set": "eit:svamp"}},
        "compare": {"methods": ["std_cot_all"], "variants": {"std_cot_all": {"method": "std_cot",
                                                                             "set": {"std_cot.paths": "all"}}},
                    "reference": "std_cot_all", "seeds": [0, 1, 2]}})
    shared = tmp_path / "probe"
    ids = [f"chal-{i}" for i in range(1, 11)]
    stem = set_file_stem(parse_set("eit:svamp"))

    def write(d, name, recs):
        d.mkdir(parents=True, exist_ok=True)
        (d / name).write_text("".join(json.dumps(r) + "\n" for r in recs))

    def path(t, inj=""):
        return {"teacher": t, "perspective": t, "role": f"perspective:{t}", "twin": "", "injected": inj,
                "label": t, "text": "x", "record_key": t}

    DatasetDict({"train": Dataset.from_list([{"question_id": "a", "question": "?", "gold": "1",
                                              "paths": [path("g"), path("injected-shuffled", "shuffled")]}])}
                ).save_to_disk(str(shared / "dataset"))
    write(shared / "eval" / "base", "svamp.jsonl", [{"id": i, "correct": j < 1} for j, i in enumerate(ids)])
    write(shared / "nll" / "base", f"{stem}.jsonl", [{"id": i, "nll": 1.0} for i in ids])
    mc = method_config(cfg, "std_cot_all", 0)  # seed 0 finished; seed 1 has started (a partial dynamics log)
    write(mc.run_dir() / "eval" / mc.method, "svamp.jsonl", [{"id": i, "correct": j < 3} for j, i in enumerate(ids)])
    write(mc.run_dir() / "nll" / mc.method, f"{stem}.jsonl", [{"id": i, "nll": 0.8} for i in ids])
    (mc.run_dir() / "stages.json").write_text(json.dumps({"eval_student": {"complete": True},
                                                          "nll_student": {"complete": True}}))
    write(shared / "std_cot_all-s1", "dynamics.jsonl", [{"step": 1, "question_ids": ["a"]}])
    t = run_compare(cfg, table_only=True, echo=lambda s: None)
    assert list(t["probe"]["rows"]["std_cot_all"]["seeds"]) == ["0"]
    md = (shared / "compare.md").read_text()
    probe = md[md.index("### Teacher-compatibility probe"):]
    assert [ln for ln in probe.splitlines() if ln.startswith("| std_cot_all | ")] == [
        "| std_cot_all | 0 | 0.500 (uniform) | — | 0.8000 | 30.0 |"]


def test_probe_markdown_tabulates_weight_by_source():
    """The probe section adds, per weighted row, each source's α share averaged over seeds (CE where logged)."""
    from cotdistill.compare import _mean_over_seeds, probe_markdown

    seeds = [{"gem": {"share": 0.4, "steps": 3, "ce": 0.7},
              "injected-shuffled": {"share": 0.1, "steps": 2, "ce": None}},
             {"gem": {"share": 0.6, "steps": 3, "ce": 0.9}, "gpt": {"share": 0.4, "steps": 3, "ce": None}}]
    mean = _mean_over_seeds(seeds)
    assert list(mean) == ["gem", "gpt", "injected-shuffled"]  # injected last, even when a seed lacks a clean one
    assert mean["gem"] == {"share": pytest.approx(0.5), "seeds": 2, "ce": pytest.approx(0.8)}
    assert mean["injected-shuffled"] == {"share": 0.1, "seeds": 1, "ce": None}
    unweighted = {"alpha": None, "kept": None}
    probe = {"rows": {"mind": {"method": "mind", "uniform_share": 0.5, "by_source": mean,
                               "seeds": {"0": unweighted, "1": unweighted}},
                      "std_cot_all": {"method": "std_cot", "uniform_share": 0.5, "seeds": {"0": unweighted}}}}
    table = {"benchmarks": ["svamp"], "rows": {"mind": {"seed_labels": ["0", "1"], "benchmarks": {
        "svamp": {"per_seed": [0.1, 0.2]}}}, "std_cot_all": {"seed_labels": ["0"], "benchmarks": {
            "svamp": {"per_seed": [0.1]}}}}}
    md = probe_markdown(probe, table)
    by_source = md[md.index("Where each weighted row"):]
    assert "| Method | gem | gpt | injected-shuffled |" in by_source
    assert "| mind | 0.500 (0.800) | 0.400 | 0.100 |" in by_source
    assert "std_cot_all" not in by_source  # unweighted rows have no α to break down
