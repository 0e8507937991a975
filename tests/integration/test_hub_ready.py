"""Hub-ready students: an adapter trained from the SmolLM2 alias names the Hub base and loads with plain
``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(HUB_ID), adapter)`` on a machine whose HF cache has
that Hub model (here: an offline HF cache whose snapshot is the local GGUF conversion); push_to_hub uploads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))

pytestmark = pytest.mark.integration

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

_LOAD_FROM_HUB = """
import sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained({hub_id!r}, dtype=torch.float32)
model = PeftModel.from_pretrained(base, {student!r}).eval()
ids = torch.tensor([{ids!r}])
with torch.no_grad():
    torch.save(model(input_ids=ids).logits, {out!r})
"""


def offline_hub_cache(cache: Path, repo_id: str, folder: Path) -> Path:
    """An HF hub cache (``HF_HUB_CACHE`` layout: refs/main -> snapshots/COMMIT/files) holding ``folder`` as ``repo_id``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in folder.iterdir():
        if f.is_file():
            (snap / f.name).symlink_to(f.resolve())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return cache


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    """One LoRA Std-CoT step from the alias, with push_to_hub on and the Hub upload intercepted."""
    from huggingface_hub import HfApi
    from test_trainer import make_dataset

    from cotdistill.config import Config
    from cotdistill.train.run import train

    root = tmp_path_factory.mktemp("hub")
    calls: list[tuple[str, dict]] = []
    mp = pytest.MonkeyPatch()
    # the only stand-in: the Hub cannot be reached from here, so the two HfApi calls are recorded instead
    mp.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("create_repo", {"repo_id": repo_id, **kw})))
    mp.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload_folder", kw)) or "https://hub/commit/1")
    try:
        cfg = Config.model_validate({"method": "std_cot", "std_cot": {"paths": "all"}, "run": {"name": "hub-run", "output_dir": str(root)}, "train": {
            "model": "smollm2-135m-instruct", "max_steps": 1, "grad_accum": 1, "lr": 1e-3, "max_seq_len": 160,
            "save_steps": 100, "gradient_checkpointing": False, "report_to": [], "push_to_hub": True,
            "hub_model_id": "someone/smol-std-cot"}})
        out = train(cfg, make_dataset(root / "ds", n=2), root / "run")
    finally:
        mp.undo()
    return out, calls


def test_adapter_names_the_hub_base_and_loads_from_it(student, tmp_path):
    from cotdistill.models import load_model_and_tokenizer, resolve_model_path

    student_dir, _ = student
    assert json.loads((student_dir / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
    card = (student_dir / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["base_model"] == HUB_ID and meta["library_name"] == "peft" and meta["pipeline_tag"] == "text-generation"
    assert json.loads((student_dir / "cotdistill_train.json").read_text())["base_model_hub_id"] == HUB_ID

    model, tok, _ = load_model_and_tokenizer("smollm2-135m-instruct", adapter=str(student_dir), dtype="float32",
                                             device="cpu")
    ids = tok("What is 2 + 3?")["input_ids"]
    with torch.no_grad():
        ours = model(input_ids=torch.tensor([ids])).logits
    cache = offline_hub_cache(tmp_path / "hf", HUB_ID, resolve_model_path("smollm2-135m-instruct"))
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HOME", None)
    out = tmp_path / "logits.pt"
    script = _LOAD_FROM_HUB.format(hub_id=HUB_ID, student=str(student_dir), ids=ids, out=str(out))
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    theirs = torch.load(out)
    assert theirs.shape == ours.shape and torch.allclose(theirs, ours, atol=1e-4)


def test_push_to_hub_uploads_the_student(student):
    student_dir, calls = student
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1] == {"repo_id": "someone/smol-std-cot", "repo_type": "model", "private": True, "exist_ok": True}
    up = calls[1][1]
    assert up["folder_path"] == str(student_dir) and up["repo_id"] == "someone/smol-std-cot"
    assert up["repo_type"] == "model"
