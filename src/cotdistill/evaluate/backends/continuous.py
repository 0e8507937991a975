"""Greedy decoding with continuous batching that reproduces static ``generate`` batches token for token.

Why not plain ``model.generate``: it decodes a *static* batch until its longest row ends, so every row waits for
the batch's longest answer. On CPU a decode step of a small model costs about the same for 1 row as for 16 (it
is bound by reading the weights: SmolLM2-135M in bf16 on one thread, ~77 ms per step for 1, 4 or 16 rows), so
those waiting steps are the cost. ``generate`` cannot put a new prompt into a running batch, and transformers'
own continuous batching (``generate_batch``, paged attention) ran 4x slower than ``generate`` on CPU
(benchmarks/RESULTS.md). Hence this loop: up to ``batch_size`` rows decode together, and a row that ends is
replaced by the next prompt while the others go on.

Why it must mimic the static batches exactly: in bf16 on CPU a row's numbers depend on its batch. A linear layer
picks its kernel by the number of rows M (the same row gives different bits at M = 8 and M = 12), and attention's
result depends on how many padded key columns precede the row. On GSM8K at 256 new tokens, static batches of 8
and of 4 gave different greedy text for 3 of 8 questions, and a naive continuous loop (rows of any age side by
side, mixed left padding) for 14 of 24. Evaluation results (and lm-evaluation-harness, whose HF backend calls
``generate`` on the same length-sorted batches) are defined by the static batches, so this loop keeps, for every
row, exactly what ``generate`` computes for it:

* prompts are cut into the same batches as before (``batch_size`` consecutive prompts in the caller's order) and
  each batch is prefilled exactly as ``generate`` prefills it (same left padding, mask and position ids);
* every decode step runs the linear layers at M = ``batch_size`` rows (a kernel's result for a row does not depend
  on the other rows' values or order, only on M); the last, smaller batch runs alone at its own M, and free rows
  at the very end are filled with dummy rows;
* attention is computed row by row, each row over its own key span of exactly the length it has in its static
  batch (its batch's longest prompt + tokens generated so far), with the same padding mask (or none, where its
  batch had no padding, as ``generate`` then passes none). This is a registered transformers attention function
  that calls transformers' own ``sdpa_attention_forward`` on each row's slice.

``tests/unit/test_continuous_decode.py`` (tiny model) and ``tests/integration/test_eval_smollm2.py`` (SmolLM2 in
bf16) check that the outputs equal static ``generate``'s.

Layout: one key/value buffer per layer, ``[rows, kv_heads, capacity, head_dim]``; rows share one column counter
``t``, a row's span is columns ``[start, t)``, and a decode step writes column ``t`` in place (transformers'
``DynamicLayer`` concatenates, copying the whole cache every token). Columns left of every active span are dropped
when the buffer is reallocated.

Used where this is known to be exact (:func:`supports_continuous`): a decoder-only model on the ``sdpa`` attention
implementation whose default cache is made of plain full-attention ``DynamicLayer`` s (transformers >= 5).
Anything else (sliding-window or hybrid attention, eager or flash attention, older transformers) falls back to
static ``generate`` batches.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

ATTENTION_NAME = "cotdistill_rowwise_sdpa"
_ROWS_KW = "cotdistill_rows"  # model-forward kwarg carrying each row's key span to the attention function
_GROW = 256  # columns added when a buffer must grow (amortizes reallocation)


def supports_continuous(model) -> bool:
    """Whether :func:`greedy_continuous` reproduces ``generate`` for ``model`` (see the module docstring)."""
    try:
        from transformers import AttentionInterface  # noqa: F401
        from transformers.cache_utils import Cache, DynamicCache, DynamicLayer  # noqa: F401
        from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: F401
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask  # noqa: F401
    except ImportError:
        return False
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False) or not hasattr(model, "set_attn_implementation"):
        return False
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return False
    try:
        layers = DynamicCache(config=cfg).layers
    except Exception:  # noqa: BLE001 - any model transformers cannot describe this way
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _register_rowwise_attention() -> None:
    """Register :data:`ATTENTION_NAME`: sdpa, but row by row over each row's own key span in decode steps."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def rowwise_sdpa(module, query, key, value, attention_mask, **kwargs):
        """query ``[B, heads, q, d]``, key/value ``[B, kv_heads, T, d]``; returns ``[B, q, heads, d]``."""
        rows = kwargs.pop(_ROWS_KW, None)
        if rows is None:  # prefill: plain sdpa on the batch, with the mask sdpa_mask built
            return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
        outs = []
        for r, span in enumerate(rows):
            if span is None:  # a dummy row: its output is never read
                outs.append(query.new_zeros(1, query.shape[2], query.shape[1], query.shape[3]))
                continue
            start, mask = span
            out, _ = sdpa_attention_forward(module, query[r:r + 1], key[r:r + 1, :, start:],
                                            value[r:r + 1, :, start:], mask, **kwargs)
            outs.append(out)
        return torch.cat(outs, 0), None

    AttentionInterface.register(ATTENTION_NAME, rowwise_sdpa)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def _buffer_layer_class():
    from transformers.cache_utils import DynamicLayer

    class ColumnBufferLayer(DynamicLayer):
        """A cache layer over rows ``[:rows]`` and columns ``[:length]`` of preallocated key/value buffers.

        ``update`` writes the new columns in place and returns views: no per-step copy of the cache.
        """

        def __init__(self, keys_buf: torch.Tensor, values_buf: torch.Tensor, rows: int, length: int):
            super().__init__()
            self._kb, self._vb, self._rows, self._len = keys_buf, values_buf, rows, length
            self.keys, self.values = keys_buf[:rows, :, :length], values_buf[:rows, :, :length]
            self.device = keys_buf.device
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            end = self._len + key_states.shape[-2]
            self._kb[: self._rows, :, self._len:end] = key_states
            self._vb[: self._rows, :, self._len:end] = value_states
            self._len = end
            self.keys, self.values = self._kb[: self._rows, :, :end], self._vb[: self._rows, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self._len

    return ColumnBufferLayer


@dataclass
class _Row:
    index: int  # position of the prompt in the caller's list
    span: int  # key columns of the row as in its static batch: the batch's longest prompt (+ fed tokens)
    pad: int  # left padding of the row in its static batch
    masked: bool  # its static batch had padding, so generate passed a mask (else none)
    n_real: int  # real tokens in the cache (= position id of the next fed token)
    kv: list | None = None  # parked rows: per layer (keys, values) ``[kv_heads, span, d]`` from the prefill
    out: list[int] = field(default_factory=list)  # generated ids, the last one not yet fed
    finish: str | None = None
    start: int = 0  # first column of the span in the shared buffer (active rows)
    mask: torch.Tensor | None = None  # ``[1, 1, 1, pad + limit + prompt]`` bool: False on the padding
    limit: int = 0  # new tokens allowed: max_new_tokens, capped at the context left after its static batch


def greedy_continuous(
    model,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos_ids: Sequence[int],
    batch_size: int,
    pad_id: int = 0,
    context: int | None = None,
) -> Iterator[tuple[int, list[int], str]]:
    """Greedy-decode token-id ``prompts`` exactly as static ``generate`` batches of ``batch_size`` consecutive
    prompts would, but with up to ``batch_size`` rows in flight and finished rows replaced at once.

    Yields ``(prompt index, new ids before the first end token, finish_reason)`` as rows end (``stop`` at an
    end token, ``length`` at ``max_new_tokens``), so not in input order. Prompts must be non-empty. The model
    must pass :func:`supports_continuous`. ``context``: the model's context length; as in
    :func:`cotdistill.models.generate_batch`, each static batch's budget is capped at ``context`` minus its longest
    prompt (callers drop prompts that fill the context before). Tensors: buffers
    ``[batch_size, kv_heads, capacity, head_dim]`` per layer; decode inputs and position ids ``[batch_size, 1]``; prefill inputs ``[batch, L_batch]``, left-padded.
    """
    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be >= 1")
    if context is not None and any(len(p) >= context for p in prompts):
        raise ValueError(f"a prompt fills the {context}-token context: drop it before decoding")
    batches = [list(range(i, min(i + batch_size, len(prompts)))) for i in range(0, len(prompts), batch_size)]
    full = [b for b in batches if len(b) == batch_size]
    rest = [b for b in batches if len(b) < batch_size]  # at most one: the last batch, decoded at its own M
    _register_rowwise_attention()
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION_NAME)
    try:
        for group, width in ((full, batch_size), (rest, len(rest[0]) if rest else 0)):
            if group:
                yield from _decode(model, prompts, group, width, max_new_tokens, eos_ids, pad_id, context)
    finally:
        model.set_attn_implementation(previous)


