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
    """Apply the method's role selection (:meth:`~cotdistill.methods.base.Method.select_row`), drop questions
    left without paths, add ``_row`` and ``length`` columns.

    ``length`` (characters of question + longest path) feeds the Trainer's length-grouped sampler.
    """
    select = getattr(method, "select_row", None)

    def fn(row: dict, idx: int) -> dict:
        cols = select(row) if select is not None else {"paths": row["paths"]}
        longest = max((len(p["text"]) for p in cols["paths"]), default=0)
        return cols | {"_row": idx, "length": len(row["question"]) + longest}

    ds = dataset.map(fn, with_indices=True, desc="select paths")
    if "rejected_paths" in ds.column_names and len(dataset) and "rejected_paths" not in fn(dataset[0], 0):
        ds = ds.remove_columns("rejected_paths")  # only a method that selects them (EDIT) trains on them
    return ds.filter(lambda r: len(r["paths"]) > 0, desc="drop empty")


def role_counts(dataset) -> dict[str, int]:
    """Paths per role of a path dataset split (``paths`` and, if present, ``rejected_paths``), sorted by role."""
    from collections import Counter

    from cotdistill.pathset.roles import path_role

    c = Counter(path_role(p) for paths in dataset["paths"] for p in paths)
    if "rejected_paths" in dataset.column_names:
        c.update(path_role(p) for paths in dataset["rejected_paths"] for p in (paths or []))
    return dict(sorted(c.items()))


def role_summary(dataset) -> str:
    """``standard 300, perspective:level2 290, ...``: :func:`role_counts` as one phrase (error lines)."""
    return ", ".join(f"{k} {v}" for k, v in role_counts(dataset).items()) or "no paths"


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
    from transformers import set_seed

    from cotdistill.curate import load_path_dataset
    from cotdistill.methods.registry import get_method
    from cotdistill.pathset.collate import PathCollator, build_label_vocab
    from cotdistill.train.trainer import DistillTrainer, last_complete_checkpoint, truncate_dynamics

    run_dir = Path(run_dir)
    student_dir = run_dir / "student"
    if (student_dir / PROVENANCE_NAME).is_file():
        log.info("%s: training already finished; nothing to do (remove it to retrain)", student_dir)
        return student_dir
    if student_dir.exists() and any(student_dir.iterdir()):
        raise CotdistillError(f"{student_dir}: student: exists without {PROVENANCE_NAME}; not overwriting it")

    tc = config.effective_train()
    set_seed(tc.seed)
    method = get_method(config.method, config)

    dd = load_path_dataset(dataset_dir)
    train_ds = prepare_dataset(dd["train"], method)
    if len(train_ds) == 0:
        from cotdistill.pathset.roles import METHOD_ROLES

        raise CotdistillError(
            f"{dataset_dir}: paths: method {config.method} trains on {METHOD_ROLES.get(config.method, 'its paths')}; "
            f"no question has one (the dataset holds: {role_summary(dd['train'])})"
        )
    if len(train_ds) < len(dd["train"]):
        log.warning("%s: %d of %d questions have no path for %s and are left out", dataset_dir,
                    len(dd["train"]) - len(train_ds), len(dd["train"]), config.method)
    dev_ds = prepare_dataset(dd["dev"], method) if "dev" in dd and len(dd["dev"]) else None
    # the labels of the paths the method trains on (MIND's MetaNet sees one slot per label)
    label_vocab = build_label_vocab(list(train_ds) + (list(dev_ds) if dev_ds is not None else []))

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
        from cotdistill.pathset.dual import DualCotCollator

        collator = DualCotCollator(collator)
    method.collator, method.run_dir = collator, run_dir  # MIND batches L0 with it and caches its warm-up
    from cotdistill.train.guards import check_answer_spans, check_final_loss, check_finite_parameters

    check_answer_spans(collator, train_ds, str(dataset_dir), tc.max_seq_len)  # most answers cut: refused

    run_dir.mkdir(parents=True, exist_ok=True)
    if _is_main_process():
        from cotdistill.utils.runfolder import claim_folder

        claim_folder(run_dir)  # never write into a folder that is not cotdistill's
    if _is_main_process() and not (run_dir / "config.yaml").exists():
        atomic_write_text(run_dir / "config.yaml", dump_config(config))
    bf16 = _bf16_enabled(tc.bf16)
    if "tensorboard" in tc.report_to:
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "logs")
    args = training_arguments(config, run_dir, dev=dev_ds is not None, bf16=bf16)
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
        max_seq_len=tc.max_seq_len,
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
        log.info("resuming from %s (step %d)", ckpt, step)
        if trainer.is_world_process_zero():
            truncate_dynamics(run_dir / "dynamics.jsonl", step)
    elif trainer.is_world_process_zero() and (run_dir / "dynamics.jsonl").exists():
        truncate_dynamics(run_dir / "dynamics.jsonl", 0)  # fresh start: old lines belong to a dead run
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=ckpt)
    elapsed = time.time() - t0
    # every rank checks (same weights under DDP), so none waits for a rank 0 that refuses to save
    check_finite_parameters([trainer.model, *method.trainable_modules()], "the student")
    check_final_loss(trainer, train_ds)

    if trainer.is_world_process_zero():
        _save_student(trainer, tok, config, run_dir, dataset_dir, model_prov, result, elapsed, bf16,
                      role_counts(train_ds))
        if tc.push_to_hub:
            from cotdistill.utils.hub import push_folder

            push_folder(student_dir, tc.hub_model_id or config.run.name, repo_type="model", private=tc.hub_private,
                        where="config: train.hub_model_id")
    trainer.accelerator.wait_for_everyone()
    return student_dir


