"""EDIT (arXiv 2405.19737): key reasoning steps from dual chains of thought (METHODS.md §4.5).

A *dual CoT* is a correct (chosen) and a wrong (rejected) rationale for the same question that share most
steps. A token-level minimum-edit alignment of the two id sequences marks the tokens where they differ —
the *key* tokens. Key-Reasoning-Step Learning (KRSL) then weights the token likelihood:

    w_t = w_chosen_key (1.0)  on chosen key tokens,   w_chosen_other (0.0) on other chosen tokens,
          w_rejected_key (−0.025) on rejected key tokens (0 where the token's NLL ≥ nll_threshold), else 0
    L   = mean_b[Σ_t w_t CE_t / n_valid(b)]_chosen + mean_b[Σ_t w_t CE_t / n_valid(b)]_rejected

n_valid(b) counts all labelled tokens of sequence b (as the authors' `_get_weighted_batch_loss`). The
negative weight on rejected key tokens pushes their probability down; the threshold stops that push once a
token is already unlikely (unbounded-unlikelihood guard). Training starts from a Std-CoT student
(`edit.init_from = std_cot`).
"""

from __future__ import annotations

from typing import Any

import torch

from cotdistill.methods.base import Method
from cotdistill.methods.losses import token_nll
from cotdistill.pathset.dual import key_token_masks, pair_dual_cots, pair_dual_cots_by_twin  # noqa: F401
from cotdistill.pathset.roles import trainable_paths


def krsl_token_weights(
    key: torch.Tensor, labels: torch.Tensor, key_weight: float, other_weight: float
) -> torch.Tensor:
    """Per-token KRSL weights for one side.

    Args:
        key: [B, T] bool, key tokens (positions in input_ids).
        labels: [B, T] long, -100 outside the completion.

    Returns:
        [B, T] float: ``key_weight`` on labelled key tokens, ``other_weight`` on other labelled tokens, 0 elsewhere.
    """
    labelled = labels != -100
    w = torch.where(key, torch.full_like(labels, 0, dtype=torch.float32) + key_weight,
                    torch.full_like(labels, 0, dtype=torch.float32) + other_weight)
    return w * labelled


def weighted_sequence_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_b[Σ_t w_t CE_t / n_valid(b)] with the causal shift (weights are given at token positions).

    Args:
        logits: [B, T, V]; labels: [B, T] (-100 = ignored); weights: [B, T].

    Returns:
        scalar tensor.
    """
    nll, mask = token_nll(logits, labels)
    w = weights[:, 1:].to(nll.dtype) * mask
    return ((nll * w).sum(-1) / mask.sum(-1).clamp_min(1)).mean()


def krsl_loss(
    chosen_logits: torch.Tensor,
    chosen_labels: torch.Tensor,
    chosen_weights: torch.Tensor,
    rejected_logits: torch.Tensor,
    rejected_labels: torch.Tensor,
    rejected_weights: torch.Tensor,
    nll_threshold: float = 20.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The KRSL objective: weighted chosen likelihood + (negatively) weighted rejected likelihood.

    Rejected weights are zeroed where that token's NLL is already ≥ ``nll_threshold``.

    Args:
        *_logits: [B, T, V]; *_labels: [B, T]; *_weights: [B, T] (at token positions).

    Returns:
        (loss scalar, {"loss_chosen", "loss_rejected", "rejected_clipped_frac"}).
    """
    with torch.no_grad():
        nll_r, mask_r = token_nll(rejected_logits, rejected_labels)
        keep = torch.ones_like(rejected_weights, dtype=torch.bool)
        keep[:, 1:] = nll_r < nll_threshold
        clipped = ((~keep[:, 1:]) & mask_r & (rejected_weights[:, 1:] != 0)).sum()
        total = (mask_r & (rejected_weights[:, 1:] != 0)).sum().clamp_min(1)
    rejected_weights = rejected_weights * keep
    loss_c = weighted_sequence_loss(chosen_logits, chosen_labels, chosen_weights)
    loss_r = weighted_sequence_loss(rejected_logits, rejected_labels, rejected_weights)
    logs = {
        "loss_chosen": float(loss_c.detach()),
        "loss_rejected": float(loss_r.detach()),
        "rejected_clipped_frac": float(clipped / total),
    }
    return loss_c + loss_r, logs


class EditMethod(Method):
    """EDIT's KRSL step on dual-CoT batches.

    Rows need ``rejected_paths`` (wrong rationales kept by curation, ``curate.keep_rejected``). Batch keys
    (from :class:`cotdistill.pathset.dual.DualCotCollator`): ``chosen_input_ids``, ``chosen_attention_mask``,
    ``chosen_labels``, ``chosen_key`` and the same with ``rejected_``; all [P, T].
    """

    name = "edit"

    def needed_roles(self) -> set[str]:
        # twin-linked pairs come only from synthesis.dual_cot; imported sets need edit.pairing: similarity
        return {"rejected", "twin"} if self.config.edit.pairing == "twin" else {"rejected"}

    def select_row(self, row: dict) -> dict:
        """The row's dual pairs: ``paths`` (chosen) aligned one-to-one with ``rejected_paths``.

        ``edit.pairing = twin``: the pairs synthesis linked (CCP/AHP); ``similarity`` (explicit fallback for sets
        without them): every wrong path with the most similar correct path of its question. No pair: the
        question is dropped.
        """
        rejected = list(row.get("rejected_paths") or [])
        if self.config.edit.pairing == "twin":
            pairs = pair_dual_cots_by_twin(row["paths"], rejected)
        else:
            pairs = pair_dual_cots(trainable_paths(row["paths"]), rejected)
        return {"paths": [c for c, _ in pairs], "rejected_paths": [r for _, r in pairs]}

    def select_paths(self, row: dict) -> list[dict]:
        """The chosen side of :meth:`select_row`'s pairs."""
        return self.select_row(row)["paths"]

    # the trainer wraps its PathCollator in pathset.dual.DualCotCollator for this kind
    collator_kind = "dual_cot"

    def compute_loss(self, model, batch):
        cfg = self.config.edit
        outs = {}
        for side in ("chosen", "rejected"):
            outs[side] = model(
                input_ids=batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"]
            ).logits
        w_c = krsl_token_weights(batch["chosen_key"], batch["chosen_labels"], cfg.w_chosen_key, cfg.w_chosen_other)
        w_r = krsl_token_weights(batch["rejected_key"], batch["rejected_labels"], cfg.w_rejected_key, 0.0)
        loss, logs = krsl_loss(
            outs["chosen"], batch["chosen_labels"], w_c, outs["rejected"], batch["rejected_labels"], w_r,
            cfg.nll_threshold,
        )
        logs["key_frac_chosen"] = float(
            (batch["chosen_key"] & (batch["chosen_labels"] != -100)).sum()
            / (batch["chosen_labels"] != -100).sum().clamp_min(1)
        )
        return loss, logs


METHOD: Any = EditMethod
