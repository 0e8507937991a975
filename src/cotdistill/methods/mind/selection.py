"""Soft-threshold path selection and path weights α (METHODS.md §2.6, ablations §2.9)."""

from __future__ import annotations

import math

import torch


def select_and_weight(scores: torch.Tensor, valid: torch.Tensor, beta: float = 0.5, tau: float = 0.5,
                      select_on: str = "prob") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose I_dyn and the weights α for B questions (scores are detached here).

    ``prob`` (default): keep k if p̂_k ≥ β·max p̂, p̂ = softmax(s/τ) over valid paths, i.e.
    s_k ≥ max s + τ·ln β — shift-invariant and always keeps the argmax (ties are all kept).
    ``score``: the paper's literal rule s_k ≥ β·max s. **Pitfall**: with max s < 0 the threshold lies
    above every score and nothing passes; pair it with ``metanet.score_activation = softplus``. When
    nothing passes, the argmax is kept (reported by ``fallback``) so the question still trains.

    Args:
        scores: [B, K] path scores s.
        valid: [B, K] bool.
        beta: β (``mind.beta``); tau: τ_s (``mind.tau_student``).

    Returns:
        kept: [B, K] bool (⊆ valid); alpha: [B, K] fp32, softmax(s/τ) over kept, 0 elsewhere;
        fallback: [B] bool, the literal rule kept nothing and the argmax was used.
    """
    s = scores.detach().float()
    valid = valid.bool()
    neg = torch.finfo(s.dtype).min
    s_valid = s.masked_fill(~valid, neg)
    smax = s_valid.max(-1, keepdim=True).values
    if select_on == "prob":
        if beta <= 0:
            kept = valid.clone()
        else:
            kept = valid & (s - smax >= tau * math.log(beta) - 1e-6 * tau)
    elif select_on == "score":
        kept = valid & (s >= beta * smax)
    else:
        raise ValueError(f"unknown select_on {select_on!r}")
    fallback = ~kept.any(-1) & valid.any(-1)
    if fallback.any():
        argmax = torch.zeros_like(kept)
        argmax.scatter_(-1, s_valid.argmax(-1, keepdim=True), True)
        kept = torch.where(fallback[:, None], argmax & valid, kept)
    alpha = torch.softmax((s / tau).masked_fill(~kept, float("-inf")), dim=-1)
    alpha = torch.nan_to_num(alpha, nan=0.0) * kept  # a question with no valid path gets all zeros
    return kept, alpha, fallback


def uniform_weights(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``mind.weighting = uniform``: α_k = 1/K_valid on every valid path, no selection.

    Returns kept [B, K] bool (= valid) and alpha [B, K].
    """
    valid = valid.bool()
    alpha = valid.float() / valid.sum(-1, keepdim=True).clamp_min(1)
    return valid.clone(), alpha
