"""``DistillTrainer``: a :class:`transformers.Trainer` that hands each micro-step to a :class:`Method`.

Overridden (only what must be, in the style of TRL's GKDTrainer):

* :meth:`DistillTrainer.training_step` — ``method.training_step(model, batch, backward)``; ``backward`` divides by
  the gradient-accumulation steps and goes through ``accelerator.backward`` (DDP/FSDP/DeepSpeed aware).
* :meth:`DistillTrainer.compute_loss` — delegates to ``method.compute_loss`` (used for evaluation).
* :meth:`DistillTrainer.log` — adds the method signals, averaged since the last log, to the Trainer's logs
  (and so to ``report_to``, TensorBoard by default).
* checkpoint save/load — the method's ``state_dict()`` is saved as ``cotdistill_method.pt`` in each checkpoint
  folder and restored on resume.

One JSON line per optimizer step goes to ``dynamics.jsonl`` (rank 0 only), micro-step signals averaged::

    {"step": int, "epoch": float, "loss": float, "lr": float, "signals": {name: float | {label: float}}}

Methods may read ``method.progress`` (:class:`TrainProgress`), set before every micro-step.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import ProgressCallback, Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from cotdistill.errors import CotdistillError
from cotdistill.train.guards import StepGuard, check_finite_parameters, trainable_tokens
from cotdistill.utils.io import append_jsonl, atomic_write_text, read_jsonl

METHOD_STATE_NAME = "cotdistill_method.pt"


@dataclass
class TrainProgress:
    """Where training stands, for methods with schedules (MIND's phases, MCC-KD's per-epoch pairs)."""

    global_step: int  # optimizer steps done
    epoch: float  # fractional epochs done
    max_steps: int
    steps_per_epoch: int  # optimizer steps per epoch (0 if unknown)


def average_signals(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Average micro-step signals: floats by mean, ``{label: float}`` per label, equal-length lists elementwise."""
    out: dict[str, Any] = {}
    keys: list[str] = []
    for it in items:
        keys += [k for k in it if k not in keys]
    for k in keys:
        vals = [it[k] for it in items if k in it and it[k] is not None]
        if not vals:
            continue
        v0 = vals[0]
        if isinstance(v0, dict):
            labels: dict[str, list[float]] = {}
            for v in vals:
                for lab, x in v.items():
                    labels.setdefault(str(lab), []).append(float(x))
            out[k] = {lab: sum(xs) / len(xs) for lab, xs in labels.items()}
        elif isinstance(v0, (list, tuple)):
            if all(len(v) == len(v0) for v in vals):
                out[k] = [sum(float(v[i]) for v in vals) / len(vals) for i in range(len(v0))]
            else:
                out[k] = [float(x) for x in vals[-1]]
        else:
            out[k] = sum(float(_scalar(v)) for v in vals) / len(vals)
    return out


def _scalar(v: Any) -> float:
    return float(v.item()) if isinstance(v, torch.Tensor) else float(v)


def flatten_signals(signals: dict[str, Any], prefix: str = "signals") -> dict[str, float]:
    """``{"alpha": {"a": 0.2}}`` → ``{"signals/alpha/a": 0.2}`` (lists indexed) for scalar loggers."""
    flat: dict[str, float] = {}
    for k, v in signals.items():
        if isinstance(v, dict):
            flat.update({f"{prefix}/{k}/{lab}": float(x) for lab, x in v.items()})
        elif isinstance(v, (list, tuple)):
            flat.update({f"{prefix}/{k}/{i}": float(x) for i, x in enumerate(v)})
        else:
            flat[f"{prefix}/{k}"] = float(v)
    return flat


def truncate_dynamics(path: str | os.PathLike, max_step: int) -> None:
    """Drop dynamics lines past ``max_step`` (written after the checkpoint a resumed run restarts from)."""
    path = Path(path)
    if not path.exists():
        return
    keep = [r for r in read_jsonl(path) if int(r.get("step", 0)) <= max_step]
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))


class _DynamicsCallback(TrainerCallback):
    """Writes one dynamics line per optimizer step (the trainer owns the accumulated micro-step values)."""

    def __init__(self, trainer: DistillTrainer):
        self.trainer = trainer
        self.lr: float | None = None

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.lr = self.trainer._get_learning_rate()  # the lr the step just used (before the scheduler moves)

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer._flush_step(state, self.lr)


