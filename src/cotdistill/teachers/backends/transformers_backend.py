"""A local teacher run with transformers ``generate`` (batched sampling on CPU or GPU).

The model comes from :func:`cotdistill.models.load_model_and_tokenizer` (HF id, local folder,
.gguf or alias). Prompts are rendered with the tokenizer's chat template, padded on the left, sorted by
length and generated ``batch_size`` at a time with the teacher's temperature / top_p. Each batch is
seeded from the teacher seed and the batch's request keys, so a given batch is reproducible; a resumed
run may batch differently and so sample different (equally valid) text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from cotdistill.teachers.backends.base import GenRequest, GenResult, TeacherBackend
from cotdistill.utils.io import stable_hash


class TransformersBackend(TeacherBackend):
    """Batched local generation with transformers."""

    name = "transformers"

    def __init__(self, model: str, *, batch_size: int = 8, dtype: str = "auto"):
        super().__init__()
        self.model_spec = model
        self.batch_size = batch_size
        self.dtype = dtype
        self._model = None
        self._tok = None
        self._prov: dict[str, Any] = {}

    @classmethod
    def from_config(cls, teacher: Any, *, where: str = "config") -> TransformersBackend:
        """Build from a ``TeacherConfig`` (the model loads lazily on first use)."""
        return cls(teacher.model, batch_size=teacher.batch_size, dtype=teacher.dtype)

    def _load(self) -> None:
        if self._model is not None:
            return
        from cotdistill.models import load_model_and_tokenizer

        self._model, self._tok, self._prov = load_model_and_tokenizer(self.model_spec, dtype=self.dtype)
        self._model.eval()
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token

    def provenance(self) -> dict[str, Any]:
        """Backend kind and the loaded model's provenance (sha, chat template sha, dtype)."""
        return {"backend": self.name, **{k: v for k, v in self._prov.items() if k != "resolved_path"}}

    def close(self) -> None:
        """Drop the model."""
        self._model = None
        self._tok = None

    def _render(self, messages: list[dict[str, Any]]) -> str:
        tok = self._tok
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def generate(self, requests: list[GenRequest]) -> Iterator[GenResult]:
        """Generate in length-sorted batches of ``batch_size``; requests in one batch share sampling params
        of the first request (the synthesis loop sends one teacher's requests, which all share them)."""
        import torch

        from cotdistill.models import end_token_ids, generate_batch

        if not requests:
            return
        self._load()
        tok, model = self._tok, self._model
        prompts = [(r, self._render(r.messages)) for r in requests]
        lengths = {r.key: len(tok(p, add_special_tokens=False)["input_ids"]) for r, p in prompts}
        prompts.sort(key=lambda rp: (lengths[rp[0].key], rp[0].key))
        eos_ids = end_token_ids(model, tok)
        for start in range(0, len(prompts), self.batch_size):
            if self.stop_event.is_set():
                return
            chunk = prompts[start : start + self.batch_size]
            first = chunk[0][0]
            t0 = time.monotonic()
            try:
                seed = int(stable_hash([first.seed, [r.key for r, _ in chunk]]), 16) % (2**31)
                torch.manual_seed(seed)
                gens = generate_batch(
                    model, tok, [p for _, p in chunk], max_new_tokens=first.max_new_tokens,
                    eos_ids=eos_ids, temperature=first.temperature, top_p=first.top_p,
                )
            except Exception as e:  # e.g. CUDA OOM: record the whole batch as failed, keep going
                for r, _ in chunk:
                    yield GenResult(r.key, error=f"{type(e).__name__}: {e}".splitlines()[0][:300])
                continue
            dt = time.monotonic() - t0
            for (r, _), g in zip(chunk, gens):
                text, finish, n = g.text, g.finish_reason, len(g.ids)
                yield GenResult(
                    r.key, text=text, finish_reason=finish, latency_s=dt,
                    usage={"prompt_tokens": lengths[r.key], "completion_tokens": n, "batch_seed": seed},
                )
