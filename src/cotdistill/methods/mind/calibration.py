"""Feedback-driven inertia calibration: MetaNet's training loss L_meta (METHODS.md §2.4–§2.5)."""

from __future__ import annotations

import torch


def masked_log_softmax(x: torch.Tensor, valid: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log softmax over the valid entries only; invalid entries get 0 (not -inf, so gradients stay finite).

    A row with no valid entry is normalised over all entries (it is masked out by every caller).
    x, valid: [..., K].
    """
    valid = valid.bool()
    eff = valid | ~valid.any(dim, keepdim=True)
    out = torch.log_softmax(x.float().masked_fill(~eff, float("-inf")), dim=dim)
    return torch.where(valid, out, torch.zeros_like(out))


def calibration_loss(scores: torch.Tensor, real_loss: torch.Tensor, valid: torch.Tensor, tau: float = 1.0,
                     direction: str = "pred_to_target") -> torch.Tensor:
    """L_meta = KL(softmax(s/τ) ‖ softmax(−L_real/τ)) per question, over valid paths only.

    Args:
        scores: [B, K] MetaNet scores s (with grad).
        real_loss: [B, K] the student's per-path CE (detached here; higher loss = less compatible).
        valid: [B, K] bool.
        tau: τ_meta (``mind.tau_meta``).
        direction: ``pred_to_target`` (the authors' KL(pred‖target)) or ``target_to_pred`` (classic ListNet).

    Returns:
        [B] KL per question (0 for a question with ≤ 1 valid path). The sum skips invalid entries, so
        padding never yields ``0·log 0`` NaNs.
    """
    valid = valid.bool()
    target = torch.nan_to_num(-real_loss.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    log_pred = masked_log_softmax(scores / tau, valid)
    log_tgt = masked_log_softmax(target / tau, valid)
    if direction == "pred_to_target":
        log_p, log_q = log_pred, log_tgt
    elif direction == "target_to_pred":
        log_p, log_q = log_tgt, log_pred
    else:
        raise ValueError(f"unknown meta_kl_direction {direction!r}")
    zero = torch.zeros_like(log_p)
    terms = torch.where(valid, log_p.exp() * (log_p - log_q), zero)
    return terms.sum(-1)


class LossEMA:
    """Optional inertia on the targets (``mind.loss_ema``): L̃ ← d·L̃ + (1−d)·L_real, started from L0.

    Holds a [n_rows, K] table indexed by (dataset row, path index in the row).
    """

    def __init__(self, init: torch.Tensor, decay: float = 0.9):
        self.table = init.detach().clone().float()
        self.decay = decay

    def update(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Update entries (rows[i], cols[i]) with values[i]; return the smoothed values [n]."""
        rows, cols = rows.cpu(), cols.cpu()
        old = self.table[rows, cols]
        new = values.detach().float().cpu()
        fresh = torch.isnan(old)
        upd = torch.where(fresh, new, self.decay * old + (1 - self.decay) * new)
        self.table[rows, cols] = upd
        return upd
