"""Guards that stop a training run producing garbage while reporting success.

* :func:`check_answer_spans` — before training: how many paths lose their answer span (or every trainable
  token) to ``train.max_seq_len``; refuses a dataset where most do, reports the count otherwise.
* :class:`StepGuard` — during training, once per optimizer step (values reduced over ranks, so every rank
  stops together): a non-finite loss or a step without a single trainable token is a one-line error. Under
  fp16 loss scaling the Trainer's grad scaler skips overflowing steps itself and lowers its scale; the guard
  then allows :data:`SCALER_PATIENCE` consecutive non-finite steps before it stops the run.
* :func:`check_finite_parameters` — before a checkpoint or the final student is written: no NaN/inf weight is
  ever saved (a huge learning rate can break the weights in the very last step, after the last loss was seen).
* :func:`check_final_loss` — after the last step: one forward pass of the trained model on a training
  question must give a finite loss (weights can be finite yet so large that the forward overflows).

The errors are :class:`~cotdistill.errors.CotdistillError`: the stage fails, nothing is marked complete.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch

from cotdistill.errors import CotdistillError
from cotdistill.methods.losses import IGNORE_INDEX

log = logging.getLogger(__name__)

SCALER_PATIENCE = 16  # consecutive skipped fp16 steps: the loss scale has then dropped by 2**16 (exhausted)
MAX_CUT_FRACTION = 0.5  # refuse a dataset where more than this share of paths lost their answer span


def trainable_tokens(batch: dict) -> int:
    """Tokens that carry loss in a collated micro-batch: labels other than ``-100`` in every ``*labels`` key
    (``labels``; SbS ``label_labels``; EDIT ``chosen_labels``/``rejected_labels``). Shapes ``[N, T]``."""
    total = 0
    for k, v in batch.items():
        if (k == "labels" or k.endswith("_labels")) and isinstance(v, torch.Tensor):
            total += int((v != IGNORE_INDEX).sum())
    return total


def check_answer_spans(collator, dataset, where: str, max_seq_len: int) -> dict[str, int]:
    """Encode every path as training will and count those whose answer span was cut by truncation.

    ``collator`` is the run's :class:`~cotdistill.pathset.collate.PathCollator` (or EDIT's dual collator, whose
    ``base`` is one); ``dataset`` rows hold ``paths``. Returns ``{"paths", "answer_cut", "no_target"}``.
    Raises when more than :data:`MAX_CUT_FRACTION` of the paths lost their answer; logs a warning naming the
    count when some did.
    """
    base = getattr(collator, "base", collator)
    n = cut = empty = 0
    for row in dataset:
        prompt = base.prompt_ids(row, base.user_prefix)
        head, value = base.suffix_segments(row["gold"])
        for p in row["paths"]:
            enc = base.encode(prompt, base._ids(p["text"]), head, value)
            n += 1
            cut += not enc["answer_valid"]
            empty += all(t == IGNORE_INDEX for t in enc["labels"])
    counts = {"paths": n, "answer_cut": cut, "no_target": empty}
    if n and cut / n > MAX_CUT_FRACTION:
        raise CotdistillError(
            f"{where}: train.max_seq_len: {cut} of {n} paths lose their answer to truncation at {max_seq_len} tokens"
            f" ({empty} keep no trainable token at all); the student would learn no answers: raise train.max_seq_len")
    if cut:
        log.warning("%s: %d of %d paths lose their answer span to truncation at train.max_seq_len=%d (%d keep no "
                    "trainable token)", where, cut, n, max_seq_len, empty)
        print(f"warning: {cut} of {n} paths lose their answer span to truncation at train.max_seq_len={max_seq_len}")
    return counts


class StepGuard:
    """Per optimizer step: stop on a non-finite loss (after the grad scaler's own skipping) or on no trainable
    token. ``lr`` only makes the message helpful."""

    def __init__(self, *, scaler_active: bool, lr: float, max_seq_len: int):
        self.patience = SCALER_PATIENCE if scaler_active else 0
        self.lr, self.max_seq_len = lr, max_seq_len
        self.non_finite_run = 0

    def check(self, step: int, loss: float, tokens: int) -> None:
        """``loss``: the step's mean loss over micro-steps and ranks; ``tokens``: trainable tokens, summed."""
        if tokens == 0:
            raise CotdistillError(
                f"train: step {step} had no trainable token (every completion in it was cut away at "
                f"train.max_seq_len={self.max_seq_len}); training stopped: raise train.max_seq_len")
        if math.isfinite(loss):
            self.non_finite_run = 0
            return
        self.non_finite_run += 1
        if self.non_finite_run > self.patience:
            skipped = f" after {self.patience} steps skipped by the fp16 loss scaler" if self.patience else ""
            raise CotdistillError(
                f"train: loss is {loss} at step {step}{skipped}; training diverged and was stopped (nothing saved "
                f"as finished): lower train.lr (now {self.lr:g}) or check the data, then train again without "
                "resuming (--no-resume, or move run_dir/checkpoints away)")


def check_finite_parameters(modules: Iterable[torch.nn.Module], what: str) -> None:
    """Raise when a trainable parameter holds NaN or inf (checked before ``what`` is written)."""
    for module in modules:
        for name, p in module.named_parameters():
            if p.requires_grad and p.numel() and not bool(torch.isfinite(p.detach()).all()):
                raise CotdistillError(
                    f"train: parameter {name} holds NaN/inf values; training diverged, so {what} is not written: "
                    "lower train.lr and train again without resuming (--no-resume)")


def check_final_loss(trainer, dataset) -> None:
    """One no-grad forward of the trained model on the first training question; a non-finite loss is an error.

    Runs on every rank (sharded engines gather parameters in the forward)."""
    if len(dataset) == 0:
        return
    batch = trainer._prepare_inputs(trainer.data_collator([dataset[0]]))
    with torch.no_grad(), trainer.compute_loss_context_manager():
        loss, _ = trainer.method.compute_loss(trainer.model, batch)
    value = float(loss.detach().float().reshape(()))
    if not math.isfinite(value):
        raise CotdistillError(
            f"train: the trained model's loss is {value} on a training question; training diverged in its last "
            f"steps, so the student is not written: lower train.lr (now {trainer.args.learning_rate:g}) and train "
            "again without resuming (--no-resume)")
