r"""MCC-KD: multi-CoT consistency distillation (METHODS.md §4.3), re-implemented from the formula.

For each pair (a, b) of a question's paths:

.. math::

    L_{ab} = \tfrac12\,[CE_a + CE_b] + \alpha\cdot\tfrac12\,[KL(P_a\|P_b) + KL(P_b\|P_a)]

with :math:`P_k` the §0.4 answer-span distributions (causal shift, temperature ``mcc_kd.temperature``,
masked mean over the span tokens, no stop-gradient). The micro-step loss is the mean of :math:`L_{ab}` over
the question's pairs. Each epoch the valid paths are shuffled (seed, epoch, question row) into
``mcc_kd.pairs_per_question`` disjoint pairs; a pair in which a span was truncated keeps its CE and drops
the KL term. A question with a single path falls back to its CE.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import torch

from cotdistill.methods.base import Method
from cotdistill.methods.losses import answer_log_probs, divergence, sequence_ce
from cotdistill.methods.std_cot import forward_logits
from cotdistill.pathset.roles import multi_paths, standard_paths


def ngram_jaccard(a: str, b: str, n: int) -> float:
    """Jaccard similarity of the word n-gram sets of two texts."""
    def grams(s: str) -> set[tuple[str, ...]]:
        w = s.split()
        return {tuple(w[i : i + n]) for i in range(max(1, len(w) - n + 1))}
    ga, gb = grams(a), grams(b)
    return len(ga & gb) / max(1, len(ga | gb))


def pair_loss(logits: torch.Tensor, labels: torch.Tensor, answer_mask: torch.Tensor, answer_valid: torch.Tensor,
              alpha: float, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss of pairs laid out as consecutive rows (2i, 2i+1).

    Args:
        logits: [2P, T, V]; labels: [2P, T]; answer_mask: [2P, T] bool; answer_valid: [2P] bool.

    Returns:
        loss [P] (½(CE_a+CE_b) + α·½symKL, KL dropped where a span is invalid), ce [P], kl [P] (½symKL).
    """
    ce = sequence_ce(logits, labels).view(-1, 2)
    logp, span = answer_log_probs(logits, answer_mask[:, : logits.size(1)], temperature)
    logp = logp.view(-1, 2, *logp.shape[1:])
    span = span.view(-1, 2, span.size(-1))
    both = span[:, 0] & span[:, 1]
    kl = 0.5 * divergence(logp[:, 0], logp[:, 1], "sym_kl", both)
    ok = answer_valid.view(-1, 2).all(-1) & both.any(-1)
    kl = torch.where(ok, kl, torch.zeros_like(kl))
    ce_pair = ce.mean(-1)
    return ce_pair + alpha * kl, ce_pair, kl


class MccKdMethod(Method):
    """CE on each path plus symmetric KL between the answer distributions of paired paths."""

    name = "mcc_kd"

    def __init__(self, config: Any):
        super().__init__(config)
        c = config.mcc_kd
        self.c = c
        self.seed = config.effective_train("mcc_kd").seed
        self.micro_pairs = max(1, config.effective_train("mcc_kd").paths_micro_batch // 2)

    def diverse_set(self, row: dict) -> list[dict]:
        """MCC-KD's candidate rationales of a row (``mcc_kd.paths``): ``standard`` = the sampled standard paths
        (the paper's data: several samples of one teacher's CoT prompt); ``multi`` = the perspective/teacher
        paths (METHODS.md §4.3 port: diverse by design); ``auto`` = standard when the row has >= 2 of them."""
        std, multi = standard_paths(row["paths"]), multi_paths(row["paths"])
        if self.c.paths == "standard" or (self.c.paths == "auto" and len(std) >= 2):
            return std
        return multi

    def needed_roles(self) -> set[str]:
        return {"standard"} if self.c.paths == "standard" else {"multi"} if self.c.paths == "multi" else set()

    def select_paths(self, row: dict) -> list[dict]:
        """Up to ``max_rationales`` of :meth:`diverse_set`; with ``diversity_filter`` greedily the most
        mutually dissimilar."""
        paths = self.diverse_set(row)
        k = self.c.max_rationales
        if not paths or not self.c.diversity_filter or len(paths) <= k:
            return paths[:k]
        chosen = [0]
        while len(chosen) < k:
            best = min(
                (i for i in range(len(paths)) if i not in chosen),
                key=lambda i: max(ngram_jaccard(paths[i]["text"], paths[j]["text"], self.c.diversity_ngram)
                                  for j in chosen),
            )
            chosen.append(best)
        return [paths[i] for i in sorted(chosen)]

    def make_pairs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """[P, 2] row indices of this epoch's disjoint pairs, over every question of the micro-step."""
        progress = getattr(self, "progress", None)
        epoch = int(progress.epoch) if progress is not None else 0
        pairs = []
        for q, row in enumerate(batch["question_row"].tolist()):
            idx = ((batch["question_index"] == q) & batch["path_valid"]).nonzero(as_tuple=True)[0].tolist()
            rng = random.Random(f"{self.seed}/{epoch}/{row}")
            rng.shuffle(idx)
            n = min(self.c.pairs_per_question, len(idx) // 2)
            pairs.extend([idx[2 * i], idx[2 * i + 1]] for i in range(n))
        return torch.tensor(pairs, dtype=torch.long).view(-1, 2)

    def _chunk_loss(self, model, batch, pairs: torch.Tensor):
        rows = pairs.reshape(-1).to(batch["input_ids"].device)
        logits = forward_logits(model, batch, rows)
        t = logits.size(1)
        return pair_loss(logits, batch["labels"][rows][:, :t], batch["answer_mask"][rows], batch["answer_valid"][rows],
                         self.c.alpha, self.c.temperature)

    def _single_ce(self, model, batch) -> torch.Tensor:
        rows = batch["path_valid"].nonzero(as_tuple=True)[0]
        logits = forward_logits(model, batch, rows)
        return sequence_ce(logits, batch["labels"][rows][:, : logits.size(1)]).mean()

    def compute_loss(self, model, batch):
        """Mean pair loss of the micro-step (CE of the lone path if there is no pair)."""
        pairs = self.make_pairs(batch)
        if pairs.numel() == 0:
            ce = self._single_ce(model, batch)
            return ce, {"ce": float(ce.detach()), "kl": 0.0}
        loss, ce, kl = self._chunk_loss(model, batch, pairs)
        return loss.mean(), {"ce": float(ce.detach().mean()), "kl": float(kl.detach().mean())}

    def training_step(self, model, batch, backward: Callable[[torch.Tensor], None]):
        """Pairs forwarded ``paths_micro_batch // 2`` at a time, each chunk backwarded (exact mean gradient)."""
        pairs = self.make_pairs(batch)
        if pairs.numel() == 0:
            ce = self._single_ce(model, batch)
            backward(ce)
            return ce.detach(), {"ce": float(ce.detach()), "kl": 0.0}
        n = pairs.size(0)
        tot = torch.zeros((), device=batch["input_ids"].device)
        ce_sum = kl_sum = 0.0
        for i in range(0, n, self.micro_pairs):
            loss, ce, kl = self._chunk_loss(model, batch, pairs[i : i + self.micro_pairs])
            backward(loss.sum() / n)
            tot = tot + loss.detach().sum() / n
            ce_sum += float(ce.detach().sum())
            kl_sum += float(kl.detach().sum())
        return tot, {"ce": ce_sum / n, "kl": kl_sum / n}


METHOD = MccKdMethod
