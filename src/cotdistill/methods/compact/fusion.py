"""COMPACT's score fusion (METHODS.md §3.4): z-score each metric over the K paths, combine, softmax.

    z(v)_k  = (v_k − mean(v)) / (std(v) + ε)        unbiased std; z ≡ 1 if K ≤ 1 (authors' code)
    score_k = β_mi·z(S_MI)_k + β_cons·z(S_cons)_k − β_diff·z(S_PPL)_k
    α_k     = softmax_k(score_k / T)                 detached

Ablations: any β = 0, ``weighting = uniform`` (α = 1/K), ``best_single`` (uniform over the
``best_teacher``'s paths only, 0 elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


def zscore(v: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(v − mean) / (unbiased std + eps) over the last dim; all ones when it has ≤ 1 entry.

    Args:
        v: [K].
    Returns:
        [K] fp32.
    """
    v = v.detach().float()
    if v.numel() <= 1:
        return torch.ones_like(v)
    return (v - v.mean()) / (v.std(unbiased=True) + eps)


@dataclass
class Fusion:
    """Result of fusing one question's metrics (all [K], detached fp32)."""

    alpha: torch.Tensor
    score: torch.Tensor
    z_mi: torch.Tensor
    z_cons: torch.Tensor
    z_ppl: torch.Tensor


def fuse(
    s_mi: torch.Tensor,
    s_cons: torch.Tensor,
    s_ppl: torch.Tensor,
    *,
    beta_mi: float = 1.0,
    beta_consensus: float = 1.0,
    beta_difficulty: float = 0.5,
    temperature: float = 1.0,
    eps: float = 1e-4,
) -> Fusion:
    """Adaptive COMPACT weights α = softmax((β1 z_MI + β2 z_cons − β3 z_PPL)/T) over one question's paths.

    Args:
        s_mi, s_cons, s_ppl: [K] raw metrics of the question's valid paths.
    Returns:
        :class:`Fusion` with α summing to 1 (detached).
    """
    z_mi, z_cons, z_ppl = zscore(s_mi, eps), zscore(s_cons, eps), zscore(s_ppl, eps)
    score = beta_mi * z_mi + beta_consensus * z_cons - beta_difficulty * z_ppl
    alpha = torch.softmax(score / temperature, dim=-1)
    return Fusion(alpha=alpha, score=score, z_mi=z_mi, z_cons=z_cons, z_ppl=z_ppl)


def label_matches(label: str, teacher: str) -> bool:
    """A path label belongs to ``teacher``: equal, or ``teacher/perspective`` for mixed labels."""
    return label == teacher or label.startswith(teacher + "/")


def fixed_weights(mode: str, labels: Sequence[str], best_teacher: str | None = None) -> torch.Tensor:
    """Non-adaptive α over one question's K valid paths.

    ``uniform``: 1/K each. ``best_single``: uniform over paths of ``best_teacher``, 0 elsewhere
    (all zeros if the question has no such path, so it contributes no loss).

    Returns:
        [K] fp32.
    """
    k = len(labels)
    if mode == "uniform":
        return torch.full((k,), 1.0 / max(k, 1))
    if mode == "best_single":
        keep = torch.tensor([label_matches(lab, best_teacher or "") for lab in labels], dtype=torch.float32)
        n = keep.sum()
        return keep / n if n > 0 else keep
    raise ValueError(f"unknown weighting {mode!r}")
