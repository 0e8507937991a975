r"""Std-CoT (METHODS.md §4.1): plain cross-entropy on the teacher path(s).

.. math::

    L = \frac{1}{|V|}\sum_{k\in V} CE_k,\qquad
    CE_k = \frac{1}{|C_k|}\sum_{t\in C_k} -\log p_\theta(z_{k,t}\mid z_{k,<t})

where ``V`` are the valid paths of the micro-step: the one standard path per question
(``std_cot.paths = standard``, the papers' baseline: role ``standard``) or every correct path (``all``, each
its own example: uniform multi-path SFT, an explicit option).
Paths are forwarded in chunks of ``train.paths_micro_batch`` with one backward per chunk, which gives
exactly the gradient of the mean above.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from cotdistill.methods.base import Method
from cotdistill.methods.losses import sequence_ce
from cotdistill.methods.packing import model_logits, pack_kwargs
from cotdistill.pathset.roles import standard_paths, trainable_paths


def forward_logits(model: nn.Module, batch: dict[str, torch.Tensor], rows: torch.Tensor | None = None,
                   prefix: str = "") -> torch.Tensor:
    """Logits [n, T, V] for the selected rows (all rows if None) of ``{prefix}input_ids``, trimmed to real length.

    When the batch carries ``{prefix}share_prompt`` (``train.share_prompt``), the rows of one question that hold
    the same prompt go through one prompt-shared packed forward (:mod:`cotdistill.methods.packing`); the logits
    are the same as the plain forward's, in the same layout.
    """
    ids, attn = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"]
    if rows is not None:
        ids, attn = ids[rows], attn[rows]
    t = int(attn.sum(-1).max().item()) if attn.numel() else 0  # drop columns that are padding in every row
    return model_logits(model, ids[:, :t], attn[:, :t], **pack_kwargs(batch, rows, prefix))


def chunks(idx: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Split a 1-D index tensor into pieces of at most ``size``."""
    return [idx[i : i + size] for i in range(0, idx.numel(), max(1, size))]


def path_ce(model: nn.Module, batch: dict[str, torch.Tensor], rows: torch.Tensor, prefix: str = "") -> torch.Tensor:
    """Token-mean CE per selected sequence, [n] fp32 (CE_k of §0.3)."""
    logits = forward_logits(model, batch, rows, prefix)
    labels = batch[f"{prefix}labels"][rows][:, : logits.size(1)]
    return sequence_ce(logits, labels)


class StdCotMethod(Method):
    """Cross-entropy on the standard path or on every path (``std_cot.paths``)."""

    name = "std_cot"

    def __init__(self, config: Any):
        super().__init__(config)
        self.paths_mode = config.std_cot.paths
        self.micro = config.effective_train("std_cot").paths_micro_batch

    def needed_roles(self) -> set[str]:
        return {"standard"} if self.paths_mode == "standard" else set()

    def select_paths(self, row: dict) -> list[dict]:
        """Paths trained on for a row: its first standard path (role ``standard``), or every correct path."""
        if self.paths_mode == "standard":
            return standard_paths(row["paths"])[:1]
        return trainable_paths(row["paths"])

    def compute_loss(self, model, batch):
        """Mean CE over valid paths (one forward of everything; used for evaluation)."""
        rows = batch["path_valid"].nonzero(as_tuple=True)[0]
        ce = path_ce(model, batch, rows)
        return ce.mean(), {"ce": float(ce.detach().mean())}

    def training_step(self, model, batch, backward: Callable[[torch.Tensor], None]):
        """Chunked exact gradient of the mean CE: each chunk contributes sum(CE)/|V|."""
        rows = batch["path_valid"].nonzero(as_tuple=True)[0]
        n = max(1, rows.numel())
        total = torch.zeros((), device=batch["input_ids"].device)
        for part in chunks(rows, self.micro):
            loss = path_ce(model, batch, part).sum() / n
            backward(loss)
            total = total + loss.detach()
        return total, {"ce": float(total)}


METHOD = StdCotMethod
