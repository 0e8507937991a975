"""The interface between the trainer and a distillation method.

The trainer knows a method only through :class:`Method`. A *micro-step batch* holds the K paths of
``Q`` questions (``questions_per_step``, default 1) flattened along dim 0 (N = total paths):

=================  ==============  ===========================================================
key                shape / dtype   meaning
=================  ==============  ===========================================================
input_ids          [N, T] long     prompt ⊕ rationale ⊕ "\\nThe answer is:" ⊕ " a" ⊕ eot, right-padded
attention_mask     [N, T] long     1 on real tokens
labels             [N, T] long     token id on completion tokens (rationale+suffix+eot), else -100
answer_mask        [N, T] bool     True at the answer-value tokens (positions in input_ids)
answer_valid       [N] bool        the answer span survived truncation
path_valid         [N] bool        a real path (False = padding slot for questions with < K paths)
question_index     [N] long        which of the Q questions of the micro-step the path belongs to
path_slot          [N] long        index of the path's label (perspective or teacher) in the dataset vocabulary
question_row       [Q] long        row of each question in the training dataset (for per-question caches)
prompt_len         [N] long        tokens of the row's prompt (chat template + question), the same for a question
share_prompt       [N] bool        ``train.share_prompt``: the row may share its prompt forward (methods/packing.py)
=================  ==============  ===========================================================

Methods may ask the collator for extra keys (e.g. SbS label views, EDIT token weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cotdistill.pathset.roles import trainable_paths


class Method:
    """Base class of a distillation method. Subclasses override :meth:`compute_loss` at least.

    Lifecycle: ``__init__(config)`` → ``prepare(dataset, tokenizer, model)`` once before training →
    ``training_step`` per micro-step → ``state_dict``/``load_state_dict`` around checkpoints.
    """

    name: str = "base"

    def __init__(self, config: Any):
        self.config = config

    #: Role kinds (:mod:`cotdistill.pathset.roles`) the method cannot train without, given its config.
    def needed_roles(self) -> set[str]:
        """Role kinds the dataset must hold for this method (checked at ``validate`` and at train start)."""
        return set()

    def select_paths(self, row: dict) -> list[dict]:
        """The paths of a dataset row this method trains on, per its paper (default: every correct path a
        teacher wrote without a hint). Methods override this with their roles (pathset/roles.py)."""
        return trainable_paths(row["paths"])

    def select_row(self, row: dict) -> dict:
        """Columns of ``row`` to replace before training (default: ``paths`` = :meth:`select_paths`)."""
        return {"paths": self.select_paths(row)}

    def prepare(self, dataset: Any, tokenizer: Any, model: nn.Module) -> None:
        """One-off work before training (cache embeddings, initial losses, warm-ups). Default: nothing."""

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Return the differentiable scalar loss of one micro-step and the signals to log.

        Signals are floats, or lists/dicts of floats keyed by path label (written to dynamics.jsonl).
        """
        raise NotImplementedError

    def training_step(
        self,
        model: nn.Module,
        batch: dict[str, torch.Tensor],
        backward: Callable[[torch.Tensor], None],
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Run forward and backward of one micro-step; return the detached loss and signals.

        ``backward(loss)`` scales by gradient accumulation and goes through the distributed engine.
        Methods that chunk paths (memory-safe exact gradients) or step an auxiliary optimizer
        override this; the default is one forward and one backward.
        """
        loss, logs = self.compute_loss(model, batch)
        backward(loss)
        return loss.detach(), logs

    def trainable_modules(self) -> list[nn.Module]:
        """Auxiliary modules the method trains with its own optimizer (e.g. MIND's MetaNet)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Method state saved with each checkpoint (auxiliary modules, optimizers, counters, EMAs)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` on resume."""
