"""Transformers backend: greedy decoding with LEFT padding, prompts taken longest first.

Default: continuous batching (:mod:`cotdistill.evaluate.backends.continuous`): up to ``batch_size`` rows decode
at once and a finished row is replaced by the next prompt at once, so no row waits for the longest answer of
its batch. Where that loop is not known to be exact (sliding-window or hybrid attention, transformers < 5), or
with ``continuous=False``: static batches of ``batch_size`` through ``model.generate``.

Left padding keeps every prompt's last token at the same position, so the first generated token of
each row follows its own prompt; the attention mask (not token ids: SmolLM2's pad token is its
end-of-turn token) tells the model which positions are padding. Sorting prompts by length keeps
padding small; the longest prompts run first so that an out-of-memory error shows up at once. Both modes
give the same tokens: continuous batching reproduces the static batches exactly (see continuous.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cotdistill.evaluate.backends.base import EvalBackend, EvalOutput, EvalRequest


class HFBackend(EvalBackend):
    """Greedy generation with a local transformers model (see :func:`load_model_and_tokenizer`)."""

    name = "hf"

    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "auto", batch_size: int = 8,
                 device: str | None = None, model_obj=None, tokenizer=None, provenance: dict | None = None,
                 continuous: bool | None = None):
        """Load ``model`` (spec) with ``adapter`` merged, or reuse an already loaded ``model_obj``/``tokenizer``.

        ``continuous``: continuous batching (None: wherever it is exact for this model; False: static
        ``generate`` batches, the behaviour before it existed).
        """
        if model_obj is None:
            from cotdistill.models import load_model_and_tokenizer

            model_obj, tokenizer, provenance = load_model_and_tokenizer(
                model, dtype=dtype, adapter=adapter, for_training=False, device=device
            )
        self.model, self.tok = model_obj, tokenizer
        self.batch_size = int(batch_size)
        self._prov = dict(provenance or {"model": model})
        from cotdistill.models import end_token_ids

        self.eos_ids = end_token_ids(self.model, self.tok)
        from cotdistill.evaluate.backends.continuous import supports_continuous

        self.continuous = supports_continuous(self.model) if continuous is None else bool(continuous)

    def provenance(self) -> dict[str, Any]:
        """Model, weights hash, adapter, chat-template hash and dtype of the loaded model."""
        return {k: self._prov.get(k) for k in ("model", "model_sha", "adapter", "adapter_sha",
                                              "chat_template_sha", "dtype")}

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt text: the model's chat template with the generation prompt (its default system turn)."""
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def generate_texts(self, prompts: list[str], *, max_new_tokens: int) -> list[tuple[list[int], str, str]]:
        """Greedy-generate one left-padded batch of rendered prompts.

        Returns per prompt ``(new_token_ids, text, finish_reason)``; ids stop before the first end token.
        Shapes: input_ids/attention_mask ``(B, L_max)``; output ``(B, L_max + T_new)``.
        """
        from cotdistill.models import generate_batch

        gens = generate_batch(self.model, self.tok, prompts, max_new_tokens=max_new_tokens, eos_ids=self.eos_ids)
        return [(g.ids, g.text, g.finish_reason) for g in gens]

    def generate(self, requests: list[EvalRequest], *, max_new_tokens: int, seed: int = 0) -> Iterator[list[EvalOutput]]:
        """Prompts longest first; yields finished outputs in groups of ``batch_size`` (the last group may be smaller).

        Continuous batching yields outputs as their rows end (not in prompt order); static batching yields
        each batch when it ends, after one group of the prompts that fill the context (``over_context``, not
        generated; that group may hold any number of them).
        """
        import torch

        from cotdistill.models import model_context

        if not requests:
            return
        torch.manual_seed(seed)
        rendered = [(r, self.render(r.messages)) for r in requests]
        ids = {r.key: self.tok(p, add_special_tokens=False)["input_ids"] for r, p in rendered}
        # longest first, ties by prompt text: lm-evaluation-harness's order, so its batches at the same batch size
        # are ours (in bf16 a row's tokens depend on its batch, so this keeps results comparable with it)
        rendered.sort(key=lambda rp: (-len(ids[rp[0].key]), rp[1], rp[0].key))
        # bounded by the context (as generate_batch bounds a batch): a prompt that fills it is not generated but
        # counted over_context, and is dropped before batching so that both modes batch the same prompts
        ctx = model_context(getattr(self.model, "config", None))
        done: list[EvalOutput] = []
        if ctx is not None:
            done = [EvalOutput(r.key, "", n_tokens=0, finish_reason="over_context",
                               extra={"prompt_tokens": len(ids[r.key])})
                    for r, _ in rendered if len(ids[r.key]) >= ctx]
            rendered = [rp for rp in rendered if len(ids[rp[0].key]) < ctx]
        if not self.continuous:
            if done:
                yield done
            for start in range(0, len(rendered), self.batch_size):
                chunk = rendered[start:start + self.batch_size]
                outs = self.generate_texts([p for _, p in chunk], max_new_tokens=max_new_tokens)
                yield [
                    EvalOutput(r.key, text, n_tokens=len(new), finish_reason=fin,
                               extra={"prompt_tokens": len(ids[r.key])})
                    for (r, _), (new, text, fin) in zip(chunk, outs)
                ]
            return
        from cotdistill.evaluate.backends.continuous import greedy_continuous

        pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.eos_ids[0]
        for i, new, fin in greedy_continuous(self.model, [ids[r.key] for r, _ in rendered],
                                             max_new_tokens=max_new_tokens, eos_ids=self.eos_ids,
                                             batch_size=self.batch_size, pad_id=pad_id, context=ctx):
            r = rendered[i][0]
            done.append(EvalOutput(r.key, self.tok.decode(new, skip_special_tokens=True), n_tokens=len(new),
                                   finish_reason=fin, extra={"prompt_tokens": len(ids[r.key])}))
            if len(done) >= self.batch_size:
                yield done
                done = []
        if done:
            yield done

    def close(self) -> None:
        """Drop the model."""
        self.model = None
