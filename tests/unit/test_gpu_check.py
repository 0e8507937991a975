"""benchmarks/gpu_check.sh: its CPU dry run (tiny shapes) and the FLOP count behind its MFU figure."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_flops_per_token_hand_count():
    g = _gpu_check()
    cfg = SimpleNamespace(hidden_size=4, intermediate_size=8, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, vocab_size=10, head_dim=None)
    # per layer: q, o 4x(2*2) each = 32; k, v 4x(1*2) each = 16; MLP 3 x 4x8 = 96 -> 144; 2 layers + LM head 4x10
    assert g.matmul_params(cfg) == 2 * 144 + 40
    # LoRA: 4 FLOPs per matmul parameter; attention 3 x 2 x layers x hidden x mean context
    assert g.flops_per_token(cfg, mean_context=5) == 4 * 328 + 3 * 2 * 2 * 4 * 5
    assert g.flops_per_token(cfg, mean_context=5, lora=False) == 6 * 328 + 240
    real = SimpleNamespace(head_dim=None, **{k: v for k, v in g.ARCHS["qwen2.5-0.5b"].items()
                                             if k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                      "num_attention_heads", "num_key_value_heads", "vocab_size")})
    assert 480e6 < g.matmul_params(real) < 500e6  # Qwen2.5-0.5B: 494M parameters, embedding tied to the head


def test_dry_run_on_cpu(tiny_model_dir, data_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHON=sys.executable,
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    prep = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "prepare", "--bundle",
                           str(bundle), "--questions", "3", "--k", "2", "--tokenizer", str(tiny_model_dir)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert not list((bundle / "encoder").glob("*.safetensors"))  # no weights travel
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--bundle", str(bundle),
                        "--out", str(out), "--work", str(tmp_path / "work")],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "gpu_check.json").read_text())
    tiny = res["archs"]["tiny"]
    runs = tiny["variants"]
    expected = ["std_cot", "mind", "compact"]
    if importlib.util.find_spec("trl") is not None:
        expected += ["trl_padded", "trl_padding_free", "trl_packed"]
    for name in expected:
        assert runs[name]["tokens_per_s"] > 0, (name, runs[name])
        assert runs[name]["steps"] == 3
        assert runs[name]["tokens"] == runs["std_cot"]["tokens"]  # every tool trains the same tokens
    assert runs["mind"]["prepare_seconds"] > 0
    assert tiny["packing_equivalence"]["passed"] and tiny["packing_equivalence"]["paths"] == 4
    assert res["info"]["device"] == "cpu" and res["info"]["peak_bf16_tflops"] is None
    assert runs["std_cot"]["mfu"] is None  # no peak known on CPU: no made-up utilisation
    assert not list(out.glob("gpu_check-*.json"))  # a dry run is not a result file