class _ConsoleProgress(ProgressCallback):
    """The Trainer's progress bar, printing only loss/lr/grad-norm lines: per-label method signals (dozens of
    keys) still go to dynamics.jsonl and the `report_to` loggers, but would flood the console."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = {k: v for k, v in (logs or {}).items() if not k.startswith("signals/")}
        super().on_log(args, state, control, logs=logs, **kwargs)


class DistillTrainer(Trainer):
    """Trainer whose loss and backward belong to a :class:`~cotdistill.methods.base.Method`.

    Args:
        method: the method instance.
        dynamics_path: ``run_dir/dynamics.jsonl`` (None: not written).
        max_seq_len: ``train.max_seq_len`` (named in the guard's errors, see :mod:`cotdistill.train.guards`).
        **kwargs: passed to :class:`transformers.Trainer` (``model``, ``args``, datasets, ``data_collator``, ...).
    """

    def __init__(self, *args, method, dynamics_path: str | os.PathLike | None = None, max_seq_len: int | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.method = method
        # stop on a non-finite loss or a step with no trainable token (every rank, after the reduce)
        self._guard = StepGuard(scaler_active=getattr(self.accelerator, "scaler", None) is not None,
                                lr=self.args.learning_rate, max_seq_len=max_seq_len or 0)
        self._step_tokens = 0
        self.dynamics_path = Path(dynamics_path) if dynamics_path else None
        self._step_losses: list[float] = []
        self._step_signals: list[dict[str, Any]] = []
        self._log_signals: list[dict[str, Any]] = []
        self.add_callback(_DynamicsCallback(self))
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(_ConsoleProgress)
        for module in method.trainable_modules():
            module.to(self.args.device)

    # ------------------------------------------------------------------ step
    def training_step(self, model, inputs, num_items_in_batch=None):
        """One micro-step: the method runs forward and backward; returns the GA-scaled detached loss."""
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        self._step_tokens += trainable_tokens(inputs)
        self.method.progress = TrainProgress(
            self.state.global_step, float(self.state.epoch or 0.0), self.state.max_steps, self._steps_per_epoch()
        )
        ga = self.current_gradient_accumulation_steps
        kwargs = {}
        deepspeed = self.accelerator.distributed_type == "DEEPSPEED"
        if deepspeed:
            kwargs["scale_wrt_gas"] = False  # we scale by GA ourselves
        calls = [0]

        def backward(loss: torch.Tensor) -> None:
            calls[0] += 1
            if deepspeed and calls[0] > 1:
                # accelerate's DeepSpeed backward also steps the engine at the sync micro-step
                raise CotdistillError(
                    "config: train.paths_micro_batch: DeepSpeed allows one backward per micro-step; "
                    "set it to at least the number of paths per question"
                )
            self.accelerator.backward(loss / ga, **kwargs)

        with self.compute_loss_context_manager():
            loss, signals = self.method.training_step(model, inputs, backward)
        loss = loss.detach().float().reshape(())
        self._step_losses.append(float(loss))
        self._step_signals.append(signals or {})
        self._log_signals.append(signals or {})
        return (loss / ga).to(self.args.device)

    def _steps_per_epoch(self) -> int:
        if getattr(self, "_spe", None) is None:
            try:
                n = len(self.train_dataset) // max(1, self.args.per_device_train_batch_size * self.args.world_size)
                self._spe = max(1, -(-n // max(1, self.args.gradient_accumulation_steps)))
            except TypeError:
                self._spe = 0
        return self._spe

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The method's loss (evaluation path; training goes through :meth:`training_step`)."""
        loss, signals = self.method.compute_loss(model, inputs)
        return (loss, {"signals": signals}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Eval loss only (the batch contract has no logits to compare)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, _ = self.method.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ logging
    def _flush_step(self, state, lr: float | None) -> None:
        """Called at each optimizer step end on every rank: reduce the loss, rank 0 appends the dynamics line."""
        losses, sigs = self._step_losses, self._step_signals
        self._step_losses, self._step_signals = [], []
        loss = torch.tensor(sum(losses) / max(1, len(losses)), device=self.args.device)
        tokens = torch.tensor(float(self._step_tokens), device=self.args.device)
        self._step_tokens = 0
        if self.args.world_size > 1:
            loss = self.accelerator.reduce(loss, reduction="mean")
            tokens = self.accelerator.reduce(tokens, reduction="sum")
        if self.dynamics_path is not None and self.is_world_process_zero():
            self._append_dynamics(state, lr, loss, sigs)
        if losses:
            self._guard.check(state.global_step, float(loss), int(tokens))

    def _append_dynamics(self, state, lr: float | None, loss: torch.Tensor, sigs: list[dict[str, Any]]) -> None:
        append_jsonl(
            self.dynamics_path,
            [{"step": state.global_step, "epoch": round(float(state.epoch or 0.0), 6), "loss": float(loss),
              "lr": float(lr if lr is not None else self._get_learning_rate()), "signals": average_signals(sigs)}],
            fsync=False,
        )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the averaged method signals (flattened ``signals/name[/label]``) to training logs."""
        if self._log_signals and "loss" in logs:
            logs = dict(logs) | flatten_signals(average_signals(self._log_signals))
            self._log_signals = []
        super().log(logs, start_time)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial):
        """Trainer checkpoint plus the method's state (rank 0), written before rotation can pick it as last.

        Never written when a weight is NaN/inf (:func:`~cotdistill.train.guards.check_finite_parameters`)."""
        check_finite_parameters([model, *self.method.trainable_modules()], f"checkpoint {self.state.global_step}")
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            tmp = folder / (METHOD_STATE_NAME + ".tmp")
            torch.save(self.method.state_dict(), tmp)
            os.replace(tmp, folder / METHOD_STATE_NAME)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Restore model weights (Trainer) and the method's state."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / METHOD_STATE_NAME
        if path.exists():
            self.method.load_state_dict(torch.load(path, map_location="cpu", weights_only=False))


def last_complete_checkpoint(folder: str | os.PathLike) -> str | None:
    """Newest ``checkpoint-N`` holding both the Trainer state and the method state (a kill mid-save is skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    cands = []
    for p in folder.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX_CHECKPOINT_DIR + "-") and p.name.split("-")[-1].isdigit():
            if (p / "trainer_state.json").exists() and (p / METHOD_STATE_NAME).exists():
                cands.append((int(p.name.split("-")[-1]), p))
    return str(max(cands)[1]) if cands else None
