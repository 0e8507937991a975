"""COMPACT's three per-path metrics (METHODS.md §3.3), as pure tensor functions plus model access.

All metrics are computed from the *current* student's training forward pass and are detached:
they only set the path weights α, which are stop-gradient constants.

* MI adaptability: a logit-lens probe of how much the gold-answer evidence jumps at thinking tokens.
* Graph consensus: weighted in-degree of a K×K attention graph over the paths' last hidden states,
  projected with the last decoder layer's ``q_proj``/``k_proj`` (LoRA included).
* Difficulty: the path's token-mean cross-entropy CE_k.

Model access (final norm, output embeddings, last layer's q/k projections) is resolved per
architecture and works through DDP wrappers and peft's ``PeftModel``. Parameters sharded by
DeepSpeed ZeRO-3 are gathered through the engine; FSDP is refused with a clear error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cotdistill.errors import CotdistillError

# --------------------------------------------------------------------------- tokenizer-side inputs


def think_token_ids(tokenizer: Any, keywords: Sequence[str]) -> list[int]:
    """Ids of V_think (§3.2): each keyword tokenised with and without a leading space.

    Only forms that are a single token are kept (so e.g. "In summary" usually drops out), as the
    authors' code does. Returns a sorted list of unique ids.
    """
    ids: set[int] = set()
    for word in keywords:
        for form in (word, " " + word):
            toks = tokenizer(form, add_special_tokens=False)["input_ids"]
            if len(toks) == 1:
                ids.add(int(toks[0]))
    return sorted(ids)


def gold_token_ids(tokenizer: Any, answer: Any, leading_space: bool = False) -> list[int]:
    """Gold ids g_1..g_m = ``tokenizer(Answer, add_special_tokens=False)`` (§3.2).

    ``leading_space`` (``compact.gold_leading_space``) tokenises ``" " + Answer`` instead, which
    matches the ids of the answer value inside the shared suffix.
    """
    text = str(answer).strip()
    if leading_space:
        text = " " + text
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


# --------------------------------------------------------------------------- (1) MI adaptability


def mi_adaptability(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    gold_ids: torch.Tensor,
    *,
    gold_emb: torch.Tensor | None = None,
    logits: torch.Tensor | None = None,
    think_ids: torch.Tensor | None = None,
    think_weight: float = 1.0,
    non_think_weight: float = 0.1,
    variant: Literal["logit", "logprob"] = "logit",
    scope_mask: torch.Tensor | None = None,
    length_norm: bool = False,
    completion_len: torch.Tensor | None = None,
    chunk: int = 512,
) -> torch.Tensor:
    """S_MI,k = Σ_t ReLU(I_{k,t} − I_{k,t−1}) · M_{k,t}  (§3.3 (1)).

    Args:
        hidden: [K, T, H] final-norm hidden states h_{k,t}.
        input_ids: [K, T] tokens z_{k,t} (the think mask looks at the token at t itself).
        gold_ids: [m] gold answer ids.
        gold_emb: [m, H] output-embedding rows E[g_j] (lm_head weight rows of the gold ids), needed for
            ``variant="logit"``: I_{k,t} = (1/m) Σ_j ⟨h_{k,t}, E[g_j]⟩.
        logits: [K, T, V] model logits, needed for ``variant="logprob"``:
            I_{k,t} = (1/m) Σ_j log softmax(logits_{k,t})[g_j].
        think_ids: [n] V_think ids; M = ``think_weight`` on them, ``non_think_weight`` elsewhere.
        scope_mask: [K, T] bool, positions summed over. COMPACT passes the real tokens (``mi_scope = all``:
            prompt + completion) or the completion tokens (``completion``); None = every position, padding
            included, as the authors' code (kept for that comparison: padding states depend on the batch).
        length_norm: divide by ``completion_len`` (``mi_length_norm``).
        completion_len: [K] number of completion tokens |C_k|.
        chunk: positions per chunk for the log-softmax of ``logprob`` (bounds memory).

    Returns:
        [K] fp32, detached.
    """
    with torch.no_grad():
        gold_ids = gold_ids.to(hidden.device).long().reshape(-1)
        if variant == "logit":
            if gold_emb is None:
                raise ValueError("mi_adaptability: variant='logit' needs gold_emb")
            probe = hidden.float() @ gold_emb.float().to(hidden.device).T  # [K, T, m]
            info = probe.mean(-1)  # [K, T]
        elif variant == "logprob":
            if logits is None:
                raise ValueError("mi_adaptability: variant='logprob' needs logits")
            parts = []
            for s in range(0, logits.size(1), chunk):
                lg = logits[:, s : s + chunk].float()
                parts.append((lg[..., gold_ids] - lg.logsumexp(-1, keepdim=True)).mean(-1))
            info = torch.cat(parts, dim=1)
        else:
            raise ValueError(f"unknown mi_variant {variant!r}")
        delta = torch.zeros_like(info)
        delta[:, 1:] = info[:, 1:] - info[:, :-1]
        if think_ids is not None and think_ids.numel():
            is_think = torch.isin(input_ids, think_ids.to(input_ids.device))
        else:
            is_think = torch.zeros_like(input_ids, dtype=torch.bool)
        weight = torch.where(
            is_think, torch.full_like(delta, float(think_weight)), torch.full_like(delta, float(non_think_weight))
        )
        contrib = F.relu(delta) * weight
        if scope_mask is not None:
            contrib = contrib * scope_mask.to(contrib.dtype)
        score = contrib.sum(-1)
        if length_norm:
            if completion_len is None:
                raise ValueError("mi_adaptability: length_norm needs completion_len")
            score = score / completion_len.to(score.dtype).clamp_min(1)
        return score


# --------------------------------------------------------------------------- (2) graph consensus


def widen_keys(
    k: torch.Tensor, n_heads: int, n_kv_heads: int, mode: Literal["feature", "head"] = "feature"
) -> torch.Tensor:
    """Widen GQA keys κ from n_kv_heads·d to n_heads·d features.

    ``feature`` repeats every single feature ``n_heads/n_kv_heads`` times in place (the authors'
    ``repeat_interleave(..., dim=-1)`` quirk); ``head`` repeats whole head blocks as attention does
    (kv head i serves query heads i·r .. i·r + r − 1, like transformers' ``repeat_kv``).

    Args:
        k: [K, n_kv_heads·d].
    Returns:
        [K, n_heads·d].
    """
    if n_kv_heads <= 0 or n_heads % n_kv_heads:
        raise ValueError(f"n_heads={n_heads} is not a multiple of n_kv_heads={n_kv_heads}")
    rep = n_heads // n_kv_heads
    if rep == 1:
        return k
    if mode == "feature":
        return k.repeat_interleave(rep, dim=-1)
    if mode == "head":
        kk = k.reshape(k.size(0), n_kv_heads, -1)
        return kk.repeat_interleave(rep, dim=1).reshape(k.size(0), -1)
    raise ValueError(f"unknown gqa_repeat {mode!r}")


def graph_consensus(
    v: torch.Tensor,
    q_proj: Callable[[torch.Tensor], torch.Tensor],
    k_proj: Callable[[torch.Tensor], torch.Tensor],
    *,
    n_heads: int,
    n_kv_heads: int,
    gqa_repeat: Literal["feature", "head"] = "feature",
) -> tuple[torch.Tensor, torch.Tensor]:
    """S_cons,j = Σ_i A_ij with A = softmax_row(q κᵀ/sqrt(d_q)), diagonal zeroed after softmax (§3.3 (2)).

    Args:
        v: [K, H] last-token final-norm states of one question's paths.
        q_proj, k_proj: the last decoder layer's projections (called as modules, so LoRA applies).
        n_heads, n_kv_heads: attention heads of the model (GQA when they differ).
        gqa_repeat: see :func:`widen_keys`.

    Returns:
        scores: [K] fp32 weighted in-degree; A: [K, K] fp32 attention graph (diag 0, rows not renormalised).
        d_q is the query width (= hidden size for Llama/Qwen2/Mistral), as in the authors' code.
    """
    with torch.no_grad():
        q = q_proj(v).float()
        k = widen_keys(k_proj(v).float(), n_heads, n_kv_heads, gqa_repeat)
        attn = torch.softmax((q @ k.T) * q.size(-1) ** -0.5, dim=-1)
        attn = attn.masked_fill(torch.eye(v.size(0), dtype=torch.bool, device=attn.device), 0.0)
        return attn.sum(0), attn


def last_token_states(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """v_k = h at the last non-pad position. Requires right padding (asserted).

    Args:
        hidden: [K, T, H]; attention_mask: [K, T] with 1 on real tokens.
    Returns:
        [K, H].
    """
    assert_right_padded(attention_mask)
    last = attention_mask.long().sum(1) - 1
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last.clamp_min(0).to(hidden.device)]


def assert_right_padded(attention_mask: torch.Tensor) -> None:
    """Raise unless every row is ones then zeros (right padding, §3.6)."""
    m = attention_mask.long()
    if m.size(1) > 1 and bool((m[:, 1:] > m[:, :-1]).any()):
        raise CotdistillError(
            "config: train.padding_side: COMPACT needs right-padded batches (the last-token position of "
            "graph consensus assumes it); got left or inner padding"
        )


# --------------------------------------------------------------------------- model access


@dataclass
class ModelParts:
    """The modules COMPACT's metrics read from a causal LM."""

    norm: nn.Module
    out_embeddings: nn.Module
    q_proj: nn.Module
    k_proj: nn.Module
    n_heads: int
    n_kv_heads: int


_WRAPPERS = ("DistributedDataParallel", "DataParallel", "DeepSpeedEngine", "PipelineEngine")


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP/DeepSpeed engine wrappers and peft's PeftModel; return the causal-LM module."""
    m = model
    for _ in range(8):
        if type(m).__name__ in _WRAPPERS and hasattr(m, "module"):
            m = m.module
            continue
        if hasattr(m, "get_base_model"):
            m = m.get_base_model()
            continue
        break
    return m


def _first_attr(obj: Any, names: Sequence[str]) -> Any:
    for n in names:
        val = getattr(obj, n, None)
        if val is not None:
            return val
    return None


def is_fsdp(model: nn.Module) -> bool:
    """True if any submodule is an FSDP wrapper (FSDP1 ``FullyShardedDataParallel`` or FSDP2 ``FSDP*``)."""
    for mod in model.modules():
        name = type(mod).__name__
        if name == "FullyShardedDataParallel" or name.startswith("FSDP"):
            return True
    return False


def resolve_parts(model: nn.Module) -> ModelParts:
    """Find the final norm, output embeddings and last layer's q/k projections (Llama, Qwen2, Mistral,
    Gemma and other ``model.model.layers[i].self_attn.{q,k}_proj`` designs), through wrappers and peft.
    """
    base = unwrap_model(model)
    decoder = None
    if hasattr(base, "get_decoder"):
        with contextlib.suppress(Exception):
            decoder = base.get_decoder()
    if decoder is None or decoder is base:
        decoder = _first_attr(base, ("model", "transformer", "decoder")) or base
    norm = _first_attr(decoder, ("norm", "final_layernorm", "ln_f", "final_norm"))
    layers = _first_attr(decoder, ("layers", "h", "blocks"))
    out = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if out is None:
        out = getattr(base, "lm_head", None)
    attn = _first_attr(layers[-1], ("self_attn", "attn", "attention")) if layers is not None and len(layers) else None
    q = getattr(attn, "q_proj", None) if attn is not None else None
    k = getattr(attn, "k_proj", None) if attn is not None else None
    if norm is None or out is None or q is None or k is None:
        raise CotdistillError(
            f"config: method: compact: cannot find the final norm / lm_head / last-layer q_proj,k_proj of "
            f"{type(base).__name__}; supported: Llama, Qwen2, Mistral, Gemma-style decoders"
        )
    cfg = base.config
    if hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    n_heads = int(cfg.num_attention_heads)
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    return ModelParts(norm=norm, out_embeddings=out, q_proj=q, k_proj=k, n_heads=n_heads, n_kv_heads=n_kv)


def _is_sharded(p: torch.Tensor) -> bool:
    return hasattr(p, "ds_id") or p.numel() == 0 or type(p).__name__ == "DTensor" or hasattr(p, "_local_tensor")


@contextlib.contextmanager
def gathered(params: Sequence[torch.Tensor]) -> Iterator[None]:
    """Make ``params`` whole for reading: a no-op for plain/DDP/ZeRO-1/2 models, DeepSpeed's
    ``GatheredParameters`` under ZeRO-3 (read-only, ``modifier_rank=None``). Other sharded weights
    (FSDP flat/DTensor shards) are refused with a one-line CotdistillError.
    """
    params = [p for p in params if p is not None]
    sharded = [p for p in params if _is_sharded(p)]
    if not sharded:
        yield
        return
    if any(hasattr(p, "ds_id") for p in sharded):
        try:
            import deepspeed  # noqa: PLC0415  (optional; only present in ZeRO-3 setups)
        except ImportError:
            raise CotdistillError(
                "config: method: compact: parameters are ZeRO-3 partitioned but deepspeed cannot be imported "
                "to gather them; use ddp or zero2"
            ) from None
        with deepspeed.zero.GatheredParameters(sharded, modifier_rank=None):
            yield
        return
    raise CotdistillError(
        "config: method: compact: the last layer's q_proj/k_proj or lm_head weights are sharded by an engine "
        "cotdistill cannot gather (FSDP/DTensor); use ddp, zero2 or zero3"
    )


class NormCapture:
    """Forward hook on the final norm: keeps its output (h = hidden_states[-1]) of the next forward.

    Use as a context manager around the model call; avoids ``output_hidden_states=True``.
    """

    def __init__(self, norm: nn.Module):
        self.norm = norm
        self.output: torch.Tensor | None = None
        self._handle = None

    def _hook(self, _module: nn.Module, _inp: Any, out: Any) -> None:
        out = out[0] if isinstance(out, (tuple, list)) else out
        self.output = out.detach()

    def __enter__(self) -> NormCapture:
        self.output = None
        self._handle = self.norm.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
