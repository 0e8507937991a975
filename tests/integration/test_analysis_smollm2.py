"""Real SmolLM2-135M: teacher-forced hidden-state features, CKA and the report on a small run folder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from analysis_fixtures import make_run, write_eval  # noqa: E402

pytestmark = pytest.mark.integration


def test_smollm2_hidden_mean_cka_and_report(tmp_path):
    from cotdistill.analysis.run import analyze_run
    from cotdistill.report import write_report

    model = "smollm2-135m-instruct"
    run = make_run(tmp_path / "run", model, evals=False)
    write_eval(run, "base", model, n=8)
    write_eval(run, "mind", model, n=8, shift=2)
    m = analyze_run(run, n_questions=8, batch_size=4, progress=False, echo=lambda s: None)
    lat = m["latent"]
    assert lat["features"] == "hidden_mean" and lat["n_questions"] == 8
    feats = [np.load(p) for p in sorted((run / "analysis" / "features").glob("*.npy"))]
    assert all(f.shape == (8, 576) and np.isfinite(f).all() for f in feats)  # SmolLM2-135M hidden size 576
    assert m["forgetting"]["cka"]["values"]["mind"] == pytest.approx(1.0, abs=1e-5)  # same weights
    assert lat["models"]["base"]["loader"]["model_sha"]
    text = write_report(run).read_text()
    assert "Not run" not in text and text.count("data:image/png;base64,") >= 6
