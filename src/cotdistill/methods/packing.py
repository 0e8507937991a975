"""Prompt-shared packing: one forward of a question's prompt for all its K paths (``train.share_prompt``).

A micro-step holds the K paths of a question, each encoded as ``[prompt, path_k]``; the prompt (chat template +
question) is the same for all of them. Instead of K rows, the rows of one question are packed into ONE sequence::

    [prompt, path_1, path_2, ..., path_K]

with a 4-D attention mask (prompt tokens causal among themselves; each path attends to the whole prompt and
causally to itself, never to another path) and ``position_ids`` that restart at ``prompt_len`` for every path,
so each path token sees exactly the keys and rotary positions it has in its own row. The packed logits are then
scattered back to the usual ``[n, T, V]`` layout (the prompt logits copied to every path), so loss code is
unchanged. The result equals the unpacked forward up to float rounding.

Rows pack together only when they are flagged (``share_prompt``), belong to the same question and hold the
same first ``prompt_len`` token ids; any other row is its own packed sequence (this is how batches with
different prompt prefixes, e.g. SbS task prefixes, fall back). When packing would merge nothing, or the model
is not one whose attention takes a custom 4-D mask and explicit positions (decoder-only Llama-like models
with ``sdpa`` or ``eager`` attention, no active sliding window), the plain forward runs instead.

transformers (5.x, ``masking_utils._preprocess_mask_arguments``) passes a 4-D ``attention_mask`` through
unchanged: ``sdpa`` takes it as a boolean "may attend" mask, ``eager`` adds it to the scores, so it gets an
additive float mask (0 / dtype min).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# decoder-only families whose every layer masks with create_causal_mask (a 4-D mask passes through as is)
# and applies rotary embeddings from position_ids
PACKABLE_MODEL_TYPES = frozenset({"llama", "qwen2", "qwen3", "mistral", "olmo2", "granite", "phi3"})
PACKABLE_ATTENTION = frozenset({"sdpa", "eager"})

# batch keys (with the forward's prefix) that packing reads
PACK_KEYS = ("question_index", "prompt_len", "share_prompt")


@dataclass
class PackPlan:
    """How ``n`` rows map into ``G`` packed sequences of length ``L``.

    Attributes:
        input_ids: [G, L] long, packed token ids (padding at the end of shorter sequences).
        position_ids: [G, L] long, each token's position in its own unpacked row (0 on padding).
        allowed: [G, L, L] bool, True where query (dim 1) may attend key (dim 2).
        index: [n, T] long, for each row and column the flat position (g * L + j) of its logits in the
            packed output; columns past a row's real length point at its last real token.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    allowed: torch.Tensor
    index: torch.Tensor


def packing_supported(model: nn.Module, packed_len: int | None = None) -> bool:
    """Whether ``model`` takes a custom 4-D mask with explicit ``position_ids`` (peft and DDP wrappers included)."""
    cfg = getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return False
    if getattr(cfg, "model_type", None) not in PACKABLE_MODEL_TYPES:
        return False
    if getattr(cfg, "_attn_implementation", None) not in PACKABLE_ATTENTION:
        return False
    window = getattr(cfg, "sliding_window", None)
    if window and getattr(cfg, "use_sliding_window", True) and (packed_len is None or packed_len > window):
        return False  # the 4-D mask would bypass the sliding window
    return True


