r"""Distilling step-by-step, ported to decoder-only chat students (METHODS.md §4.2).

.. math::

    L = \alpha\, CE(\text{label task}) + (1-\alpha)\, CE(\text{rationale task}),\qquad \alpha = \texttt{sbs.alpha} = 0.5

* label task: user turn opened by ``sbs.label_prefix`` (``predict: ``), target ``The answer is: {a}`` + eot;
  one sequence per question, CE averaged over the micro-step's questions;
* rationale task: user turn opened by ``sbs.rationale_prefix`` (``explain: ``), target ``r ⊕ suffix(a)`` + eot,
  CE averaged over the valid paths.

The collator builds both views (:meth:`collator_kwargs`). Two forward passes per example, as the original.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cotdistill.errors import CotdistillError
from cotdistill.methods.base import Method
from cotdistill.methods.std_cot import chunks, path_ce
from cotdistill.pathset.roles import standard_paths


class SbsMethod(Method):
    """Multi-task label + rationale cross-entropy with task prefixes."""

    name = "sbs"

    def __init__(self, config: Any):
        super().__init__(config)
        c = config.sbs
        if c.label_source != "gold":
            raise CotdistillError("config: sbs.label_source: only 'gold' is supported (path rows carry the gold answer)")
        self.alpha = c.alpha
        self.label_prefix = c.label_prefix
        self.rationale_prefix = c.rationale_prefix
        self.micro = config.effective_train("sbs").paths_micro_batch

    def needed_roles(self) -> set[str]:
        return {"standard"}

    def select_paths(self, row: dict) -> list[dict]:
        """One rationale per question, as the paper (one PaLM CoT each): the row's first standard path."""
        return standard_paths(row["paths"])[:1]

    def collator_kwargs(self) -> dict[str, Any]:
        """Ask the collator for prefixed rationale views and a label view per question."""
        return {"user_prefix": self.rationale_prefix, "label_view_prefix": self.label_prefix}

    def _label_ce(self, model, batch) -> torch.Tensor:
        q = torch.arange(batch["label_input_ids"].size(0), device=batch["label_input_ids"].device)
        return path_ce(model, batch, q, prefix="label_")

    def compute_loss(self, model, batch):
        """One forward per view; returns α·CE_label + (1−α)·CE_rationale."""
        rows = batch["path_valid"].nonzero(as_tuple=True)[0]
        l_label = self._label_ce(model, batch).mean()
        l_rat = path_ce(model, batch, rows).mean()
        loss = self.alpha * l_label + (1 - self.alpha) * l_rat
        return loss, {"ce_label": float(l_label.detach()), "ce_rationale": float(l_rat.detach())}

    def training_step(self, model, batch, backward: Callable[[torch.Tensor], None]):
        """Label view in one backward, rationale paths in chunks (exact gradient of the same loss)."""
        l_label = self._label_ce(model, batch).mean()
        backward(self.alpha * l_label)
        rows = batch["path_valid"].nonzero(as_tuple=True)[0]
        n = max(1, rows.numel())
        l_rat = torch.zeros((), device=l_label.device)
        for part in chunks(rows, self.micro):
            part_loss = path_ce(model, batch, part).sum() / n
            backward((1 - self.alpha) * part_loss)
            l_rat = l_rat + part_loss.detach()
        loss = self.alpha * l_label.detach() + (1 - self.alpha) * l_rat
        return loss, {"ce_label": float(l_label.detach()), "ce_rationale": float(l_rat)}


METHOD = SbsMethod