def _decode(model, prompts, batches, width, max_new_tokens, eos_ids, pad_id,
            context) -> Iterator[tuple[int, list[int], str]]:
    """Decode the static ``batches`` (each of ``width`` prompts) with ``width`` rows in flight."""
    from transformers.cache_utils import Cache, DynamicCache

    layer_cls = _buffer_layer_class()
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    device = model.device
    eos = {int(i) for i in eos_ids}
    pending = deque(batches)
    parked: deque[_Row] = deque()  # prefilled rows waiting for a free slot
    slots: list[_Row | None] = [None] * width
    kbuf: list[torch.Tensor] = []
    vbuf: list[torch.Tensor] = []
    t = 0  # columns in use, shared by every row

    def take_token(r: _Row, tok: int) -> None:
        r.out.append(tok)
        if tok in eos:
            r.finish = "stop"
        elif len(r.out) >= r.limit:
            r.finish = "length"

    def result(r: _Row) -> tuple[int, list[int], str]:
        return r.index, (r.out[:-1] if r.finish == "stop" else r.out), r.finish

    @torch.inference_mode()
    def prefill(indices: list[int]) -> list[_Row]:
        """One static batch, prefilled exactly as generate does (left padding, cumsum positions, logits_to_keep=1)."""
        lg = max(len(prompts[i]) for i in indices)
        ids = torch.full((len(indices), lg), pad_id, dtype=torch.long)
        am = torch.zeros(len(indices), lg, dtype=torch.long)
        for j, i in enumerate(indices):
            ids[j, lg - len(prompts[i]):] = torch.as_tensor(list(prompts[i]), dtype=torch.long)
            am[j, lg - len(prompts[i]):] = 1
        ids, am = ids.to(device), am.to(device)
        pos = (am.cumsum(-1) - 1).masked_fill(am == 0, 0)  # generate's _prepare_position_ids_for_generation
        pre = DynamicCache(config=model.config)
        out = model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=True, logits_to_keep=1,
                    **{cache_kw: pre})
        first = out.logits[:, -1].float().argmax(-1).tolist()  # generate: float32 logits, argmax
        masked = bool((am == 0).any())
        limit = max_new_tokens if context is None else min(max_new_tokens, context - lg)
        rows = []
        for j, i in enumerate(indices):
            pad = lg - len(prompts[i])
            r = _Row(index=i, span=lg, pad=pad, masked=masked, n_real=len(prompts[i]),
                     kv=[(layer.keys[j], layer.values[j]) for layer in pre.layers], limit=limit)
            if masked:
                r.mask = torch.ones(1, 1, 1, lg + limit, dtype=torch.bool, device=device)
                r.mask[..., :pad] = False
            take_token(r, first[j])
            rows.append(r)
        return rows

    @torch.inference_mode()
    def realloc(need_left: int) -> None:
        """New buffers with the active spans' columns [c, t) moved to start at ``shift`` (c = first column in use),
        where ``shift`` leaves ``need_left`` columns left of the new ``t``, and room for _GROW more on the right."""
        nonlocal t
        active = [r for r in slots if r is not None]
        c = min((r.start for r in active), default=t)
        used = t - c
        shift = max(0, need_left - used)
        cap = shift + used + 1 + _GROW
        for bufs in (kbuf, vbuf):
            for li, old in enumerate(bufs):
                new = old.new_zeros(width, old.shape[1], cap, old.shape[3])
                new[:, :, shift:shift + used] = old[:, :, c:t]
                bufs[li] = new
        for r in active:
            r.start += shift - c
        t = shift + used

    @torch.inference_mode()
    def admit(slot: int, r: _Row) -> None:
        """Put a parked row into ``slot``: its prefill keys/values become columns [t - span, t)."""
        nonlocal t
        if not kbuf:
            for k, v in r.kv:
                kbuf.append(k.new_zeros(width, k.shape[0], r.span + _GROW, k.shape[2]))
                vbuf.append(v.new_zeros(width, v.shape[0], r.span + _GROW, v.shape[2]))
            t = r.span
        elif t < r.span or t + 1 > kbuf[0].shape[2]:
            realloc(r.span)
        for li, (k, v) in enumerate(r.kv):
            kbuf[li][slot, :, t - r.span:t] = k
            vbuf[li][slot, :, t - r.span:t] = v
        r.kv, r.start = None, t - r.span
        slots[slot] = r

    @torch.inference_mode()
    def decode_step() -> None:
        """Feed each row its last token at column t; every row attends over its own span (dummy rows: none)."""
        nonlocal t
        if t + 1 > kbuf[0].shape[2]:
            realloc(0)
        inp = torch.tensor([[r.out[-1] if r else pad_id] for r in slots], dtype=torch.long, device=device)
        pos = torch.tensor([[r.n_real if r else 0] for r in slots], dtype=torch.long, device=device)
        spans = []
        for r in slots:
            if r is None:
                spans.append(None)
            else:
                r.span += 1  # the fed token's column
                spans.append((r.start, r.mask[..., :r.span] if r.masked else None))
        cache = Cache(layers=[layer_cls(kbuf[li], vbuf[li], width, t) for li in range(len(kbuf))])
        out = model(input_ids=inp, attention_mask=None, position_ids=pos, use_cache=True, logits_to_keep=1,
                    **{cache_kw: cache, _ROWS_KW: spans})
        nxt = out.logits[:, -1].float().argmax(-1).tolist()
        t += 1
        for r, tok in zip(slots, nxt):
            if r is not None:
                r.n_real += 1
                take_token(r, tok)

    while True:
        for s in range(width):  # fill free slots: parked rows first, then the next static batch
            while slots[s] is None and (parked or pending):
                if not parked:
                    parked.extend(prefill(pending.popleft()))
                r = parked.popleft()
                if r.finish:  # ended on its first token
                    yield result(r)
                else:
                    admit(s, r)
        if all(r is None for r in slots):
            return
        decode_step()
        for s, r in enumerate(slots):
            if r is not None and r.finish:
                slots[s] = None
                yield result(r)
