"""Loss building blocks shared by the methods (METHODS.md §0.3–§0.5).

All functions are pure tensor code with the causal shift done here, once: logits at position t
predict token t+1. Reductions are masked; divergences are computed in fp32 from ``log_softmax``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from cotdistill.pathset.collate import IGNORE_INDEX  # one definition, shared with collation

DivergenceKind = Literal["kl", "sym_kl", "js"]


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token negative log-likelihood of the labelled tokens.

    Args:
        logits: [N, T, V] model outputs.
        labels: [N, T] target ids, ``-100`` where no loss is taken.

    Returns:
        nll: [N, T-1] fp32, NLL of token t+1 given the prefix (0 where masked).
        mask: [N, T-1] bool, True where ``labels[:, 1:]`` is a real target.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    mask = shift_labels != IGNORE_INDEX
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.clamp_min(0).reshape(-1),
        reduction="none",
    ).view_as(shift_labels)
    return nll * mask, mask


def sequence_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy per sequence, CE_k of §0.3.

    Args:
        logits: [N, T, V]; labels: [N, T] with ``-100`` outside the completion.

    Returns:
        [N] fp32; a sequence with no labelled token gets 0.
    """
    nll, mask = token_nll(logits, labels)
    return nll.sum(-1) / mask.sum(-1).clamp_min(1)


def answer_log_probs(
    logits: torch.Tensor, answer_mask: torch.Tensor, temperature: float = 1.0, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log answer distributions log P_{k,u} at the answer-value tokens (§0.4).

    The distribution for answer token at position p is read from the logits at p-1.

    Args:
        logits: [N, T, V].
        answer_mask: [N, T] bool, True at answer-value token positions (each row's span is contiguous).
        temperature: T_c, logits are divided by it.
        max_len: span length M to pad/cut to (default: the longest span in the batch).

    Returns:
        logp: [N, M, V] fp32 log-probabilities (zeros at padded slots).
        span_mask: [N, M] bool, True on real span tokens (u = 1..m_k).
    """
    n, t, v = logits.shape
    pred_mask = torch.zeros_like(answer_mask)
    pred_mask[:, :-1] = answer_mask[:, 1:]  # position p-1 predicts token p
    lengths = pred_mask.sum(-1)
    m = int(max_len if max_len is not None else (lengths.max().item() if n else 0))
    logp = logits.new_zeros((n, m, v), dtype=torch.float32)
    span_mask = torch.zeros((n, m), dtype=torch.bool, device=logits.device)
    for i in range(n):
        pos = pred_mask[i].nonzero(as_tuple=True)[0][:m]
        if pos.numel():
            logp[i, : pos.numel()] = torch.log_softmax(logits[i, pos].float() / temperature, dim=-1)
            span_mask[i, : pos.numel()] = True
    return logp, span_mask


def _restrict_topk(logp: torch.Tensor, logq: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Renormalise both distributions over the union of their top-k supports (per token)."""
    idx = torch.cat([logp.topk(k, dim=-1).indices, logq.topk(k, dim=-1).indices], dim=-1)
    keep = torch.zeros_like(logp, dtype=torch.bool).scatter_(-1, idx, True)
    neg = torch.finfo(logp.dtype).min
    logp = torch.log_softmax(logp.masked_fill(~keep, neg), dim=-1)
    logq = torch.log_softmax(logq.masked_fill(~keep, neg), dim=-1)
    return logp, logq


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(P‖Q) over the last dim from log-probs, 0·log0 := 0."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)


def divergence(
    logp: torch.Tensor,
    logq: torch.Tensor,
    kind: DivergenceKind = "js",
    mask: torch.Tensor | None = None,
    topk: int = 0,
) -> torch.Tensor:
    """Masked divergence between token distributions, averaged over span tokens (§0.5).

    Args:
        logp, logq: [..., M, V] log-probabilities (fp32).
        kind: ``kl`` = KL(P‖Q); ``sym_kl`` = KL(P‖Q)+KL(Q‖P); ``js`` = ½KL(P‖M)+½KL(Q‖M), M=½(P+Q).
        mask: [..., M] bool, tokens to average over (default: all).
        topk: if > 0, restrict both to the union of their top-k supports.

    Returns:
        [...] the per-pair mean over masked tokens (0 where the mask is empty).
    """
    logp, logq = logp.float(), logq.float()
    if topk:
        logp, logq = _restrict_topk(logp, logq, topk)
    if kind == "kl":
        per_tok = _kl(logp, logq)
    elif kind == "sym_kl":
        per_tok = _kl(logp, logq) + _kl(logq, logp)
    elif kind == "js":
        logm = torch.logsumexp(torch.stack([logp, logq]), dim=0) - torch.log(torch.tensor(2.0, device=logp.device))
        per_tok = 0.5 * _kl(logp, logm) + 0.5 * _kl(logq, logm)
    else:
        raise ValueError(f"unknown divergence kind {kind!r}")
    if mask is None:
        return per_tok.mean(-1)
    mask = mask.to(per_tok.dtype)
    return (per_tok * mask).sum(-1) / mask.sum(-1).clamp_min(1)


def pairwise_divergence(
    logp: torch.Tensor, span_mask: torch.Tensor, kind: DivergenceKind = "js", topk: int = 0,
    partner_logp: torch.Tensor | None = None,
) -> torch.Tensor:
    """Matrix D[i, j] = divergence(P_i, P_j) over the tokens both spans have.

    Args:
        logp: [K, M, V] answer log-distributions of one question's paths.
        span_mask: [K, M] bool.
        partner_logp: optional [K, M, V] for the second argument (e.g. detached partners sg(P_j)).

    Returns:
        [K, K] fp32 (diagonal is 0 up to rounding).
    """
    q = logp if partner_logp is None else partner_logp
    k = logp.size(0)
    a = logp.unsqueeze(1).expand(k, k, *logp.shape[1:])
    b = q.unsqueeze(0).expand(k, k, *q.shape[1:])
    m = span_mask.unsqueeze(1) & span_mask.unsqueeze(0)
    return divergence(a, b, kind, m, topk)