def plan_packing(input_ids: torch.Tensor, attention_mask: torch.Tensor, question_index: torch.Tensor,
                 prompt_len: torch.Tensor, share: torch.Tensor | None = None) -> PackPlan | None:
    """Plan the packing of right-padded rows.

    None when it would merge no rows, when the packed rows (G x L token slots) would not be smaller than the
    unpacked ones (n x T), or when the batch is not right-padded.

    Args:
        input_ids, attention_mask: [n, T] (right padding, already trimmed to the longest real row).
        question_index: [n] long, rows of one question may share their prompt.
        prompt_len: [n] long, length of each row's prompt (tokens before the first completion token).
        share: [n] bool, rows allowed to share (default all).

    Returns:
        The :class:`PackPlan` (tensors on the inputs' device), or None.
    """
    n, t = input_ids.shape
    if n < 2:
        return None
    lens = attention_mask.sum(-1)
    cols = torch.arange(t, device=attention_mask.device)
    if not bool(((cols[None, :] < lens[:, None]).long() == attention_mask.long()).all()):
        return None  # not right-padded
    ids_cpu = input_ids.detach().cpu()
    lens_l = lens.tolist()
    plen_l = prompt_len.tolist()
    q_l = question_index.tolist()
    share_l = share.tolist() if share is not None else [True] * n

    # group rows: (question) -> rows whose prompt equals the group's first row's prompt
    groups: list[tuple[int, list[int]]] = []  # (shared length P, rows)
    open_groups: dict[int, int] = {}
    for i in range(n):
        p = min(int(plen_l[i]), int(lens_l[i]))
        g = open_groups.get(q_l[i]) if share_l[i] else None
        if g is not None:
            gp, grows = groups[g]
            if gp == p and p > 0 and torch.equal(ids_cpu[i, :p], ids_cpu[grows[0], :p]):
                grows.append(i)
                continue
        if share_l[i] and q_l[i] not in open_groups and p > 0:
            open_groups[q_l[i]] = len(groups)
            groups.append((p, [i]))
        else:  # own sequence: the whole row is its "prompt"
            groups.append((int(lens_l[i]), [i]))
    if len(groups) == n:
        return None

    lengths = [p + sum(int(lens_l[i]) - p for i in rows) for p, rows in groups]
    big_l = max(1, max(lengths))
    g_n = len(groups)
    if g_n * big_l >= n * t:
        return None  # padding of the packed rows would cost what sharing saves
    p_ids = torch.zeros((g_n, big_l), dtype=torch.long)
    p_pos = torch.zeros((g_n, big_l), dtype=torch.long)
    seg = torch.full((g_n, big_l), -2, dtype=torch.long)  # -1 shared prompt, k path k of the group, -2 padding
    index = torch.zeros((n, t), dtype=torch.long)
    for g, (p, rows) in enumerate(groups):
        base = g * big_l
        p_ids[g, :p] = ids_cpu[rows[0], :p]
        p_pos[g, :p] = torch.arange(p)
        seg[g, :p] = -1
        off = p
        for k, i in enumerate(rows):
            own = int(lens_l[i]) - p
            p_ids[g, off:off + own] = ids_cpu[i, p:p + own]
            p_pos[g, off:off + own] = torch.arange(p, p + own)
            seg[g, off:off + own] = k
            index[i, :p] = torch.arange(p) + base
            index[i, p:p + own] = torch.arange(off, off + own) + base
            last = (off + own - 1) if own > 0 else max(p - 1, 0)
            index[i, p + own:] = base + last  # padding columns: any finite logits, they carry no label
            off += own
    tril = torch.ones(big_l, big_l, dtype=torch.bool).tril()
    sq, sk = seg[:, :, None], seg[:, None, :]
    allowed = tril[None] & ((sk == -1) | (sk == sq)) & (sk != -2)
    allowed |= torch.eye(big_l, dtype=torch.bool)[None]  # padding queries attend themselves (no all-masked row)
    dev = input_ids.device
    return PackPlan(p_ids.to(dev), p_pos.to(dev), allowed.to(dev), index.to(dev))


def _mask_for(model: nn.Module, allowed: torch.Tensor) -> torch.Tensor:
    """[G, 1, L, L] mask in the form the model's attention expects: bool for sdpa, additive float for eager."""
    mask = allowed[:, None]
    cfg = getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)
    if getattr(cfg, "_attn_implementation", None) == "eager":
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        return torch.where(mask, zero, torch.finfo(dtype).min)
    return mask


def unpack(packed: torch.Tensor, plan: PackPlan) -> torch.Tensor:
    """Per-token outputs of the packed forward [G, L, D] back in the rows' layout [n, T, D]."""
    n, t = plan.index.shape
    return packed.reshape(-1, packed.size(-1)).index_select(0, plan.index.reshape(-1)).view(n, t, -1)


def packed_forward(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                   question_index: torch.Tensor | None = None, prompt_len: torch.Tensor | None = None,
                   share_prompt: torch.Tensor | None = None) -> tuple[torch.Tensor, PackPlan | None]:
    """(logits [n, T, V], the plan or None) of right-padded rows [n, T]; packed where rows allow it.

    The plan is returned so that other per-token outputs captured during the forward (e.g. COMPACT's final-norm
    hidden states, [G, L, H] when packed) can be brought back with :func:`unpack`; None means a plain forward.
    """
    plan = None
    if question_index is not None and prompt_len is not None and share_prompt is not None and bool(share_prompt.any()):
        plan = plan_packing(input_ids, attention_mask, question_index, prompt_len, share_prompt)
    if plan is None or not packing_supported(model, plan.input_ids.size(1)):
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits, None
    out = model(input_ids=plan.input_ids, attention_mask=_mask_for(model, plan.allowed),
                position_ids=plan.position_ids, use_cache=False).logits
    return unpack(out, plan), plan


def model_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                 question_index: torch.Tensor | None = None, prompt_len: torch.Tensor | None = None,
                 share_prompt: torch.Tensor | None = None) -> torch.Tensor:
    """Logits [n, T, V] of right-padded rows [n, T]; prompt-shared packed forward where rows allow it.

    Packing needs ``question_index``, ``prompt_len`` and ``share_prompt`` (all [n]); without them, or when
    :func:`plan_packing` / :func:`packing_supported` decline, this is ``model(input_ids, attention_mask).logits``.
    """
    return packed_forward(model, input_ids, attention_mask, question_index=question_index, prompt_len=prompt_len,
                          share_prompt=share_prompt)[0]


def pack_kwargs(batch: dict[str, torch.Tensor], rows: torch.Tensor | None = None, prefix: str = "",
                device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """The packing keys of ``batch`` (``{prefix}question_index/prompt_len/share_prompt``) for ``rows``, if present."""
    out = {}
    for k in PACK_KEYS:
        v = batch.get(f"{prefix}{k}")
        if v is None:
            return {}
        if rows is not None:
            v = v[rows.to(v.device)]
        out[k] = v.to(device) if device is not None else v
    return out