#: TrainingArguments that cotdistill's trainer depends on: never taken from train.trainer_args
_FIXED_TRAINER_ARGS = ("output_dir", "remove_unused_columns", "prediction_loss_only")
#: TrainingArguments set from train.* keys: train.trainer_args may not set them (one place per setting)
_TRAINER_ARGS_FROM_TRAIN = {
    "per_device_train_batch_size": "questions_per_step", "gradient_accumulation_steps": "grad_accum",
    "learning_rate": "lr", "weight_decay": "weight_decay", "lr_scheduler_type": "scheduler",
    "warmup_ratio": "warmup_ratio", "num_train_epochs": "epochs", "max_steps": "max_steps",
    "max_grad_norm": "max_grad_norm", "bf16": "bf16", "gradient_checkpointing": "gradient_checkpointing",
    "seed": "seed", "logging_steps": "logging_steps", "save_steps": "save_steps",
    "save_total_limit": "save_total_limit", "report_to": "report_to",
}


def training_arguments(config: Config, run_dir: str | os.PathLike, *, dev: bool = False, bf16: bool | None = None,
                       where: str = "config"):
    """The ``transformers.TrainingArguments`` of a run: ``train.*`` keys, then ``train.trainer_args`` on top.

    ``cotdistill validate`` builds it too, so an argument TrainingArguments rejects is a one-line config error
    (``where: train.trainer_args.KEY: ...``) before any model is loaded. ``dev``: evaluate the dev split each epoch.
    """
    from transformers import TrainingArguments

    tc = config.effective_train()
    extra = dict(tc.trainer_args)
    for key in extra:
        if key in _FIXED_TRAINER_ARGS:
            raise CotdistillError(f"{where}: train.trainer_args.{key}: set by cotdistill itself; remove it")
        if key in _TRAINER_ARGS_FROM_TRAIN or key == "warmup_steps" and tc.warmup_ratio:
            name = _TRAINER_ARGS_FROM_TRAIN.get(key, "warmup_ratio")
            raise CotdistillError(f"{where}: train.trainer_args.{key}: set train.{name} instead (one place per setting)")
    report_to = [r for r in tc.report_to if r != "none"]
    base: dict[str, Any] = dict(
        output_dir=str(Path(run_dir) / "checkpoints"),
        run_name=config.run.name,  # names the W&B / Trackio / MLflow run
        per_device_train_batch_size=tc.questions_per_step,
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=tc.grad_accum,
        learning_rate=tc.lr,
        weight_decay=tc.weight_decay,
        lr_scheduler_type=tc.scheduler,
        # transformers 5: warmup_ratio is gone and a warmup_steps value below 1 is that fraction of the total steps
        # (pyproject requires transformers>=5; on 4.x this would have meant 0 steps)
        warmup_steps=tc.warmup_ratio,
        optim="adamw_torch",
        num_train_epochs=tc.epochs,
        max_steps=tc.max_steps,
        max_grad_norm=tc.max_grad_norm,
        bf16=_bf16_enabled(tc.bf16) if bf16 is None else bf16,
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
        eval_strategy="epoch" if dev else "no",
        train_sampling_strategy="group_by_length" if tc.questions_per_step > 1 else "random",
        dataloader_num_workers=0,
        use_cpu=_cpu_only(),
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
    )
    try:
        return TrainingArguments(**(base | extra))
    except TypeError as e:  # an argument TrainingArguments does not have
        import re

        import transformers

        m = re.search(r"unexpected keyword argument '([^']+)'", str(e))
        key = m.group(1) if m else "?"
        raise CotdistillError(f"{where}: train.trainer_args.{key}: not a TrainingArguments argument "
                              f"(transformers {transformers.__version__})") from None
    except (ValueError, ImportError) as e:  # a value TrainingArguments refuses (or a missing integration)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        keys = ", ".join(sorted(extra)) or "-"
        raise CotdistillError(f"{where}: train.trainer_args ({keys}): TrainingArguments refused it: {first}") from None


