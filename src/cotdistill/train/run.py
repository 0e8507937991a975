"""``train(config, dataset_dir, run_dir)``: fine-tune the student on a curated path dataset with one method.

Layout written under ``run_dir``::

    checkpoints/checkpoint-N/   Trainer checkpoints (+ cotdistill_method.pt); a rerun resumes from the last one
    dynamics.jsonl              one line per optimizer step (loss, lr, method signals)
    logs/                       TensorBoard events (report_to, offline)
    student/                    final LoRA adapter (adapter_config.json) or full model, tokenizer, README.md,
                                cotdistill_train.json (provenance); written atomically, never overwritten

Works unchanged under ``accelerate launch`` / ``torchrun`` (DDP, FSDP, DeepSpeed: see ``configs/accelerate``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cotdistill.config import Config, dump_config
from cotdistill.errors import CotdistillError
from cotdistill.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

PROVENANCE_NAME = "cotdistill_train.json"


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def _cpu_only() -> bool:
    import torch

    return not torch.cuda.is_available()


def load_student(spec: str, *, attn_implementation: str | None = None, dtype: str = "float32",
                 adapter: str | None = None):
    """Model, tokenizer and provenance for training; ``adapter`` continues training an existing LoRA adapter."""
    from cotdistill.models import load_model_and_tokenizer

    return load_model_and_tokenizer(spec, dtype=dtype, for_training=True, attn_implementation=attn_implementation,
                                    adapter=adapter)


def prepare_dataset(dataset, method):
    """Apply the method's path selection, drop questions left without paths, add ``_row`` and ``length`` columns.

    ``length`` (characters of question + longest path) feeds the Trainer's length-grouped sampler.
    """
    select = getattr(method, "select_paths", None)

    def fn(row: dict, idx: int) -> dict:
        paths = select(row) if select is not None else row["paths"]
        longest = max((len(p["text"]) for p in paths), default=0)
        return {"paths": paths, "_row": idx, "length": len(row["question"]) + longest}

    ds = dataset.map(fn, with_indices=True, desc="select paths")
    return ds.filter(lambda r: len(r["paths"]) > 0, desc="drop empty")


def _cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX512-BF16 or AMX-BF16; Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _bf16_enabled(requested: bool) -> bool:
    """bf16 autocast if requested: on GPUs that support it; on CPUs with native bf16 instructions.

    ``COTDISTILL_CPU_BF16=0|1`` forces the CPU choice. Measured on this project's AMD EPYC (avx512_bf16),
    SmolLM2-135M + LoRA, one 192-token sequence, 1 thread: fp32 1.98 CPU-s per forward+backward, bf16
    autocast 1.04 CPU-s (≈1.9x faster), so bf16 is the CPU default where the instructions exist.
    """
    import torch

    if not requested:
        return False
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    forced = os.environ.get("COTDISTILL_CPU_BF16")
    if forced in ("0", "1"):
        return forced == "1"
    return _cpu_has_bf16()


def train(
    config: Config,
    dataset_dir: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    resume: bool = True,
    callbacks: list | None = None,
) -> Path:
    """Train ``config.train.model`` with ``config.method`` on the path dataset; return ``run_dir/student``.

    A finished run (``student/`` with provenance) is not touched: the call returns it with a message.
    With ``resume`` a rerun continues from the last complete checkpoint in ``run_dir/checkpoints``.
    ``callbacks`` are extra :class:`transformers.TrainerCallback` objects (progress hooks, tests).
    """
    import torch
    from transformers import TrainingArguments, set_seed

    from cotdistill.curate import load_path_dataset
    from cotdistill.methods.registry import get_method
    from cotdistill.train.collate import PathCollator, build_label_vocab
    from cotdistill.train.trainer import DistillTrainer, last_complete_checkpoint, truncate_dynamics

    run_dir = Path(run_dir)
    student_dir = run_dir / "student"
    if (student_dir / PROVENANCE_NAME).is_file():
        print(f"{student_dir}: training already finished; nothing to do (remove it to retrain)")
        return student_dir
    if student_dir.exists() and any(student_dir.iterdir()):
        raise CotdistillError(f"{student_dir}: student: exists without {PROVENANCE_NAME}; not overwriting it")

    tc = config.effective_train()
    set_seed(tc.seed)
    method = get_method(config.method, config)

    dd = load_path_dataset(dataset_dir)
    train_ds = prepare_dataset(dd["train"], method)
    if len(train_ds) == 0:
        raise CotdistillError(f"{dataset_dir}: train: no question has a path for method {config.method}")
    dev_ds = prepare_dataset(dd["dev"], method) if "dev" in dd and len(dd["dev"]) else None
    label_vocab = build_label_vocab(list(dd["train"]) + (list(dd["dev"]) if "dev" in dd else []))

    model, tok, model_prov = load_student(tc.model, attn_implementation=tc.attn_implementation,
                                          adapter=tc.init_adapter)
    if tc.finetune == "lora" and tc.init_adapter is None:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(r=tc.lora.r, lora_alpha=tc.lora.alpha, lora_dropout=tc.lora.dropout, bias=tc.lora.bias,
                       target_modules=list(tc.lora.target_modules), task_type="CAUSAL_LM"),
        )
    model.config.use_cache = False
    collator = PathCollator(
        tok,
        max_seq_len=tc.max_seq_len,
        student_instruction=config.data.student_instruction,
        answer_suffix=config.data.answer_suffix,
        label_vocab=label_vocab,
        answer_span_scope=config.data.answer_span_scope,
        share_prompt=tc.share_prompt,
        **(method.collator_kwargs() if hasattr(method, "collator_kwargs") else {}),
    )
    if getattr(method, "collator_kind", "paths") == "dual_cot":  # EDIT: chosen/rejected pairs
        from cotdistill.train.dual import DualCotCollator

        collator = DualCotCollator(collator)
    method.collator, method.run_dir = collator, run_dir  # MIND batches L0 with it and caches its warm-up

    run_dir.mkdir(parents=True, exist_ok=True)
    if _is_main_process() and not (run_dir / "config.yaml").exists():
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
    bf16 = _bf16_enabled(tc.bf16)
    report_to = [r for r in tc.report_to if r != "none"]
    if "tensorboard" in report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "logs")
    args = TrainingArguments(
        output_dir=str(run_dir / "checkpoints"),
        per_device_train_batch_size=tc.questions_per_step,
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=tc.grad_accum,
        learning_rate=tc.lr,
        weight_decay=tc.weight_decay,
        lr_scheduler_type=tc.scheduler,
        warmup_steps=tc.warmup_ratio,
        optim="adamw_torch",
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps,
        max_grad_norm=tc.max_grad_norm,
        bf16=bf16,
        gradient_checkpointing=tc.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if tc.gradient_checkpointing else None,
        seed=tc.seed,
        data_seed=tc.seed,
        logging_steps=tc.logging_steps,
        save_strategy="steps",
        save_steps=tc.save_steps,
        save_total_limit=tc.save_total_limit,
        report_to=report_to or "none",
        remove_unused_columns=False,
        prediction_loss_only=True,
        eval_strategy="epoch" if dev_ds is not None else "no",
        train_sampling_strategy="group_by_length" if tc.questions_per_step > 1 else "random",
        dataloader_num_workers=0,
        use_cpu=_cpu_only(),
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )
    trainer = DistillTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=dev_ds,
        data_collator=collator,
        processing_class=tok,
        method=method,
        dynamics_path=run_dir / "dynamics.jsonl",
        callbacks=callbacks,
    )
    # after the Trainer placed the model on its device; methods skip work their restored state already has
    import inspect

    # autocast: the trainer's mixed precision, so that losses computed in prepare (MIND's L0) are the ones the
    # training forward computes (and take bf16 time, not fp32 time)
    offered = {"collator": collator, "label_vocab": label_vocab, "run_dir": run_dir,
               "autocast": trainer.accelerator.autocast}
    params = inspect.signature(method.prepare).parameters
    method.prepare(train_ds, tok, trainer.model, **{k: v for k, v in offered.items() if k in params})
    for module in method.trainable_modules():
        module.to(args.device)
    ckpt = last_complete_checkpoint(run_dir / "checkpoints") if resume else None
    if ckpt is not None:
        step = json.loads((Path(ckpt) / "trainer_state.json").read_text())["global_step"]
        print(f"resuming from {ckpt} (step {step})")
        if trainer.is_world_process_zero():
            truncate_dynamics(run_dir / "dynamics.jsonl", step)
    elif trainer.is_world_process_zero() and (run_dir / "dynamics.jsonl").exists():
        truncate_dynamics(run_dir / "dynamics.jsonl", 0)  # fresh start: old lines belong to a dead run
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=ckpt)
    elapsed = time.time() - t0

    if trainer.is_world_process_zero():
        _save_student(trainer, tok, config, run_dir, dataset_dir, model_prov, result, elapsed, bf16)
    trainer.accelerator.wait_for_everyone()
    return student_dir


def train_method(config: Config, dataset_dir: str | os.PathLike, run_dir: str | os.PathLike) -> Path:
    """Train ``config.method``, including the methods made of several training runs.

    - ``mode``: one Std-CoT expert per unit, then LoraHub composition (:mod:`cotdistill.train.mode`).
    - ``edit`` with ``edit.init_from = std_cot``: a Std-CoT run in ``run_dir/edit_init`` first, then KRSL
      continues training its adapter (full fine-tuning: its weights).
    - everything else: :func:`train`.
    """
    run_dir = Path(run_dir)
    if config.method == "mode":
        from cotdistill.train.mode import train_mode

        return train_mode(config, dataset_dir, run_dir)
    if config.method == "edit" and config.edit.init_from == "std_cot":
        init_cfg = config.model_copy(deep=True)
        init_cfg.method = "std_cot"
        init_cfg.std_cot = init_cfg.std_cot.model_copy(update={"train": dict(config.edit.train)})
        init_dir = train(init_cfg, dataset_dir, run_dir / "edit_init")
        cfg = config.model_copy(deep=True)
        tc = config.effective_train("edit")
        if tc.finetune == "lora":
            cfg.edit = cfg.edit.model_copy(update={"train": dict(config.edit.train) | {"init_adapter": str(init_dir)}})
        else:
            cfg.edit = cfg.edit.model_copy(update={"train": dict(config.edit.train) | {"model": str(init_dir)}})
        return train(cfg, dataset_dir, run_dir)
    return train(config, dataset_dir, run_dir)


def _save_student(trainer, tok, config: Config, run_dir: Path, dataset_dir, model_prov: dict, result,
                  elapsed: float, bf16: bool) -> None:
    """Write ``student/`` atomically: save into a temp folder, then rename."""
    import cotdistill
    from cotdistill.methods.registry import student_user_prefix

    student_dir = run_dir / "student"
    tmp = run_dir / ".student.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    card = _data_card(dataset_dir)
    tc = config.effective_train()
    prov: dict[str, Any] = {
        "method": config.method,
        "finetune": tc.finetune,
        "base_model": model_prov,
        "dataset_dir": str(dataset_dir),
        "data_card": card,
        "global_step": trainer.state.global_step,
        "epoch": trainer.state.epoch,
        "train_loss": getattr(result, "training_loss", None),
        "train_seconds": round(elapsed, 1),
        "seed": tc.seed,
        "eval_user_prefix": student_user_prefix(config),  # `cotdistill eval` applies it to this student
        "bf16": bf16,
        "world_size": trainer.args.world_size,
        "cotdistill_version": getattr(cotdistill, "__version__", "unknown"),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": json.loads(json.dumps(config.model_dump(mode="json"))),
    }
    atomic_write_json(tmp / PROVENANCE_NAME, prov)
    atomic_write_text(tmp / "README.md", _model_card(config, model_prov, card, prov))
    os.replace(tmp, student_dir)
    print(f"student saved to {student_dir}")


def _data_card(dataset_dir) -> dict:
    p = Path(dataset_dir) / "data_card.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _model_card(config: Config, model_prov: dict, card: dict, prov: dict) -> str:
    tc = config.effective_train()
    summary = {k: v for k, v in card.items() if k == "splits" or not isinstance(v, (dict, list))} if card else {}
    lines = [
        "---",
        "library_name: " + ("peft" if tc.finetune == "lora" else "transformers"),
        f"base_model: {model_prov.get('model', tc.model)}",
        "tags: [cotdistill, chain-of-thought, distillation, " + config.method + "]",
        "---",
        "",
        f"# {config.run.name}: {config.method} student",
        "",
        f"Distilled with **cotdistill** method `{config.method}` ({tc.finetune} fine-tuning) from the base "
        f"model `{model_prov.get('model', tc.model)}` (weights sha `{model_prov.get('model_sha')}`).",
        "",
        "## Training",
        "",
        f"- steps: {prov['global_step']}, epochs: {prov['epoch']:.3g}, final train loss: {prov['train_loss']}",
        f"- lr {tc.lr} ({tc.scheduler}), grad_accum {tc.grad_accum}, questions/step {tc.questions_per_step}, "
        f"max_seq_len {tc.max_seq_len}, seed {tc.seed}, bf16 {prov['bf16']}",
        f"- prompt: chat template, user turn = question + `{config.data.student_instruction}`",
        f"- answer suffix: `{config.data.answer_suffix}`",
        "",
        "## Data",
        "",
        "```json",
        json.dumps(summary, indent=2, ensure_ascii=False, default=str),
        "```",
        "",
        "## Config",
        "",
        "```yaml",
        dump_config(config).rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)
