"""Training-dynamics parsing, summary and figures from dynamics.jsonl."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cotdistill.analysis.dynamics import load_dynamics, plot_dynamics, split_signals, summarize_dynamics
from cotdistill.utils.io import append_jsonl


def _recs():
    return [
        {"step": 1, "epoch": 0.1, "loss": 2.0, "lr": 1e-4, "signals": {"ce": 1.5, "alpha": {"a": 0.7, "b": 0.3}}},
        {"step": 2, "epoch": 0.2, "loss": 1.0, "lr": 1e-4, "signals": {"ce": 0.5, "alpha": {"a": 0.4, "b": 0.4, "c": 0.2}}},
        {"step": 3, "epoch": 0.3, "loss": 0.5, "lr": 1e-4, "signals": {"ce": 0.25, "flag": True, "alpha": {"b": 1.0}}},
    ]


def test_split_signals_shapes_and_missing_labels():
    scalars, per = split_signals(_recs())
    assert set(scalars) == {"loss", "lr", "ce"}  # booleans are not plotted as numbers
    assert np.array_equal(scalars["ce"][0], [1, 2, 3]) and np.allclose(scalars["ce"][1], [1.5, 0.5, 0.25])
    a = per["alpha"]
    assert a["labels"] == ["a", "b", "c"] and np.array_equal(a["steps"], [1, 2, 3])
    assert a["values"].shape == (3, 3)
    assert math.isnan(a["values"][2, 0]) and math.isnan(a["values"][0, 2]) and a["values"][1, 2] == 1.0


def test_summary_and_resume_duplicates(tmp_path):
    p = tmp_path / "dynamics.jsonl"
    recs = _recs()
    append_jsonl(p, recs)
    append_jsonl(p, [dict(recs[2], loss=0.4)])  # a resumed run re-logs step 3: the last line wins
    loaded = load_dynamics(p)
    assert [r["step"] for r in loaded] == [1, 2, 3] and loaded[-1]["loss"] == 0.4
    s = summarize_dynamics(loaded)
    assert s["n_steps"] == 3
    assert s["scalars"]["loss"] == {"first": 2.0, "last": 0.4, "min": 0.4}
    assert s["per_label"]["alpha"] == {"a": None, "b": pytest.approx(1.0), "c": None}  # last 10% = last step


def test_plots_written(tmp_path):
    figs = plot_dynamics(_recs(), tmp_path / "out")
    assert set(figs) == {"dynamics_scalars", "dynamics_alpha"}
    for path in figs.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert plot_dynamics([], tmp_path / "empty") == {}


def test_injected_share_by_hand():
    """Issue 14: the share of α on injected paths, only at steps that have injected paths."""
    from cotdistill.analysis.dynamics import injected_share

    recs = [
        {"step": 1, "signals": {"alpha": {"gpt/l2": 0.5, "injected-shuffled/injected-shuffled": 0.5}}},
        {"step": 2, "signals": {"alpha": {"gpt/l2": 1.0}}},  # no injected path: skipped
        {"step": 3, "signals": {"alpha": {"gpt/l2": 0.6, "gem/l4": 0.2, "injected-off_topic/injected-off_topic": 0.1,
                                          "injected-shuffled/injected-shuffled": 0.1}}},
        {"step": 4, "signals": {"alpha": {"gpt/l2": 0.9, "injected-truncated/injected-truncated": 0.1}}},
        {"step": 5, "signals": {"alpha": {"gpt/l2": 0.95, "injected-truncated/injected-truncated": 0.05}}},
    ]
    s = injected_share(recs)
    assert s["steps"] == [1, 3, 4, 5]
    assert s["share"] == pytest.approx([0.5, 0.2, 0.1, 0.05])
    assert s["mean"] == pytest.approx(0.2125) and s["first_quarter"] == pytest.approx(0.5)
    assert s["last_quarter"] == pytest.approx(0.05)
    assert s["by_kind"] == pytest.approx({"off_topic": 0.1, "shuffled": 0.3, "truncated": 0.075})
    assert injected_share(recs, "kept") is None


def test_weight_by_source_by_hand():
    """Where α went per teacher (two teachers in the log), with each teacher's mean training CE."""
    from cotdistill.analysis.dynamics import weight_by_source

    recs = [
        {"step": 1, "signals": {"alpha": {"gpt/l2": 0.2, "gpt/l4": 0.2, "gem/l2": 0.4,
                                          "injected-shuffled/injected-shuffled": 0.2},
                                "ce": {"gpt/l2": 1.0, "gpt/l4": 2.0, "gem/l2": 0.5,
                                       "injected-shuffled/injected-shuffled": 3.0}}},
        {"step": 2, "signals": {"alpha": {"gpt/l2": 3.0, "gem/l2": 1.0}, "ce": {"gpt/l2": 0.9, "gem/l2": 0.7}}},
        {"step": 3, "signals": {"loss": 1.0}},  # no weights at this step: skipped
    ]
    got = weight_by_source(recs)
    assert list(got) == ["gem", "gpt", "injected-shuffled"]  # injected sources last
    assert got["gpt"] == {"share": pytest.approx((0.4 + 0.75) / 2), "steps": 2, "ce": pytest.approx((1.5 + 0.9) / 2)}
    assert got["gem"] == {"share": pytest.approx((0.4 + 0.25) / 2), "steps": 2, "ce": pytest.approx(0.6)}
    assert got["injected-shuffled"] == {"share": pytest.approx(0.2), "steps": 1, "ce": pytest.approx(3.0)}
    # one teacher's perspectives: "auto" groups by the whole label; no CE logged gives None
    one = [{"signals": {"alpha": {"t/analogy": 1.0, "t/algebra": 3.0}}}]
    assert weight_by_source(one) == {"t/algebra": {"share": 0.75, "steps": 1, "ce": None},
                                     "t/analogy": {"share": 0.25, "steps": 1, "ce": None}}
    assert weight_by_source(recs, "kept") is None
