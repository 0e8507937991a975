"""vLLM's offline engine (``vllm.LLM``), for large synthesis jobs with tensor parallelism.

vLLM is an optional dependency (``pip install cotdistill[vllm]``); without it this backend raises a
one-line :class:`CotdistillError` naming the teacher entry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.teachers.backends.base import GenRequest, GenResult, TeacherBackend


class VLLMBackend(TeacherBackend):
    """Offline batched generation with ``vllm.LLM.chat`` (per-request seeds, so results are reproducible)."""

    name = "vllm"

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, dtype: str = "auto", batch_size: int = 256,
                 where: str = "config"):
        super().__init__()
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise CotdistillError(
                f"{where}: backend: vllm is not installed (pip install 'cotdistill[vllm]'), "
                "or use backend: openai against a vLLM server, or backend: transformers"
            ) from None
        self.model_spec = model
        self.tensor_parallel_size = tensor_parallel_size
        self.dtype = dtype
        self.batch_size = batch_size
        self._llm = None

    @classmethod
    def from_config(cls, teacher: Any, *, where: str = "config") -> VLLMBackend:
        """Build from a ``TeacherConfig``."""
        return cls(teacher.model, tensor_parallel_size=teacher.tensor_parallel_size, dtype=teacher.dtype,
                   batch_size=max(teacher.batch_size, 64), where=where)

    def provenance(self) -> dict[str, Any]:
        """Backend kind, model and vLLM version."""
        import vllm

        return {"backend": self.name, "model": self.model_spec, "vllm_version": vllm.__version__,
                "tensor_parallel_size": self.tensor_parallel_size}

    def generate(self, requests: list[GenRequest]) -> Iterator[GenResult]:
        """Submit requests in chunks of ``batch_size`` to the engine; yield results per chunk."""
        from vllm import LLM, SamplingParams

        if self._llm is None:
            path = self.model_spec
            if path.endswith(".gguf") or path == "smollm2-135m-instruct":
                from cotdistill.models import resolve_model_path

                path = str(resolve_model_path(path))
            self._llm = LLM(model=path, tensor_parallel_size=self.tensor_parallel_size, dtype=self.dtype)
        for start in range(0, len(requests), self.batch_size):
            if self.stop_event.is_set():
                return
            chunk = requests[start : start + self.batch_size]
            params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                                     seed=r.seed) for r in chunk]
            t0 = time.monotonic()
            try:
                outs = self._llm.chat([r.messages for r in chunk], params, use_tqdm=False)
            except Exception as e:
                for r in chunk:
                    yield GenResult(r.key, error=f"{type(e).__name__}: {e}".splitlines()[0][:300])
                continue
            dt = time.monotonic() - t0
            for r, o in zip(chunk, outs):
                c = o.outputs[0]
                yield GenResult(r.key, text=c.text, finish_reason=c.finish_reason, latency_s=dt,
                                usage={"prompt_tokens": len(o.prompt_token_ids or []),
                                       "completion_tokens": len(c.token_ids)})
