"""MIND: capability-aware multi-perspective distillation (METHODS.md §2).

One micro-step sees the K paths of ``Q`` questions (batch contract in :mod:`cotdistill.methods.base`).
MetaNet scores the paths from cached encoder vectors, the scores pick I_dyn and the weights α
(detached), and the student minimises Σ α_k CE_k + λ Σ_{i<j∈I} α_iα_j JSD(P_i‖P_j). MetaNet learns only
from L_meta = KL(softmax(s/τ) ‖ softmax(−L_real/τ)): alone on the initial losses L0 during the warm-up
(run in :meth:`MindMethod.prepare`), then jointly, slowly, on the student's current losses.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cotdistill.errors import CotdistillError
from cotdistill.methods.base import Method
from cotdistill.methods.losses import answer_log_probs, divergence, sequence_ce
from cotdistill.methods.mind.calibration import LossEMA, calibration_loss
from cotdistill.methods.mind.metanet import MetaNet
from cotdistill.methods.mind.selection import select_and_weight, uniform_weights
from cotdistill.methods.packing import model_logits, pack_kwargs
from cotdistill.pathset.roles import perspective_paths
from cotdistill.utils.io import stable_hash

log = logging.getLogger(__name__)

PREPARE_VERSION = "1"


# ----------------------------------------------------------------------------------------- helpers


def _row_labels(row: dict) -> list[str]:
    return [str(p.get("label") or p.get("perspective") or p.get("teacher") or "") for p in row["paths"]]


def dataset_label_vocab(dataset) -> list[str]:
    """Sorted path labels of the dataset: the fallback vocabulary, as ``pathset.collate.build_label_vocab``."""
    return sorted({lab for i in range(len(dataset)) for lab in _row_labels(dataset[i])})


def row_ids(dataset) -> list[int]:
    """Table index of each dataset row: its ``_row`` column (the collator's ``question_row``) or its position."""
    return [int(dataset[i].get("_row", i)) for i in range(len(dataset))]


def batch_layout(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense [Q, K] view of a flattened micro-step batch.

    Returns:
        pos: [Q, K] long, the batch entry of the j-th slot of question q (-1 where question q has < K entries).
        valid: [Q, K] bool, a real path there (``path_valid``).
    """
    qi = batch["question_index"].long().cpu()
    n_q = int(batch["question_row"].numel()) if "question_row" in batch else int(qi.max().item()) + 1
    counts = torch.bincount(qi, minlength=n_q)
    k = int(counts.max().item()) if qi.numel() else 0
    pos = torch.full((n_q, k), -1, dtype=torch.long)
    fill = [0] * n_q
    for e, q in enumerate(qi.tolist()):
        pos[q, fill[q]] = e
        fill[q] += 1
    pv = batch["path_valid"].bool().cpu()
    valid = (pos >= 0) & pv[pos.clamp_min(0)]
    return pos, valid


def _pair_weights(alpha: torch.Tensor, ok: torch.Tensor) -> torch.Tensor:
    """W[i, j] = α_i α_j for i < j with both paths usable for consistency, else 0. alpha, ok: [K]."""
    w = alpha[:, None] * alpha[None, :]
    both = ok[:, None] & ok[None, :]
    return torch.triu(w * both, diagonal=1)


# ------------------------------------------------------------------------------------------ method


def _fresh_lora(model: nn.Module) -> bool:
    """True for a PEFT model whose LoRA ``B`` matrices are all zero (an untrained adapter adds exact zeros)."""
    if not hasattr(model, "disable_adapter"):
        return False
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    return bool(lora_b) and all(not bool(p.detach().any()) for p in lora_b)


class MindMethod(Method):
    """MIND (METHODS.md §2): MetaNet-scored soft selection, α-weighted SFT and answer consistency.

    Besides the :class:`Method` lifecycle the trainer may set ``collator`` (the PathCollator used for
    training, needed by :meth:`prepare` to compute L0), ``label_vocab`` and ``run_dir`` (where the L0 table
    and the warmed-up MetaNet are kept, so a resumed run skips the warm-up) before calling ``prepare``;
    ``prepare`` also takes them as keyword arguments.
    """

    name = "mind"

    def needed_roles(self) -> set[str]:
        return {"perspective"}

    def select_paths(self, row: dict) -> list[dict]:
        """MIND's K paths: the perspective paths (one teacher, one per cognitive perspective in the paper);
        the standard path and rejected/hinted twins never enter the MetaNet."""
        return perspective_paths(row["paths"])

    def __init__(self, config: Any):
        super().__init__(config)
        self.mc = config.mind
        self.tc = config.effective_train("mind")
        self.collator = None
        self.label_vocab: list[str] | None = None
        self.run_dir: str | Path | None = None
        self.metanet: MetaNet | None = None
        self.meta_opt: torch.optim.Optimizer | None = None
        self.phase = "init"  # init → warmup → joint
        self.emb: torch.Tensor | None = None  # [n_rows, K_max, D] cached encoder vectors
        self.row_slots: list[list[int]] = []  # label slot of each path, indexed by row id (``_row``)
        self.rows: list[int] = []  # the row ids present in the training set
        self.l0: torch.Tensor | None = None  # [n_rows, K_max] initial CE, NaN where no path
        self.ema: LossEMA | None = None
        self.meta_pending = 0  # questions accumulated into MetaNet's gradient since its last step
        self.meta_steps = 0
        self.micro_steps = 0
        self.warmup_log: list[dict] = []
        self._pending_state: dict | None = None

    # ------------------------------------------------------------------ properties

    @property
    def uses_metanet(self) -> bool:
        """MetaNet (and the encoder) exist only for ``weighting = metanet``."""
        return self.mc.weighting == "metanet"

    def trainable_modules(self) -> list[nn.Module]:
        return [self.metanet] if self.metanet is not None else []

    # ------------------------------------------------------------------ prepare

    def prepare(self, dataset, tokenizer, model: nn.Module, *, collator=None, label_vocab=None,
                run_dir=None, autocast=None) -> None:
        """Cache e[x,k], compute L0 under no_grad and warm MetaNet up (§2.5 phase W, §2.8).

        Args:
            dataset: the training rows (HF ``Dataset`` or list of dicts with ``question`` and ``paths``), in
                the order the collator's ``question_row`` refers to.
            tokenizer: the student's tokenizer; model: the initial student θ0.
            collator: a PathCollator (``collator([row]) -> batch``); defaults to ``self.collator``.
            label_vocab: path-label vocabulary of ``path_slot``; defaults to the collator's, else labels in
                order of first appearance.
            run_dir: folder for ``mind/prepare.pt`` (L0 + warmed-up MetaNet), reused on resume.
            autocast: a context-manager factory for the student's forward (the trainer's mixed precision), so
                that L0 is the CE the training forward computes; None: the model's own dtype.
        """
        self.collator = collator if collator is not None else self.collator
        self._tokenizer = tokenizer
        self.run_dir = run_dir if run_dir is not None else self.run_dir
        vocab = label_vocab or self.label_vocab or getattr(self.collator, "label_vocab", None)
        self.label_vocab = list(vocab) if vocab else dataset_label_vocab(dataset)
        index = {lab: i for i, lab in enumerate(self.label_vocab)}
        self.rows = row_ids(dataset)
        self.row_slots = [[] for _ in range(max(self.rows, default=-1) + 1)]
        for i, rid in enumerate(self.rows):
            self.row_slots[rid] = [index.get(lab, -1) for lab in _row_labels(dataset[i])]
        if not self.uses_metanet:
            return
        device = next(model.parameters()).device
        self._encode(dataset, device)
        self._build_metanet(device)
        if self._pending_state is not None:  # resumed before prepare: the state replaces warm-up
            self._apply_state(self._pending_state)
            self._pending_state = None
            return
        cache = self._prepare_cache_path(dataset)
        if cache is not None and cache.is_file():
            saved = torch.load(cache, map_location="cpu", weights_only=False)
            if saved.get("key") == self._prepare_key(dataset):
                self.l0 = saved["l0"]
                self.metanet.load_state_dict(saved["metanet"])
                self.meta_opt.load_state_dict(saved["meta_opt"])
                self.warmup_log = saved.get("warmup_log", [])
                self._enter_joint()
                log.info("MIND: reused L0 and the warmed-up MetaNet from %s", cache)
                return
        with autocast() if autocast is not None else contextlib.nullcontext():
            self.l0 = self.initial_losses(dataset, model)
        self.warmup()
        if cache is not None and int(os.environ.get("RANK", "0")) == 0:  # every rank warms up alike; one writes
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".tmp{os.getpid()}")
            torch.save({"key": self._prepare_key(dataset), "l0": self.l0, "metanet": self.metanet.state_dict(),
                        "meta_opt": self.meta_opt.state_dict(), "warmup_log": self.warmup_log}, tmp)
            tmp.replace(cache)
        self._enter_joint()

    def _prepare_key(self, dataset) -> str:
        texts = [(dataset[i]["question"], [p["text"] for p in dataset[i]["paths"]]) for i in range(len(dataset))]
        mind = self.mc.model_dump(exclude={"train"})
        return stable_hash([PREPARE_VERSION, stable_hash(texts, 32), self.label_vocab, mind,
                            self.config.train.model, self.tc.seed, self.tc.max_seq_len], 32)

    def _prepare_cache_path(self, dataset) -> Path | None:
        if self.run_dir is None:
            return None
        return Path(self.run_dir) / "mind" / "prepare.pt"

    def _encode(self, dataset, device: torch.device) -> None:
        from cotdistill.methods.mind.encoder import PathEncoder

        enc_cfg = self.mc.encoder
        if enc_cfg.trainable:
            raise CotdistillError("config: mind.encoder.trainable: only a frozen encoder is supported")
        encoder = PathEncoder(enc_cfg.name, pooling=enc_cfg.pooling, max_length=enc_cfg.max_length,
                              device=device if device.type == "cuda" else "cpu")
        pairs, where = [], []
        for i, rid in enumerate(self.rows):
            row = dataset[i]
            for j, p in enumerate(row["paths"]):
                pairs.append((row["question"], p["text"]))
                where.append((rid, j))
        flat = encoder.encode_cached(pairs, progress=True)
        self.set_embeddings_from_flat(flat, where, len(self.row_slots))

    def set_embeddings_from_flat(self, flat: torch.Tensor, where: list[tuple[int, int]], n_rows: int) -> None:
        """Store path vectors. flat: [P, D]; where[p] = (dataset row, path index in the row)."""
        k_max = max((j for _, j in where), default=-1) + 1
        self.emb = torch.zeros(n_rows, max(k_max, 1), flat.size(-1))
        for p, (i, j) in enumerate(where):
            self.emb[i, j] = flat[p]

    def _build_metanet(self, device: torch.device) -> None:
        m = self.mc.metanet
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.tc.seed)
            self.metanet = MetaNet(enc_dim=self.emb.size(-1), d_model=m.d_model, n_attn_heads=m.n_attn_heads,
                                   n_score_heads=m.n_score_heads, n_paths=max(len(self.label_vocab), 1),
                                   dropout=m.dropout, use_self_attention=m.use_self_attention,
                                   perspective_embedding=m.perspective_embedding,
                                   score_activation=m.score_activation).to(device)
        self.meta_opt = torch.optim.AdamW(self.metanet.parameters(), lr=self.mc.meta_lr_warmup,
                                          weight_decay=self.mc.meta_weight_decay)

    def _enter_joint(self) -> None:
        """Phase J: smaller lr (the optimizer's moments carry over), larger accumulation."""
        for g in self.meta_opt.param_groups:
            g["lr"] = self.mc.meta_lr_joint
        if self.mc.loss_ema and self.ema is None:
            self.ema = LossEMA(self.l0, self.mc.loss_ema_decay)
        self.phase = "joint"
        self.metanet.train()

    # -- per-row tables ---------------------------------------------------------------------------

    def row_columns(self, batch: dict[str, torch.Tensor], pos: torch.Tensor, valid: torch.Tensor
                    ) -> torch.Tensor:
        """Path index within the dataset row for each [Q, K] slot (-1 for padding / unknown paths).

        The j-th valid batch path with label slot s is the j-th path of the row with that slot, so
        collators may reorder or pad paths freely.
        """
        rows = batch["question_row"].long().cpu().tolist()
        slots = batch["path_slot"].long().cpu()
        cols = torch.full(pos.shape, -1, dtype=torch.long)
        for q, row in enumerate(rows):
            row_slots = self.row_slots[row] if 0 <= row < len(self.row_slots) else []  # -1: unknown row
            used = [False] * len(row_slots)
            for k in range(pos.size(1)):
                if not valid[q, k]:
                    continue
                s = int(slots[pos[q, k]])
                for j, rs in enumerate(row_slots):
                    if not used[j] and rs == s:
                        used[j] = True
                        cols[q, k] = j
                        break
        return cols

    def _gather_emb(self, rows: torch.Tensor, cols: torch.Tensor, device) -> torch.Tensor:
        """[Q, K, D] cached vectors (zeros where cols < 0)."""
        e = self.emb[rows[:, None].expand_as(cols), cols.clamp_min(0)]
        return (e * (cols >= 0)[..., None]).to(device)

    # -- L0 and warm-up -------------------------------------------------------------------------------

    @torch.no_grad()
    def initial_losses(self, dataset, model: nn.Module) -> torch.Tensor:
        """L0[x, k] = CE_θ0(r_k | x) for every (row, path), under no_grad with dropout off.

        Returns [n_rows, K_max] fp32 on CPU, NaN where a row has no k-th path.
        """
        if self.collator is None:
            self.collator = self._default_collator(dataset)
        from tqdm.auto import tqdm

        k_max = self.emb.size(1) if self.emb is not None else max(len(r) for r in self.row_slots)
        l0 = torch.full((len(self.row_slots), k_max), float("nan"))
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        # θ0 with a fresh LoRA adapter: B = 0, so the adapter adds exact zeros and the base model alone gives the
        # same logits bit for bit without the adapter's extra matmuls (about 20 % of this pass under bf16 on CPU)
        skip_adapter = _fresh_lora(model)
        try:
            with model.disable_adapter() if skip_adapter else contextlib.nullcontext():
                self._l0_pass(dataset, model, l0, device, tqdm)
        finally:
            model.train(was_training)
        return l0

    def _l0_pass(self, dataset, model, l0: torch.Tensor, device, tqdm) -> None:
        """Fill ``l0`` [n_rows, K_max] question by question (one forward per question's paths, no grad)."""
        for i in tqdm(range(len(dataset)), desc="MIND: initial losses L0", unit="question"):
            rid = self.rows[i]
            batch = self.collator([self._row_with_index(dataset, i, rid)])
            batch["question_row"] = torch.tensor([rid])
            batch["question_index"] = torch.zeros_like(batch["question_index"])
            pos, valid = batch_layout(batch)
            cols = self.row_columns(batch, pos, valid)
            ents = pos[valid]
            ce, _, _ = self._forward_chunks(model, batch, ents, device, grad=False, need_p=False)
            l0[rid, cols[valid]] = ce.float().cpu()

    @staticmethod
    def _row_with_index(dataset, i: int, rid: int) -> dict:
        row = dict(dataset[i])
        row["_row"] = rid  # the PathCollator's question_row
        return row

    def _default_collator(self, dataset):
        """The trainer normally hands its collator over; this builds TRAIN's PathCollator as a fallback."""
        try:
            from cotdistill.pathset.collate import PathCollator  # noqa: PLC0415 (optional, lazily)
        except ImportError as e:
            raise CotdistillError(
                f"mind: prepare needs a collator (cotdistill.pathset.collate unavailable: {e})") from None
        tok = getattr(self, "_tokenizer", None)
        return PathCollator(tok, max_seq_len=self.tc.max_seq_len,
                            student_instruction=self.config.data.student_instruction,
                            answer_suffix=self.config.data.answer_suffix, label_vocab=self.label_vocab)

    def warmup(self, epochs: int | None = None) -> None:
        """Phase W: MetaNet alone on L0, AdamW at ``meta_lr_warmup``, ``meta_warmup_accum`` questions a step."""
        epochs = self.mc.warmup_epochs if epochs is None else epochs
        self.phase = "warmup"
        self.metanet.train()
        device = next(self.metanet.parameters()).device
        present = list(self.rows) or list(range(self.emb.size(0)))
        n_rows = len(present)
        rng = random.Random(self.tc.seed)
        slots = torch.full(self.l0.shape, 0, dtype=torch.long)
        for i, rs in enumerate(self.row_slots):
            slots[i, : len(rs)] = torch.tensor(rs, dtype=torch.long).clamp_min(0)
        valid_all = ~torch.isnan(self.l0)
        if epochs <= 0 or n_rows == 0:
            return
        from tqdm.auto import tqdm

        acc = self.mc.meta_warmup_accum
        bar = tqdm(total=epochs * math.ceil(n_rows / acc), desc="MIND: MetaNet warm-up", unit="step")
        for epoch in range(epochs):
            order = list(present)
            rng.shuffle(order)
            total, n = 0.0, 0
            for start in range(0, n_rows, acc):
                rows = torch.tensor(order[start: start + acc])
                valid = valid_all[rows]
                s, _ = self.metanet(self.emb[rows].to(device), valid.to(device), slots[rows].to(device))
                loss = calibration_loss(s, self.l0[rows].to(device), valid.to(device), self.mc.tau_meta,
                                        self.mc.meta_kl_direction).mean()
                self.meta_opt.zero_grad(set_to_none=True)
                loss.backward()
                self.meta_opt.step()
                total += float(loss.detach()) * len(rows)
                n += len(rows)
                bar.update(1)
            self.warmup_log.append({"epoch": epoch + 1, "L_meta": total / max(n, 1)})
            bar.set_postfix(L_meta=f"{total / max(n, 1):.4f}")
        bar.close()
        self.meta_opt.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ student forward

    def _forward_chunks(self, model, batch, ents: torch.Tensor, device, *, grad: bool, need_p: bool,
                        max_len: int | None = None):
        """CE (and answer log-probs) of the batch entries ``ents``, in chunks of ``paths_micro_batch``.

        Returns ce [n] fp32, logp [n, M, V] fp32 (or None), span [n, M] bool (or None).
        """
        ces, lps, sps = [], [], []
        step = self.tc.paths_micro_batch
        for start in range(0, ents.numel(), step):
            idx = ents[start: start + step]
            with torch.set_grad_enabled(grad):
                ce, lp, sp = self._forward(model, batch, idx, device, need_p, max_len)
            ces.append(ce)
            lps.append(lp)
            sps.append(sp)
        if not ces:
            return torch.zeros(0, device=device), None, None
        return (torch.cat(ces), torch.cat(lps) if need_p else None, torch.cat(sps) if need_p else None)

    def _forward(self, model, batch, idx: torch.Tensor, device, need_p: bool, max_len: int | None):
        """One forward over the entries idx, trimmed to their longest real length."""
        idx_dev = idx.to(batch["input_ids"].device)
        att = batch["attention_mask"][idx_dev]
        width = int(att.sum(-1).max().item())
        ids = batch["input_ids"][idx_dev][:, :width].to(device)
        att = att[:, :width].to(device)
        labels = batch["labels"][idx_dev][:, :width].to(device)
        logits = model_logits(model, ids, att, **pack_kwargs(batch, idx_dev, device=device))  # train.share_prompt
        ce = sequence_ce(logits, labels)
        if not need_p:
            return ce, None, None
        amask = batch["answer_mask"][idx_dev][:, :width].to(device).bool()
        logp, span = answer_log_probs(logits, amask, self.mc.cons_temperature, max_len=max_len)
        return ce, logp, span

    def _div(self, logp: torch.Tensor, logq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return divergence(logp, logq, self.mc.cons_divergence, mask, self.mc.cons_topk)

    def _pairwise(self, logp: torch.Tensor, span: torch.Tensor, partner: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """D[i, j] = D(P_i ‖ partner_j) over shared span tokens; [n, n]."""
        q = logp if partner is None else partner
        n = logp.size(0)
        a = logp.unsqueeze(1).expand(n, n, *logp.shape[1:])
        b = q.unsqueeze(0).expand(n, n, *q.shape[1:])
        m = span.unsqueeze(1) & span.unsqueeze(0)
        return self._div(a, b, m)

    # ------------------------------------------------------------------ training step

    def compute_loss(self, model, batch):
        """Evaluation loss (dev set): uniform weights over the valid paths, L_SFT + λ·L_cons.

        Training goes through :meth:`training_step`. Dev questions have no cached vectors and must not
        move MetaNet, so the dev loss uses α = 1/K: comparable across MIND variants and over time.
        Returns the scalar loss and ``{"L_sft", "L_cons"}``.
        """
        device = next(model.parameters()).device
        pos, valid = batch_layout(batch)
        kept, alpha = uniform_weights(valid)
        ans_valid = batch["answer_valid"].bool().cpu()
        max_m = int(batch["answer_mask"].bool().sum(-1).max().item()) if batch["answer_mask"].numel() else 0
        ents = pos[valid]
        ce, logp, span = self._forward_chunks(model, batch, ents, device, grad=torch.is_grad_enabled(),
                                              need_p=self.mc.lambda_cons > 0, max_len=max_m)
        row_of = {int(e): i for i, e in enumerate(ents.tolist())}
        a_dev = alpha.to(device)
        l_sft = ce.new_zeros(())
        l_cons = ce.new_zeros(())
        for q in range(pos.size(0)):
            ks = kept[q].nonzero(as_tuple=True)[0]
            if ks.numel() == 0:
                continue
            r = torch.tensor([row_of[int(pos[q, k])] for k in ks], device=device)
            l_sft = l_sft + (a_dev[q, ks] * ce[r]).sum()
            if logp is not None and ks.numel() > 1:
                w = _pair_weights(a_dev[q, ks], self._cons_ok(q, pos, kept, ans_valid)[ks].to(device))
                if w.any():
                    l_cons = l_cons + (w * self._pairwise(logp[r], span[r])).sum()
        n_q = max(pos.size(0), 1)
        loss = (l_sft + self.mc.lambda_cons * l_cons) / n_q
        return loss, {"L_sft": float(l_sft.detach()) / n_q, "L_cons": float(l_cons.detach()) / n_q}

    def training_step(self, model, batch, backward):
        """One micro-step: score, select, weighted SFT + consistency, L_meta, MetaNet step when due.

        Returns the detached L_total (mean over the micro-step's questions) and the signals.
        """
        device = next(model.parameters()).device
        mc = self.mc
        pos, valid = batch_layout(batch)
        n_q = pos.size(0)
        ans_valid = batch["answer_valid"].bool().cpu()
        slot_of = batch["path_slot"].long().cpu()
        max_m = int(batch["answer_mask"].bool().sum(-1).max().item()) if batch["answer_mask"].numel() else 0

        # ---- scores and weights (α, I_dyn are constants for the student)
        s = None
        if mc.weighting == "metanet":
            if self.metanet is None:
                raise CotdistillError("mind: prepare() must run before training (MetaNet missing)")
            rows = batch["question_row"].long().cpu()
            cols = self.row_columns(batch, pos, valid)
            slots = slot_of[pos.clamp_min(0)].clamp_min(0)
            mdev = next(self.metanet.parameters()).device
            s, _ = self.metanet(self._gather_emb(rows, cols, mdev), valid.to(mdev), slots.to(mdev))
            kept, alpha, fallback = select_and_weight(s.detach().cpu(), valid, mc.beta, mc.tau_student,
                                                      mc.select_on)
        elif mc.weighting == "uniform":
            kept, alpha = uniform_weights(valid)
            fallback = torch.zeros(n_q, dtype=torch.bool)
        else:  # instantaneous: decided after pass 1
            kept = alpha = fallback = None

        # kept paths fitting one chunk: grad forward on them + no_grad CE of the rest (cheapest, exact);
        # otherwise the two-pass exact gradient of §2.7. Instantaneous weighting needs all CEs first.
        two_pass = mc.weighting == "instantaneous" or int(kept.sum()) > self.tc.paths_micro_batch
        if mc.weighting != "instantaneous" and not two_pass:
            ce_all, l_sft, l_cons, total = self._single_pass(model, batch, pos, valid, kept, alpha, ans_valid,
                                                             device, backward, max_m)
        else:
            ce_all, l_sft, l_cons, total, inst = self._two_pass(model, batch, pos, valid, kept, alpha, ans_valid,
                                                                device, backward, max_m)
            if inst is not None:
                kept, alpha, fallback, s_inst = inst
        self.micro_steps += 1

        # ---- MetaNet calibration on the detached real losses
        l_meta = None
        if mc.weighting == "metanet":
            real = ce_all.detach().clone()
            if self.ema is not None:
                rows = batch["question_row"].long().cpu()
                ok = valid & (cols >= 0)
                rr = rows[:, None].expand_as(cols)[ok]
                real[ok] = self.ema.update(rr, cols[ok], real[ok])
            mdev = s.device
            lm = calibration_loss(s, real.to(mdev), valid.to(mdev), mc.tau_meta, mc.meta_kl_direction)
            (lm.sum() / mc.meta_joint_accum).backward()
            l_meta = float(lm.detach().mean())
            self.meta_pending += n_q
            if self.meta_pending >= mc.meta_joint_accum:
                self._sync_meta_grads()
                self.meta_opt.step()
                self.meta_opt.zero_grad(set_to_none=True)
                self.meta_pending = 0
                self.meta_steps += 1

        # ---- signals
        shown = s.detach().cpu() if s is not None else (s_inst if mc.weighting == "instantaneous" else None)
        signals: dict[str, Any] = {
            "alpha": self._per_label(alpha, pos, valid, slot_of),
            "kept": self._per_label(kept.float(), pos, valid, slot_of),
            "n_kept": float(kept.sum(-1).float().mean()),
            "ce": self._per_label(ce_all.nan_to_num(0.0), pos, valid, slot_of),
            "L_sft": l_sft,
            "L_cons": l_cons,
        }
        if shown is not None:
            signals["scores"] = self._per_label(shown, pos, valid, slot_of)
        if l_meta is not None:
            signals["L_meta"] = l_meta
        if mc.select_on == "score" and mc.weighting != "uniform":
            signals["selection_fallback"] = float(fallback.float().mean())
        return torch.tensor(total), signals

    def _sync_meta_grads(self) -> None:
        """Average MetaNet's gradients over data-parallel ranks so every rank keeps the same MetaNet."""
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return
        for p in self.metanet.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= dist.get_world_size()

    def _per_label(self, values: torch.Tensor, pos, valid, slot_of) -> dict[str, float]:
        """Mean of a [Q, K] quantity per path label over the micro-step's valid paths."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        vocab = self.label_vocab or []
        for q in range(pos.size(0)):
            for k in range(pos.size(1)):
                if not valid[q, k]:
                    continue
                slot = int(slot_of[pos[q, k]])
                lab = vocab[slot] if 0 <= slot < len(vocab) else str(slot)
                sums[lab] = sums.get(lab, 0.0) + float(values[q, k])
                counts[lab] = counts.get(lab, 0) + 1
        return {lab: sums[lab] / counts[lab] for lab in sums}

    def _cons_ok(self, q, pos, kept, ans_valid) -> torch.Tensor:
        """[K] paths of question q taking part in L_cons: kept and with an untruncated answer span."""
        return kept[q] & ans_valid[pos[q].clamp_min(0)] & (pos[q] >= 0)

    def _single_pass(self, model, batch, pos, valid, kept, alpha, ans_valid, device, backward, max_m):
        """Grad forward on the kept paths only, no_grad CE on the rest (for L_real); one backward."""
        mc = self.mc
        n_q = pos.size(0)
        ce_all = torch.full(pos.shape, float("nan"))
        kept_ents = pos[kept]
        ce_k, logp_k, span_k = self._forward(model, batch, kept_ents, device, True, max_m)
        rest = pos[valid & ~kept]
        if rest.numel():
            ce_r, _, _ = self._forward_chunks(model, batch, rest, device, grad=False, need_p=False)
            ce_all[valid & ~kept] = ce_r.detach().float().cpu()
        ce_all[kept] = ce_k.detach().float().cpu()
        # map entry → row in the kept tensors
        where = {int(e): i for i, e in enumerate(kept_ents.tolist())}
        a_dev = alpha.to(device)
        loss_sft = ce_k.new_zeros(())
        loss_cons = ce_k.new_zeros(())
        for q in range(n_q):
            ks = kept[q].nonzero(as_tuple=True)[0]
            if ks.numel() == 0:
                continue
            rows_q = torch.tensor([where[int(pos[q, k])] for k in ks], device=device)
            loss_sft = loss_sft + (a_dev[q, ks] * ce_k[rows_q]).sum()
            if mc.lambda_cons > 0 and ks.numel() > 1:
                ok = self._cons_ok(q, pos, kept, ans_valid)[ks].to(device)
                w = _pair_weights(a_dev[q, ks], ok)
                if w.any():
                    d = self._pairwise(logp_k[rows_q], span_k[rows_q])
                    loss_cons = loss_cons + (w * d).sum()
        total = (loss_sft + mc.lambda_cons * loss_cons) / n_q
        backward(total)
        return ce_all, float(loss_sft.detach()) / n_q, float(loss_cons.detach()) / n_q, float(total.detach())

    def _two_pass(self, model, batch, pos, valid, kept, alpha, ans_valid, device, backward, max_m):
        """Memory-safe exact gradient (§2.7): pass 1 no_grad over all paths, pass 2 per chunk of kept paths."""
        mc = self.mc
        n_q = pos.size(0)
        need_p = mc.lambda_cons > 0
        ents = pos[valid]
        ce1, logp1, span1 = self._forward_chunks(model, batch, ents, device, grad=False, need_p=need_p,
                                                 max_len=max_m)
        ce_all = torch.full(pos.shape, float("nan"))
        ce_all[valid] = ce1.float().cpu()
        row_of = {int(e): i for i, e in enumerate(ents.tolist())}
        inst = None
        if mc.weighting == "instantaneous":
            s_inst = -ce_all.nan_to_num(0.0)
            kept, alpha, fallback = select_and_weight(s_inst, valid, mc.beta, mc.tau_student, mc.select_on)
            inst = (kept, alpha, fallback, s_inst)
        a_dev = alpha.to(device)
        # pass-1 L_cons (logged; pass 2 counts each pair twice)
        l_cons = 0.0
        pairs: dict[int, list] = {}  # question → (kept slots, pass-1 rows, ok mask)
        for q in range(n_q):
            ks = kept[q].nonzero(as_tuple=True)[0]
            rows1 = torch.tensor([row_of[int(pos[q, k])] for k in ks], dtype=torch.long)
            ok = self._cons_ok(q, pos, kept, ans_valid)[ks]
            pairs[q] = (ks, rows1, ok)
            if need_p and ks.numel() > 1:
                w = _pair_weights(alpha[q, ks], ok).to(device)
                if w.any():
                    r = rows1.to(device)
                    l_cons += float((w * self._pairwise(logp1[r], span1[r])).sum())
        # pass 2: chunks of kept paths, each with its own backward
        kept_list = [(q, int(k)) for q in range(n_q) for k in kept[q].nonzero(as_tuple=True)[0].tolist()]
        step = self.tc.paths_micro_batch
        l_sft = 0.0
        for start in range(0, len(kept_list), step):
            chunk = kept_list[start: start + step]
            idx = torch.tensor([int(pos[q, k]) for q, k in chunk], dtype=torch.long)
            ce_c, logp_c, span_c = self._forward(model, batch, idx, device, need_p, max_m)
            terms = []
            for i, (q, k) in enumerate(chunk):
                t = a_dev[q, k] * ce_c[i]
                l_sft += float(t.detach())
                ks, rows1, ok = pairs[q]
                me = int((ks == k).nonzero()[0, 0])
                if need_p and ok[me] and ks.numel() > 1:
                    cons = ce_c.new_zeros(())
                    for j in range(ks.numel()):
                        if j == me or not ok[j]:
                            continue
                        partner = logp1[rows1[j]].detach()
                        m = span_c[i] & span1[rows1[j]]
                        # keep the pair's argument order of L_cons (i < j): exact for asymmetric kl too
                        d = (self._div(logp_c[i], partner, m) if me < j else self._div(partner, logp_c[i], m))
                        cons = cons + a_dev[q, k] * a_dev[q, int(ks[j])] * d
                    t = t + mc.lambda_cons * cons
                terms.append(t)
            backward(torch.stack(terms).sum() / n_q)
        l_sft /= n_q
        l_cons /= n_q
        return ce_all, l_sft, l_cons, l_sft + mc.lambda_cons * l_cons, inst

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """MetaNet, its optimizer, phase, counters, L0 and the EMA table."""
        if self.metanet is None:
            return {"phase": self.phase, "micro_steps": self.micro_steps}
        return {
            "phase": self.phase,
            "metanet": self.metanet.state_dict(),
            "meta_opt": self.meta_opt.state_dict(),
            "meta_pending": self.meta_pending,
            "meta_steps": self.meta_steps,
            "micro_steps": self.micro_steps,
            "l0": self.l0,
            "ema": None if self.ema is None else self.ema.table,
            "label_vocab": self.label_vocab,
            "warmup_log": self.warmup_log,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; before :meth:`prepare` it is kept and applied there (warm-up skipped)."""
        if "metanet" not in state:
            self.micro_steps = state.get("micro_steps", 0)
            return
        if self.metanet is None:
            self._pending_state = state
            return
        self._apply_state(state)

    def _apply_state(self, state: dict[str, Any]) -> None:
        self.metanet.load_state_dict(state["metanet"])
        self.meta_opt.load_state_dict(state["meta_opt"])
        self.meta_pending = state.get("meta_pending", 0)
        self.meta_steps = state.get("meta_steps", 0)
        self.micro_steps = state.get("micro_steps", 0)
        self.l0 = state.get("l0")
        self.warmup_log = state.get("warmup_log", [])
        if state.get("ema") is not None:
            self.ema = LossEMA(state["ema"], self.mc.loss_ema_decay)
        self.phase = state.get("phase", "joint")
        if self.phase == "joint":
            self._enter_joint()
