"""MoDE-CoTD training: one Std-CoT LoRA expert per perspective (or teacher), then LoraHub composition.

``train_mode(config, dataset_dir, run_dir)``:

1. ``mode.n_dev_examples`` questions (seeded) are held out as the few-shot composition set; its target is each
   question's standard path (role ``standard``, METHODS.md §4.4), so LoraHub's weights are not tuned on one
   perspective's style.
2. For every expert unit (``mode.expert_unit``: the perspective or teacher of the multi-path set, i.e. the
   perspective/teacher roles; the standard path is no expert) a Std-CoT LoRA adapter is
   trained on that unit's paths of the remaining questions, with the base student frozen, into
   ``run_dir/experts/<unit>/student`` (each expert run resumes like any training run).
3. Mixing weights w ∈ [−bound, bound]^E are found by nevergrad on the mean dev CE + l1·mean|w|
   (:func:`cotdistill.methods.mode.search_mixing_weights`); the composed adapter Σ w_i θ_i is saved to
   ``run_dir/student`` as a normal PEFT adapter with provenance, and the search to ``dynamics.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from cotdistill.config import Config, StdCotConfig
from cotdistill.errors import CotdistillError
from cotdistill.pathset.roles import multi_paths, path_role, standard_paths
from cotdistill.train.run import PROVENANCE_NAME, name_hub_base, train
from cotdistill.utils.io import append_jsonl, atomic_write_json

log = logging.getLogger(__name__)


def _unit_of(path: dict, unit: str) -> str:
    return path["perspective"] if unit == "perspective" else path["teacher"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "unit"


def expert_config(config: Config) -> Config:
    """The Std-CoT config each expert is trained with (``mode.train`` overrides apply, LoRA forced)."""
    cfg = config.model_copy(deep=True)
    cfg.method = "std_cot"
    overrides = dict(config.mode.train)
    overrides["finetune"] = "lora"
    cfg.std_cot = StdCotConfig(paths="all", train=overrides)
    return cfg


def split_dev(rows: list[dict], n_dev: int, seed: int) -> tuple[set[str], list[dict]]:
    """Seeded held-out question ids for composition, and the remaining rows for the experts."""
    ids = sorted(r["question_id"] for r in rows)
    if len(ids) <= n_dev:
        raise CotdistillError(
            f"config: mode.n_dev_examples: {n_dev} held-out questions leave none of the {len(ids)} for the experts"
        )
    dev = set(random.Random(seed).sample(ids, n_dev))
    return dev, [r for r in rows if r["question_id"] not in dev]


def expert_rows(rows: list[dict], unit: str) -> dict[str, list[dict]]:
    """unit value → the rows restricted to that unit's multi-path (perspective/teacher role) paths."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        for value in sorted({_unit_of(p, unit) for p in multi_paths(r["paths"])}):
            paths = [p for p in multi_paths(r["paths"]) if _unit_of(p, unit) == value]
            out.setdefault(value, []).append({**r, "paths": paths})
    return out


def dev_targets(dev_rows: list[dict], where: str) -> list[dict]:
    """The composition set: each held-out question with its first standard path (questions without one are
    skipped); a one-line error when none has one."""
    dev = [{**r, "paths": standard_paths(r["paths"])[:1]} for r in dev_rows]
    dev = [r for r in dev if r["paths"]]
    if not dev:
        raise CotdistillError(f"{where}: paths: MoDE composes its experts on the standard path of held-out "
                              "questions (role standard); the dataset has none (data.standard_path: plain, or an "
                              "import with standard paths)")
    return dev


def _expert_dataset(rows: list[dict], unit: str, value: str, out_dir: Path) -> Path:
    """Save the rows restricted to one unit's paths as a path dataset (skipped when already saved)."""
    from datasets import Dataset, DatasetDict

    if (out_dir / "dataset_dict.json").exists():
        return out_dir
    kept = expert_rows(rows, unit).get(value, [])
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    DatasetDict({"train": Dataset.from_list(kept)}).save_to_disk(str(tmp))
    atomic_write_json(tmp / "data_card.json", {"expert_unit": unit, "expert": value, "questions": len(kept)})
    os.replace(tmp, out_dir)
    return out_dir


