"""vLLM offline-engine backend for large evaluation suites (optional extra: ``pip install 'cotdistill[vllm]'``).

The model spec is resolved like every other stage's (GGUF and aliases become the cached plain folder);
a LoRA adapter is applied per request with ``LoRARequest`` instead of merging.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.evaluate.backends.base import EvalBackend, EvalOutput, EvalRequest


def import_vllm():
    """The vllm module, or a one-line error saying how to install it."""
    try:
        import vllm
    except ImportError:
        raise CotdistillError(
            "backend: vllm is not installed; install cotdistill[vllm] (pip install 'cotdistill[vllm]') "
            "or use --backend hf / --backend openai"
        ) from None
    return vllm


class VLLMEvalBackend(EvalBackend):
    """Greedy ``vllm.LLM.chat`` in chunks of ``chunk_size`` prompts (vLLM batches internally)."""

    name = "vllm"

    def __init__(self, model: str, *, adapter: str | None = None, dtype: str = "auto",
                 tensor_parallel_size: int = 1, chunk_size: int = 256, max_lora_rank: int = 64):
        vllm = import_vllm()
        from cotdistill.models import describe_model

        self._prov = describe_model(model, adapter=adapter, device="cuda")
        self._prov["dtype"] = dtype  # vLLM resolves 'auto' itself (bf16 on most GPUs)
        self._prov["vllm_version"] = vllm.__version__
        path = self._prov.pop("resolved_path")
        self.chunk_size = chunk_size
        self._llm = vllm.LLM(model=str(path), dtype=dtype, tensor_parallel_size=tensor_parallel_size,
                             enable_lora=adapter is not None, max_lora_rank=max_lora_rank)
        self._lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest("adapter", 1, str(adapter))

    def provenance(self) -> dict[str, Any]:
        """Model, hashes, dtype and vLLM version."""
        return dict(self._prov)

    def generate(self, requests: list[EvalRequest], *, max_new_tokens: int, seed: int = 0) -> Iterator[list[EvalOutput]]:
        """Greedy chat completions, one chunk at a time."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, seed=seed)
        for start in range(0, len(requests), self.chunk_size):
            chunk = requests[start:start + self.chunk_size]
            outs = self._llm.chat([r.messages for r in chunk], params, use_tqdm=False, lora_request=self._lora)
            yield [
                EvalOutput(r.key, o.outputs[0].text, n_tokens=len(o.outputs[0].token_ids),
                           finish_reason=o.outputs[0].finish_reason or "stop",
                           extra={"prompt_tokens": len(o.prompt_token_ids or [])})
                for r, o in zip(chunk, outs)
            ]

    def close(self) -> None:
        """Drop the engine."""
        self._llm = None
