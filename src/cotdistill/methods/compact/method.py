"""COMPACT: compatibility-aware multi-teacher CoT distillation (METHODS.md §3).

One micro-step = the K teacher paths of each question. A single training forward of the current
(LoRA) student gives the logits (for CE and the consistency term) and, through a forward hook on the
final norm, the hidden states h used by the detached metrics:

    S_MI (MI adaptability), S_cons (graph consensus), S_PPL = CE_k (difficulty)
    α = softmax((β1 z(S_MI) + β2 z(S_cons) − β3 z(S_PPL)) / T)         (stop-gradient)

Loss (§3.5), averaged over the micro-step's questions:

* ``answer_span``: Σ_k α_k (CE_k + λ · mean_{j≠k} symKL(P_k, P_j)) on the shared answer-value tokens;
  paths with a truncated answer span keep their CE but leave the consistency term.
* ``position_aligned`` (authors' code): Σ_k α_k CE_k + λ Σ_{i<j, α_iα_j ≥ w_min} α_iα_j ·
  (1/N_ij) Σ_t m_it m_jt symKL(p_it, p_jt) over the full vocabulary, masks including the prompt.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from cotdistill.errors import CotdistillError
from cotdistill.methods.base import Method
from cotdistill.methods.compact.fusion import fixed_weights, fuse, label_matches
from cotdistill.methods.compact.metrics import (
    ModelParts,
    NormCapture,
    assert_right_padded,
    gathered,
    gold_token_ids,
    graph_consensus,
    is_fsdp,
    last_token_states,
    mi_adaptability,
    resolve_parts,
    think_token_ids,
)
from cotdistill.methods.losses import IGNORE_INDEX, answer_log_probs, divergence, pairwise_divergence, sequence_ce
from cotdistill.methods.packing import pack_kwargs, packed_forward, unpack
from cotdistill.pathset.roles import one_per_teacher

log = logging.getLogger(__name__)

PER_PATH_SIGNALS = ("S_mi", "S_cons", "S_ppl", "z_mi", "z_cons", "z_ppl", "alpha")


def position_aligned_symkl(
    logits_i: torch.Tensor, logits_j: torch.Tensor, mask: torch.Tensor, chunk: int | None = None
) -> torch.Tensor:
    """(1/N_ij) Σ_t m_t [KL(p_it‖p_jt) + KL(p_jt‖p_it)] with full-vocabulary softmaxes (authors' MCC).

    Chunked over t, each chunk under activation checkpointing, so the fp32 log-softmaxes of only one
    chunk are alive at a time (forward and backward). Gradients reach both sides.

    Args:
        logits_i, logits_j: [T, V] logits of two paths of one question.
        mask: [T] (attention_mask_i · attention_mask_j, prompt included).
        chunk: positions per chunk (default: ~64 Mi fp32 values per tensor).

    Returns:
        scalar fp32 (0 if the mask is empty).
    """
    t, v = logits_i.shape
    chunk = chunk or max(1, (1 << 26) // max(v, 1))
    m = mask.float()
    total = logits_i.new_zeros((), dtype=torch.float32)
    for s in range(0, t, chunk):
        li, lj, mm = logits_i[s : s + chunk], logits_j[s : s + chunk], m[s : s + chunk]
        if not bool(mm.any()):
            continue
        if torch.is_grad_enabled() and (li.requires_grad or lj.requires_grad):
            total = total + checkpoint(_symkl_sum, li, lj, mm, use_reentrant=False)
        else:
            total = total + _symkl_sum(li, lj, mm)
    return total / m.sum().clamp_min(1)


def _symkl_sum(li: torch.Tensor, lj: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    lpi = torch.log_softmax(li.float(), dim=-1)
    lpj = torch.log_softmax(lj.float(), dim=-1)
    sym = ((lpi.exp() - lpj.exp()) * (lpi - lpj)).sum(-1)  # = KL(p_i‖p_j) + KL(p_j‖p_i)
    return (sym * m).sum()


class CompactMethod(Method):
    """COMPACT behind the :class:`Method` interface (config section ``compact``)."""

    name = "compact"

    def select_paths(self, row: dict) -> list[dict]:
        """COMPACT's paths: one per teacher (its standard path, else its first perspective/teacher path)."""
        return one_per_teacher(row["paths"])

    def __init__(self, config: Any):
        super().__init__(config)
        self.cc = getattr(config, "compact", config)
        if self.cc.weighting == "best_single" and not self.cc.best_teacher:
            raise CotdistillError("config: compact.best_teacher: required when compact.weighting = best_single")
        self.tokenizer: Any = None
        self.think_ids: torch.Tensor | None = None
        self.gold_by_row: dict[int, list[int]] | None = None
        self.label_vocab: list[str] | None = None
        self._parts: tuple[int, ModelParts] | None = None
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ setup

    def prepare(self, dataset: Any, tokenizer: Any, model: nn.Module) -> None:
        """Tokenise V_think, learn the label vocabulary, index gold answers by row; resolve model parts.

        ``dataset``: the path dataset's train split (a ``DatasetDict`` is accepted: its ``train``).
        Label vocabulary (what ``path_slot`` indexes), first found of: ``self.collator.label_vocab``
        (the trainer hands its collator over before ``prepare``), ``dataset.label_vocab``, the sorted
        unique path labels of ``dataset`` (the collator's ``build_label_vocab`` rule).
        Gold ids are read from each batch's answer span (see :meth:`_gold_ids`); the ``gold`` column,
        keyed by ``_row`` (else the row index), is only a fallback for questions whose spans were all cut.
        """
        self.tokenizer = tokenizer
        self.think_ids = torch.tensor(think_token_ids(tokenizer, self.cc.think_keywords), dtype=torch.long)
        ds = dataset
        if ds is not None and hasattr(ds, "keys") and "train" in ds.keys():  # DatasetDict
            ds = ds["train"]
        cols = getattr(ds, "column_names", None) or []
        if ds is not None and "gold" in cols:
            keys = ds["_row"] if "_row" in cols else range(len(ds))
            self.gold_by_row = {
                int(r): gold_token_ids(tokenizer, g, self.cc.gold_leading_space) for r, g in zip(keys, ds["gold"])
            }
        vocab = getattr(getattr(self, "collator", None), "label_vocab", None)
        vocab = vocab or getattr(dataset, "label_vocab", None) or getattr(ds, "label_vocab", None)
        if not vocab and ds is not None and "paths" in cols:
            vocab = sorted({p["label"] for paths in ds["paths"] for p in paths})
        if vocab:
            self.set_label_vocab(list(vocab))
        if model is not None:
            self._model_parts(model)

    def set_label_vocab(self, vocab: list[str]) -> None:
        """The path-label vocabulary that ``path_slot`` indexes (from the collator/trainer)."""
        self.label_vocab = [str(v) for v in vocab]
        if self.cc.weighting == "best_single" and not any(label_matches(v, self.cc.best_teacher) for v in vocab):
            raise CotdistillError(
                f"config: compact.best_teacher: {self.cc.best_teacher!r} is not a path label of the dataset "
                f"(labels: {', '.join(self.label_vocab)})"
            )

    def _model_parts(self, model: nn.Module) -> ModelParts:
        if self._parts is None or self._parts[0] != id(model):
            if is_fsdp(model):
                raise CotdistillError(
                    "config: method: compact reads the last layer's q_proj/k_proj and lm_head weights, which "
                    "FSDP shards; train COMPACT with DDP or DeepSpeed ZeRO-2/ZeRO-3 (accelerate config) instead"
                )
            self._parts = (id(model), resolve_parts(model))
        return self._parts[1]

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg)

    # ------------------------------------------------------------------ batch helpers

    def _path_labels(self, batch: dict[str, Any], n: int) -> list[str]:
        names = batch.get("path_label")
        if isinstance(names, (list, tuple)) and len(names) == n:
            return [str(x) for x in names]
        vocab = batch.get("label_vocab") or self.label_vocab
        slots = batch.get("path_slot")
        if slots is None:
            return [str(i) for i in range(n)]
        out = []
        for s in slots.tolist():
            out.append(str(vocab[s]) if vocab is not None and 0 <= s < len(vocab) else str(s))
        return out

    def _answer_text(self, ids: list[int]) -> str:
        """Gold text from a path's answer-span tokens (ids(" " + a); with ``answer_span_scope = line``
        the span also holds the suffix head, which is cut at the ``{a}`` slot of ``data.answer_suffix``)."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        data = getattr(self.config, "data", None)
        tmpl = getattr(data, "answer_suffix", "The answer is: {a}") if data is not None else "The answer is: {a}"
        if getattr(data, "answer_span_scope", "value") == "line" and "{a}" in tmpl:
            head, tail = tmpl.split("{a}", 1)
            if head.strip() and head.strip() in text:
                text = text.split(head.strip(), 1)[1]
            if tail.strip() and text.rstrip().endswith(tail.strip()):
                text = text.rstrip()[: -len(tail.strip())]
        return text.strip()

    def _gold_ids(self, batch: dict[str, Any], q: int, idx: torch.Tensor) -> torch.Tensor | None:
        """Gold ids g of question ``q``: ``tokenizer(Answer, add_special_tokens=False)`` (§3.2).

        The answer is recovered from an intact answer span of the batch (decode, strip), so it is right
        for any split the trainer feeds (train or dev); ``gold_leading_space`` re-adds the space.
        """
        for i in idx.tolist():
            if bool(batch["answer_valid"][i]) and bool(batch["answer_mask"][i].any()):
                ids = batch["input_ids"][i][batch["answer_mask"][i].to(torch.bool)].cpu().tolist()
                if self.tokenizer is None:
                    return torch.tensor(ids, dtype=torch.long)
                gold = gold_token_ids(self.tokenizer, self._answer_text(ids), self.cc.gold_leading_space)
                return torch.tensor(gold, dtype=torch.long)
        rows = batch.get("question_row")
        if self.gold_by_row is not None and rows is not None and int(rows[q]) in self.gold_by_row:
            return torch.tensor(self.gold_by_row[int(rows[q])], dtype=torch.long)
        self._warn_once("gold", "compact: a question has no intact answer span; its MI adaptability is 0")
        return None

    # ------------------------------------------------------------------ the step

    def _paths_micro_batch(self) -> int:
        """``train.paths_micro_batch`` with ``compact.train`` overrides (whole batch if unknown)."""
        eff = getattr(self.config, "effective_train", None)
        if eff is None:
            return 1 << 30
        return int(eff("compact").paths_micro_batch)

    def _forward(
        self, model: nn.Module, parts: ModelParts, batch: dict[str, torch.Tensor], rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Student forward on ``rows`` of the batch (all if None): logits [r, T, V], final-norm h [r, T, H].

        Prompt-shared packing (``train.share_prompt``) applies as for the other methods; the hidden states
        captured in the packed layout are unpacked with the same plan.
        """
        ids, attn = batch["input_ids"], batch["attention_mask"]
        if rows is not None:
            ids, attn = ids[rows], attn[rows]
        with NormCapture(parts.norm) as cap:
            logits, plan = packed_forward(model, ids, attn, **pack_kwargs(batch, rows))
        if cap.output is None:
            raise CotdistillError("compact: the final-norm hook saw no output (unsupported model wrapper)")
        return logits, cap.output if plan is None else unpack(cap.output, plan)

    def _check_ready(self, batch: dict[str, torch.Tensor]) -> None:
        assert_right_padded(batch["attention_mask"])
        if self.think_ids is None:
            raise CotdistillError("compact: prepare(dataset, tokenizer, model) was not called before training")

    @staticmethod
    def _groups(batch: dict[str, torch.Tensor], n: int) -> list[tuple[int, torch.Tensor]]:
        """(question, indices of its valid paths) for every question with at least one valid path."""
        qidx = batch.get("question_index", torch.zeros(n, dtype=torch.long)).cpu()
        valid = batch.get("path_valid", torch.ones(n, dtype=torch.bool)).cpu().bool()
        out = []
        for q in torch.unique(qidx).tolist():
            idx = ((qidx == q) & valid).nonzero(as_tuple=True)[0]
            if idx.numel():
                out.append((int(q), idx))
        return out

    def _mi_and_last(
        self, parts: ModelParts, batch: dict[str, torch.Tensor], rows: torch.Tensor,
        hidden: torch.Tensor, logits: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """S_MI [r] (fp32 cpu, detached) and the last-token states v [r, H] of the batch ``rows``,
        given that forward's ``hidden``/``logits`` (row i of them = batch row ``rows[i]``)."""
        cc = self.cc
        n = batch["input_ids"].size(0)
        qidx = batch.get("question_index", torch.zeros(n, dtype=torch.long)).cpu()
        comp_mask = batch["labels"][rows] != IGNORE_INDEX
        # Sum over real tokens only. The authors' code (mi_scope=all) also sums the jumps over padding states,
        # whose number and values depend on how long the *other* paths of the batch are, and which a
        # prompt-shared packed forward does not compute: S_MI (hence α) would change with train.share_prompt.
        real = batch["attention_mask"][rows].bool()
        scope = (comp_mask & real) if cc.mi_scope == "completion" else real
        s_mi = torch.zeros(rows.numel())
        weight = parts.out_embeddings.weight
        for q in torch.unique(qidx[rows]).tolist():
            local = (qidx[rows] == q).nonzero(as_tuple=True)[0]
            gold = self._gold_ids(batch, q, (qidx == q).nonzero(as_tuple=True)[0])
            if gold is None or gold.numel() == 0:
                continue
            gold = gold.to(hidden.device)
            with gathered([weight]):
                vocab = weight.size(0)
                if int(gold.max()) >= vocab:
                    raise CotdistillError(
                        f"config: train.model: gold token id {int(gold.max())} is outside the student's "
                        f"output vocabulary ({vocab}); tokenizer and model do not match"
                    )
                gold_emb = weight[gold].detach().clone() if cc.mi_variant == "logit" else None
            ldev = local.to(hidden.device)
            s_mi[local] = mi_adaptability(
                hidden[ldev], batch["input_ids"][rows][local].to(hidden.device), gold,
                gold_emb=gold_emb,
                logits=logits[ldev].detach() if cc.mi_variant == "logprob" else None,
                think_ids=self.think_ids,
                think_weight=cc.think_weight, non_think_weight=cc.non_think_weight,
                variant=cc.mi_variant,
                scope_mask=scope[local].to(hidden.device),
                length_norm=cc.mi_length_norm,
                completion_len=comp_mask[local].sum(-1),
            ).float().cpu()
        v = last_token_states(hidden, batch["attention_mask"][rows].to(hidden.device))
        return s_mi, v.detach()

    def _weights(
        self, parts: ModelParts, batch: dict[str, torch.Tensor], s_mi: torch.Tensor, v: torch.Tensor,
        ce: torch.Tensor, path_labels: list[str],
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[tuple[int, torch.Tensor]]]:
        """Graph consensus per question, fusion, α. Returns α [N] (0 on invalid slots, cpu fp32),
        per-path signal vectors [N] (NaN on invalid slots) and the question groups."""
        cc = self.cc
        n = s_mi.numel()
        groups = self._groups(batch, n)
        per_path = {k: torch.full((n,), float("nan")) for k in PER_PATH_SIGNALS}
        alpha_all = torch.zeros(n)
        qk_params = list(parts.q_proj.parameters()) + list(parts.k_proj.parameters())
        for _, idx in groups:
            with gathered(qk_params):
                s_cons, _ = graph_consensus(
                    v[idx.to(v.device)], parts.q_proj, parts.k_proj,
                    n_heads=parts.n_heads, n_kv_heads=parts.n_kv_heads, gqa_repeat=cc.gqa_repeat,
                )
            s_cons = s_cons.float().cpu()
            s_ppl = ce[idx].detach().float().cpu()
            fz = fuse(
                s_mi[idx], s_cons, s_ppl,
                beta_mi=cc.beta_mi, beta_consensus=cc.beta_consensus, beta_difficulty=cc.beta_difficulty,
                temperature=cc.temperature, eps=cc.zscore_eps,
            )
            if cc.weighting == "adaptive":
                alpha = fz.alpha
            else:
                alpha = fixed_weights(cc.weighting, [path_labels[i] for i in idx.tolist()], cc.best_teacher)
            alpha_all[idx] = alpha.float()
            for key, val in (("S_mi", s_mi[idx]), ("S_cons", s_cons), ("S_ppl", s_ppl), ("z_mi", fz.z_mi),
                             ("z_cons", fz.z_cons), ("z_ppl", fz.z_ppl), ("alpha", alpha)):
                per_path[key][idx] = val.detach().float().cpu()
        return alpha_all, per_path, groups

    @staticmethod
    def _signals(
        loss: float, sft: list[torch.Tensor], mcc: list[torch.Tensor], per_path: dict[str, torch.Tensor],
        path_labels: list[str],
    ) -> dict[str, Any]:
        signals: dict[str, Any] = {
            "loss": float(loss),
            "loss_sft": float(torch.stack(sft).mean()),
            "loss_mcc": float(torch.stack(mcc).mean()),
        }
        for key, vals in per_path.items():
            acc: dict[str, list[float]] = defaultdict(list)
            for i, lab in enumerate(path_labels):
                if not torch.isnan(vals[i]):
                    acc[lab].append(float(vals[i]))
            signals[key] = {lab: sum(v) / len(v) for lab, v in acc.items()}
        return signals

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        """Forward the micro-step's paths once; return the COMPACT loss and per-path signals.

        Batch: the contract of ``methods/base.py`` (right-padded). The loss is the mean over the
        micro-step's questions. Signals: ``S_mi``, ``S_cons``, ``S_ppl``, ``z_mi``, ``z_cons``, ``z_ppl``,
        ``alpha`` as {label: float} (mean over the valid paths with that label), and floats
        ``loss_sft``, ``loss_mcc``, ``loss``.
        """
        cc = self.cc
        parts = self._model_parts(model)
        self._check_ready(batch)
        n = batch["input_ids"].size(0)
        logits, hidden = self._forward(model, parts, batch)
        ce = sequence_ce(logits, batch["labels"])  # [N] with grad
        dev = logits.device
        ans_valid = batch.get("answer_valid", torch.ones(n, dtype=torch.bool)).to(dev).bool()
        path_labels = self._path_labels(batch, n)
        s_mi, v = self._mi_and_last(parts, batch, torch.arange(n), hidden, logits)
        alpha_all, per_path, groups = self._weights(parts, batch, s_mi, v, ce, path_labels)
        alpha_all = alpha_all.to(dev)

        losses, sft_terms, mcc_terms = [], [], []
        for _, idx in groups:
            idx = idx.to(dev)
            alpha = alpha_all[idx]
            sft = (alpha * ce[idx]).sum()
            mcc = self._mcc(logits, batch, idx, alpha, ans_valid) if cc.lambda_mcc > 0 else sft.new_zeros(())
            losses.append(sft + cc.lambda_mcc * mcc)
            sft_terms.append(sft.detach())
            mcc_terms.append(mcc.detach())
        if not losses:  # no valid path at all: a zero loss that still touches the graph
            return logits.sum() * 0.0, {"loss": 0.0}
        loss = torch.stack(losses).mean()
        return loss, self._signals(float(loss.detach()), sft_terms, mcc_terms, per_path, path_labels)

    def training_step(
        self,
        model: nn.Module,
        batch: dict[str, torch.Tensor],
        backward: Callable[[torch.Tensor], None],
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """One forward+backward when all paths fit ``train.paths_micro_batch`` (or in ``position_aligned``
        mode); else the memory-safe two-pass exact gradient of §2.7 for ``answer_span``:

        1. no_grad over chunks: CE, metrics, α and the detached answer distributions sg(P_j);
        2. per chunk, backward of Σ_{k∈chunk} [α_k CE_k + λ Σ_{j≠k} (α_k/n_k + α_j/n_j) symKL(P_k, sg(P_j))]
           (n_k = k's intact partners), whose gradient equals the single-pass one (up to dropout noise).
        The returned loss and signals come from pass 1.
        """
        n = batch["input_ids"].size(0)
        pmb = self._paths_micro_batch()
        if pmb >= n or self.cc.mcc_mode != "answer_span":
            if pmb < n:
                self._warn_once("pmb", "compact: position_aligned runs all paths in one pass (paths_micro_batch ignored)")
            return super().training_step(model, batch, backward)
        return self._two_pass_step(model, batch, backward, pmb)

    def _two_pass_step(
        self, model: nn.Module, batch: dict[str, torch.Tensor], backward: Callable[[torch.Tensor], None], pmb: int
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        cc = self.cc
        parts = self._model_parts(model)
        self._check_ready(batch)
        n = batch["input_ids"].size(0)
        amask = batch["answer_mask"].to(torch.bool)
        m_len = int(amask.sum(-1).max().item()) if n else 0
        ans_valid = batch.get("answer_valid", torch.ones(n, dtype=torch.bool)).cpu().bool()
        path_labels = self._path_labels(batch, n)
        chunks = [torch.arange(s, min(s + pmb, n)) for s in range(0, n, pmb)]

        # pass 1: no_grad, all paths
        ce = torch.zeros(n)
        s_mi = torch.zeros(n)
        v_parts, logp_parts, span_parts = [], [], []
        with torch.no_grad():
            for rows in chunks:
                logits, hidden = self._forward(model, parts, batch, rows)
                ce[rows] = sequence_ce(logits, batch["labels"][rows].to(logits.device)).float().cpu()
                s_mi[rows], v = self._mi_and_last(parts, batch, rows, hidden, logits)
                v_parts.append(v)
                lp, sp = answer_log_probs(logits, amask[rows].to(logits.device), max_len=m_len)
                logp_parts.append(lp)
                span_parts.append(sp)
                del logits, hidden
        v_all = torch.cat(v_parts)
        logp_all, span_all = torch.cat(logp_parts), torch.cat(span_parts)
        alpha_all, per_path, groups = self._weights(parts, batch, s_mi, v_all, ce, path_labels)
        if not groups:
            return torch.zeros(()), {"loss": 0.0}

        # pair coefficients c[k, j] = α_k/n_k + α_j/n_j over intact answer pairs of the same question
        coef = torch.zeros(n, n)
        sft_terms, mcc_terms, losses = [], [], []
        for _, idx in groups:
            a = alpha_all[idx]
            av = ans_valid[idx] & (a > 0)  # zero-weight paths (best_single) are nobody's partner
            pair = av[:, None] & av[None, :] & ~torch.eye(idx.numel(), dtype=torch.bool)
            n_part = pair.sum(1).clamp_min(1).float()
            w = a / n_part
            coef[idx[:, None], idx[None, :]] = ((w[:, None] + w[None, :]) * pair).float()
            sft = (a * ce[idx]).sum()
            mcc = torch.zeros(())
            if cc.lambda_mcc > 0 and int(pair.sum()) > 0:
                d = pairwise_divergence(logp_all[idx.to(logp_all.device)], span_all[idx.to(span_all.device)] &
                                        av.to(span_all.device)[:, None], kind="sym_kl").cpu()
                mcc = (a * (d * pair).sum(1) / n_part).sum()
            sft_terms.append(sft)
            mcc_terms.append(mcc)
            losses.append(sft + cc.lambda_mcc * mcc)
        n_q = len(groups)
        loss_log = torch.stack(losses).mean()

        # pass 2: per chunk with grad
        for rows in chunks:
            if float(alpha_all[rows].abs().sum()) == 0 and float(coef[rows].abs().sum()) == 0:
                continue
            logits, _ = self._forward(model, parts, batch, rows)
            dev = logits.device
            ce_c = sequence_ce(logits, batch["labels"][rows].to(dev))
            loss_c = (alpha_all[rows].to(dev) * ce_c).sum()
            if cc.lambda_mcc > 0 and float(coef[rows].abs().sum()) > 0:
                lp, sp = answer_log_probs(logits, amask[rows].to(dev), max_len=m_len)
                for r, k in enumerate(rows.tolist()):
                    js = coef[k].nonzero(as_tuple=True)[0]
                    if js.numel() == 0:
                        continue
                    jd = js.to(logp_all.device)
                    d = divergence(
                        lp[r].unsqueeze(0).expand(js.numel(), -1, -1), logp_all[jd].to(dev), "sym_kl",
                        (sp[r].unsqueeze(0) & span_all[jd].to(dev)),
                    )
                    loss_c = loss_c + cc.lambda_mcc * (coef[k, js].to(dev) * d).sum()
            backward(loss_c / n_q)
            del logits
        signals = self._signals(float(loss_log), sft_terms, mcc_terms, per_path, path_labels)
        return loss_log.detach(), signals

    def _mcc(
        self,
        logits: torch.Tensor,
        batch: dict[str, torch.Tensor],
        idx: torch.Tensor,
        alpha: torch.Tensor,
        ans_valid: torch.Tensor,
    ) -> torch.Tensor:
        """The consistency term of one question (before λ); differentiable w.r.t. both sides of each pair.

        ``answer_span``: Σ_k α_k · mean_{j≠k, both spans intact, α_j > 0} symKL(P_k, P_j).
        ``position_aligned``: Σ_{i<j, α_iα_j ≥ min} α_iα_j · masked mean_t symKL(p_it, p_jt).
        """
        cc = self.cc
        k = idx.numel()
        zero = logits.new_zeros((), dtype=torch.float32)
        if k < 2:
            return zero
        if cc.mcc_mode == "answer_span":
            av = ans_valid[idx] & (alpha > 0)  # zero-weight paths (best_single) are nobody's partner
            if int(av.sum()) < 2:
                return zero
            logp, span = answer_log_probs(logits[idx], batch["answer_mask"][idx].to(torch.bool))
            span = span & av[:, None]
            d = pairwise_divergence(logp, span, kind="sym_kl")  # [K, K]
            pair = av[:, None] & av[None, :] & ~torch.eye(k, dtype=torch.bool, device=d.device)
            n_partners = pair.sum(1)
            l_mcon = (d * pair).sum(1) / n_partners.clamp_min(1)
            return (alpha * l_mcon).sum()
        if cc.mcc_mode == "position_aligned":
            attn = batch["attention_mask"]
            total = zero
            for a in range(k):
                for b in range(a + 1, k):
                    w = float(alpha[a] * alpha[b])
                    if w < cc.mcc_min_pair_weight:
                        continue
                    i, j = int(idx[a]), int(idx[b])
                    m = attn[i].to(logits.device) * attn[j].to(logits.device)
                    total = total + w * position_aligned_symkl(logits[i], logits[j], m)
            return total
        raise ValueError(f"unknown mcc_mode {cc.mcc_mode!r}")