def train_mode(config: Config, dataset_dir: str | os.PathLike, run_dir: str | os.PathLike) -> Path:
    """Train every expert, compose them on the held-out set, save the composed adapter to ``run_dir/student``."""
    from cotdistill.curate import load_path_dataset

    run_dir = Path(run_dir)
    student_dir = run_dir / "student"
    if (student_dir / PROVENANCE_NAME).is_file():
        log.info("%s: MoDE composition already finished; nothing to do", student_dir)
        return student_dir
    mcfg = config.mode
    rows = [dict(r) for r in load_path_dataset(dataset_dir)["train"]]
    dev_ids, train_rows = split_dev(rows, mcfg.n_dev_examples, mcfg.seed)
    dev_rows = dev_targets([r for r in rows if r["question_id"] in dev_ids], str(dataset_dir))
    units = sorted(expert_rows(train_rows, mcfg.expert_unit))
    if len(units) < 2:
        raise CotdistillError(f"{dataset_dir}: paths: MoDE needs ≥ 2 expert units ({mcfg.expert_unit}) among the "
                              f"perspective/teacher paths, found {units}")
    ecfg = expert_config(config)
    experts: dict[str, Path] = {}
    for i, unit in enumerate(units, 1):
        edir = run_dir / "experts" / _safe(unit)
        log.info("[mode] expert %d/%d: %s=%s", i, len(units), mcfg.expert_unit, unit)
        ds = _expert_dataset(train_rows, mcfg.expert_unit, unit, edir / "dataset")
        experts[unit] = train(ecfg, ds, edir)
    return compose_experts(config, experts, dev_rows, run_dir)


def compose_experts(config: Config, experts: dict[str, Path], dev_rows: list[dict], run_dir: Path) -> Path:
    """LoraHub search over the experts on ``dev_rows`` (their standard path, :func:`dev_targets`); save the
    composed adapter."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from tqdm import tqdm

    from cotdistill.methods.losses import sequence_ce
    from cotdistill.methods.mode import compose_lora_states, search_mixing_weights
    from cotdistill.pathset.collate import PathCollator, build_label_vocab
    from cotdistill.models import load_model_and_tokenizer

    mcfg = config.mode
    tc = config.effective_train("mode")
    names = list(experts)
    states = [load_file(str(experts[n] / "adapter_model.safetensors")) for n in names]
    model, tok, prov = load_model_and_tokenizer(tc.model, adapter=str(experts[names[0]]), for_training=True)
    model.eval()
    dev = [{**r, "paths": r["paths"][:1]} for r in dev_rows]  # dev_targets: the standard path
    collator = PathCollator(
        tok, max_seq_len=tc.max_seq_len, student_instruction=config.data.student_instruction,
        answer_suffix=config.data.answer_suffix, label_vocab=build_label_vocab(dev),
    )
    batches = [collator(dev[i : i + 4]) for i in range(0, len(dev), 4)]

    def dev_loss(w) -> float:
        set_peft_model_state_dict(model, compose_lora_states(states, w))
        total, n = 0.0, 0
        with torch.no_grad():
            for b in batches:
                ce = sequence_ce(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
                total += float(ce[b["path_valid"]].sum())
                n += int(b["path_valid"].sum())
        return total / max(n, 1)

    bar = tqdm(total=mcfg.budget, desc="mode: LoraHub search", unit="eval")
    w, history = search_mixing_weights(
        dev_loss, len(names), budget=mcfg.budget, l1=mcfg.l1, bound=mcfg.weight_bound, seed=mcfg.seed,
        progress=lambda i, obj: (bar.update(1), bar.set_postfix(objective=f"{obj:.4f}")),
    )
    bar.close()
    final_loss = dev_loss(w)
    set_peft_model_state_dict(model, compose_lora_states(states, w))
    dyn = run_dir / "dynamics.jsonl"
    if dyn.exists():
        dyn.unlink()  # the search is redone in full; its trace is rewritten
    append_jsonl(dyn, [
        {"step": i + 1, "epoch": 0.0, "loss": h["objective"], "lr": 0.0,
         "signals": {"dev_ce": h["loss"], "w": dict(zip(names, h["w"]))}}
        for i, h in enumerate(history)
    ])
    student_dir = run_dir / "student"
    tmp = run_dir / ".student.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    name_hub_base(tmp, config.effective_train("mode").model)
    import cotdistill

    info: dict[str, Any] = {
        "method": "mode",
        "finetune": "lora",
        "base_model": prov,
        "experts": {n: str(experts[n]) for n in names},
        "expert_unit": mcfg.expert_unit,
        "weights": dict(zip(names, map(float, w))),
        "dev_questions": len(dev),
        "dev_target_roles": dict(Counter(path_role(p) for r in dev for p in r["paths"])),
        "dev_ce": final_loss,
        "search": {"budget": mcfg.budget, "l1": mcfg.l1, "bound": mcfg.weight_bound, "seed": mcfg.seed},
        "cotdistill_version": cotdistill.__version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": json.loads(json.dumps(config.model_dump(mode="json"))),
    }
    atomic_write_json(tmp / PROVENANCE_NAME, info)
    os.replace(tmp, student_dir)
    log.info("[mode] composed %d experts, dev CE %.4f; weights %s", len(names), final_loss,
             ", ".join(f"{n}={x:+.2f}" for n, x in zip(names, w)))
    return student_dir
