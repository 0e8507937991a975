"""`analyze_run` / `cotdistill analyze` on synthetic run folders with the tiny model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from analysis_fixtures import make_run, read_metrics, write_eval
from cotdistill.analysis.run import analyze_run, parse_models
from cotdistill.errors import CotdistillError


def test_parse_models():
    assert parse_models("base=a/b,mind=/x/y@/x/adapter, only") == {
        "base": {"model": "a/b", "adapter": None},
        "mind": {"model": "/x/y", "adapter": "/x/adapter"},
        "only": {"model": None, "adapter": None},
    }
    with pytest.raises(CotdistillError):
        parse_models("=spec")


def test_full_run_hidden_mean(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", str(tiny_model_dir))
    m = analyze_run(run, progress=False, echo=lambda s: None)
    assert m == read_metrics(run)
    lat = m["latent"]
    assert lat["benchmark"] == "svamp" and lat["n_questions"] == 12 and lat["features"] == "hidden_mean"
    assert set(lat["per_model"]) == {"base", "mind"} and lat["pooled"]["labels"] == "model"
    for t in ("base", "mind"):
        assert lat["per_model"][t]["effective_clusters"] >= 1
        assert lat["models"][t]["loader"]["resolved_path"]  # provenance of the loaded model
    # same weights under both tags: identical teacher-forced states, CKA exactly 1
    assert m["forgetting"]["cka"]["values"]["mind"] == pytest.approx(1.0, abs=1e-6)
    acc = m["forgetting"]["accuracy"]
    assert acc["base"] == "base" and acc["models"]["mind"]["svamp"]["delta"] == pytest.approx(0.15)
    assert m["dynamics"]["n_steps"] == 30 and "alpha" in m["dynamics"]["per_label"]
    for name in ("dynamics_scalars", "dynamics_alpha", "latent_tsne_pooled", "latent_tsne_base",
                 "latent_degeneration"):
        assert (run / "analysis" / m["figures"][name]).stat().st_size > 1000
    assert m["provenance"]["features"] == "hidden_mean" and m["provenance"]["cotdistill_version"]
    # resumable: a second run re-uses the cached features (no new cache files)
    n_cache = len(list((run / "analysis" / "features").glob("*.npy")))
    # base on its responses == mind on base responses (same weights, same inputs: one cache entry); mind own
    assert n_cache == 2
    again = analyze_run(run, progress=False, echo=lambda s: None)
    assert len(list((run / "analysis" / "features").glob("*.npy"))) == n_cache
    assert again["latent"]["per_model"] == m["latent"]["per_model"]
    assert again["latent"]["models"]["mind"]["loader"] == lat["models"]["mind"]["loader"]


def test_sbert_features_and_degenerate_input(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", "not-a-local-model", dynamics=False)
    m = analyze_run(run, features="sbert", n_questions=6, progress=False, echo=lambda s: None)
    assert m["latent"]["features"] == "sbert" and m["latent"]["n_questions"] == 6
    assert m["forgetting"]["cka"]["status"] == "not run"
    assert m["dynamics"]["status"] == "not run"


def test_missing_inputs_are_not_run(tmp_path):
    run = make_run(tmp_path / "run", "x", evals=False, dynamics=False)
    m = analyze_run(run, progress=False, echo=lambda s: None)
    assert m["latent"]["status"] == "not run" and m["forgetting"]["status"] == "not run"
    assert m["dynamics"]["status"] == "not run" and m["figures"] == {}


def test_user_errors(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", str(tiny_model_dir), dynamics=False)
    with pytest.raises(CotdistillError, match="no evaluation for --models tag"):
        analyze_run(run, models="base,nosuch", echo=lambda s: None)
    with pytest.raises(CotdistillError, match="gsm8k.jsonl: not found"):
        analyze_run(run, benchmark="gsm8k", echo=lambda s: None)
    write_eval(tmp_path / "run2", "base", "")
    with pytest.raises(CotdistillError, match="provenance.model"):
        analyze_run(tmp_path / "run2", progress=False, echo=lambda s: None)
    bad = tmp_path / "run3" / "eval" / "base"
    bad.mkdir(parents=True)
    (bad / "svamp.jsonl").write_text('{"id": 1, "prompt": "q"}\n{"id": 2, "prompt": "q", "output": "a"}\n')
    (bad / "summary.json").write_text('{"svamp": {"accuracy": 0.5, "n": 2}}')
    with pytest.raises(CotdistillError, match=r"svamp.jsonl:1: output: missing"):
        analyze_run(tmp_path / "run3", progress=False, echo=lambda s: None)


def test_cli_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cotdistill", "analyze", str(tmp_path / "nope")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "run folder not found" in r.stderr


def _random_lora(model_dir, out_dir):
    """A LoRA adapter with random (non-zero) B matrices: a 'distilled' model that differs from its base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                                           init_lora_weights=False))
    peft.save_pretrained(out_dir)
    return str(out_dir)


def test_adapter_from_provenance_and_cka_below_one(tmp_path, tiny_model_dir):
    run = make_run(tmp_path / "run", str(tiny_model_dir), dynamics=False, evals=False)
    adapter = _random_lora(tiny_model_dir, tmp_path / "adapter")
    write_eval(run, "base", str(tiny_model_dir), n=8)
    write_eval(run, "mind", str(tiny_model_dir), n=8, shift=1, adapter=adapter)
    m = analyze_run(run, progress=False, echo=lambda s: None)
    assert m["latent"]["models"]["mind"]["adapter"] == adapter
    assert m["latent"]["models"]["mind"]["loader"]["adapter"]
    cka = m["forgetting"]["cka"]["values"]["mind"]
    assert 0.0 < cka < 0.999
    # --models overrides the spec: the adapter is dropped when only a model is given
    m2 = analyze_run(run, models=f"base,mind={tiny_model_dir}", progress=False, echo=lambda s: None)
    assert m2["forgetting"]["cka"]["values"]["mind"] == pytest.approx(1.0, abs=1e-6)