def _save_student(trainer, tok, config: Config, run_dir: Path, dataset_dir, model_prov: dict, result,
                  elapsed: float, bf16: bool, paths_trained: dict[str, int]) -> None:
    """Write ``student/`` atomically: save into a temp folder, then rename."""
    import cotdistill
    from cotdistill.methods.registry import student_user_prefix

    student_dir = run_dir / "student"
    tmp = run_dir / ".student.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.save_pretrained(tmp)
    base_hub_id = name_hub_base(tmp, config.effective_train().model)
    tok.save_pretrained(tmp)
    card = _data_card(dataset_dir)
    tc = config.effective_train()
    prov: dict[str, Any] = {
        "method": config.method,
        "finetune": tc.finetune,
        "base_model": model_prov,
        "base_model_hub_id": base_hub_id,
        "dataset_dir": str(dataset_dir),
        "data_card": card,
        "paths_trained": paths_trained,  # role -> paths the method trained on (its role selection)
        "global_step": trainer.state.global_step,
        "epoch": trainer.state.epoch,
        "train_loss": getattr(result, "training_loss", None),
        "train_seconds": round(elapsed, 1),
        "seed": tc.seed,
        "eval_user_prefix": student_user_prefix(config),  # `cotdistill eval` applies it to this student
        "eval_instruction": config.data.student_instruction,  # ... and this instruction ("" = none)
        "bf16": bf16,
        "world_size": trainer.args.world_size,
        "cotdistill_version": getattr(cotdistill, "__version__", "unknown"),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": json.loads(json.dumps(config.model_dump(mode="json"))),
    }
    atomic_write_json(tmp / PROVENANCE_NAME, prov)
    atomic_write_text(tmp / "README.md", _model_card(config, model_prov, card, prov))
    os.replace(tmp, student_dir)
    log.info("student saved to %s", student_dir)


def name_hub_base(folder: Path, base_spec: str) -> str | None:
    """Make a saved adapter in ``folder`` name the Hub id of its base (``base_model_name_or_path``) instead of the
    local GGUF conversion (a cache), when ``base_spec`` has one; return that id (None: left as saved).

    Done after ``save_pretrained``, so PEFT checks the embeddings against the local base, never looking online.
    """
    from cotdistill.models import hub_model_id

    base_hub_id = hub_model_id(base_spec)
    adapter_cfg = Path(folder) / "adapter_config.json"
    if base_hub_id is not None and adapter_cfg.is_file():
        atomic_write_json(adapter_cfg, json.loads(adapter_cfg.read_text()) | {"base_model_name_or_path": base_hub_id})
    return base_hub_id


def _data_card(dataset_dir) -> dict:
    p = Path(dataset_dir) / "data_card.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _model_card(config: Config, model_prov: dict, card: dict, prov: dict) -> str:
    tc = config.effective_train()
    summary = {k: v for k, v in card.items() if k == "splits" or not isinstance(v, (dict, list))} if card else {}
    import yaml

    meta: dict[str, Any] = {"library_name": "peft" if tc.finetune == "lora" else "transformers"}
    if prov.get("base_model_hub_id"):  # the Hub only accepts repo ids here (no local paths or aliases)
        meta["base_model"] = prov["base_model_hub_id"]
    meta |= {"pipeline_tag": "text-generation",
             "tags": ["cotdistill", "chain-of-thought", "distillation", config.method]
             + (["lora", "peft"] if tc.finetune == "lora" else [])}
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {config.run.name}: {config.method} student",
        "",
        f"Distilled with **cotdistill** method `{config.method}` ({tc.finetune} fine-tuning) from the base "
        f"model `{prov.get('base_model_hub_id') or model_prov.get('model', tc.model)}` (weights sha "
        f"`{model_prov.get('model_sha')}`).",
        "",
        "## Use",
        "",
        "```python",
        *(_usage_snippet(prov.get("base_model_hub_id"), tc.finetune)),
        "```",
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


def _usage_snippet(base_hub_id: str | None, finetune: str) -> list[str]:
    """Lines of Python that load the student from the Hub (``REPO`` = where it was pushed)."""
    if finetune != "lora":
        return ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                'model = AutoModelForCausalLM.from_pretrained("REPO")', 'tokenizer = AutoTokenizer.from_pretrained("REPO")']
    base = base_hub_id or "BASE_MODEL"
    return ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            f'base = AutoModelForCausalLM.from_pretrained("{base}")',
            'model = PeftModel.from_pretrained(base, "REPO")  # or a local student/ folder',
            'tokenizer = AutoTokenizer.from_pretrained("REPO")']
