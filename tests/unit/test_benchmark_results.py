"""benchmarks/make_results.py and the spread statistic: RESULTS.md's summary is generated from result files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_spread_hand_cases():
    C = _load("_common")
    assert C.spread([1.2, 0.9, 1.5]) == {"median": 1.2, "min": 0.9, "max": 1.5, "values": [1.2, 0.9, 1.5]}
    assert C.spread([2.0, 1.0, 4.0, 3.0])["median"] == 2.5  # even count: mean of the middle two
    assert C.spread([])["median"] is None


def _eval_file(d: Path, stamp: str, speedups: list[float]) -> None:
    C = _load("_common")
    rounds = [{"round": i + 1, "speedup_generation": x, "speedup_generation_cpu": x, "speedup_call": x + 1,
               "variants": {"cotdistill": {"loadavg_start": [2.0 + i, 0, 0], "loadavg_end": [3.0, 0, 0]},
                            "lm_eval": {"loadavg_start": [2.5, 0, 0]}},
               "agreement_vs_lm_eval": {"n": 200, "identical_outputs": 200, "same_answers": 200}}
              for i, x in enumerate(speedups)]
    payload = {"benchmark": "eval_vs_lmeval", "label": "base", "command": "python benchmarks/eval_vs_lmeval.py",
               "date_utc": f"2026-12-05 {stamp}Z", "machine": {"cpu": "x", "cores": 2, "torch_threads": 1,
                                                              "versions": {}},
               "settings": {"max_new_tokens": 256, "batch_size": 16, "dtype": "bfloat16"}, "rounds": rounds,
               "summary": {"n": 200, "speedup_generation": C.spread(speedups),
                           "speedup_generation_cpu": C.spread(speedups),
                           "speedup_call": C.spread([x + 1 for x in speedups]), "speedup_call_cpu": None,
                           "identical_outputs_min": 200, "same_answers_min": 199,
                           "samples_per_s": {}, "mean_new_tokens": {}}}
    (d / f"eval_vs_lmeval-base-20261205T{stamp.replace(':', '')}Z.json").write_text(json.dumps(payload))


def test_summary_is_generated_from_the_newest_file_and_hand_text_is_kept(tmp_path):
    M = _load("make_results")
    res = tmp_path / "results"
    res.mkdir()
    _eval_file(res, "01:00:00", [1.1, 1.2, 1.3])  # older: must not be shown
    _eval_file(res, "02:00:00", [1.6, 1.4, 1.7])
    md = "# R\n\nhand-written intro\n\n<!-- BEGIN GENERATED: summary -->\nold table\n<!-- END GENERATED: summary -->\n" \
         "\n## Notes\nmine\n"
    out = M.build(res, md)
    assert "hand-written intro" in out and "## Notes\nmine" in out and "old table" not in out
    row = next(ln for ln in out.splitlines() if ln.startswith("| evaluation vs lm-eval HF backend"))
    assert "1.60× (1.40–1.70)" in row and "median only" in row  # 1.4 < 1.5 in one round
    assert "identical outputs ≥ 200/200" in row and "load 2.0–4.0" in row
    assert "| evaluation vs lm-eval, whole call" in out and "2.60× (2.40–2.70)" in out
    assert "<!-- BEGIN GENERATED: details -->" in out  # a missing block is appended
    assert M.build(res, out) == out  # idempotent: --check passes on its own output
    assert M.goal_met({"median": 1.2, "min": 1.1, "max": 1.3, "values": [1.1, 1.2, 1.3]}, 1.15,
                      higher_is_better=False) == "**not met**"
