"""OpenAI-compatible evaluation backend: greedy chat completions against any ``base_url`` (vLLM, SGLang,
llama.cpp server, hosted APIs, or ``cotdistill serve``) through the shared
:class:`cotdistill.utils.openai_client.ChatClient` (bounded concurrency, visible retries, Retry-After).

A request that still fails after ``max_retries`` retries comes back as an :class:`EvalOutput` with ``error`` set;
the runner does not record it, so re-running the same command retries it. HTTP 401/403 stops the evaluation.
A reasoning model's separate trace is kept in ``EvalOutput.extra["reasoning"]``; the answer is scored on the
answer text alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.evaluate.backends.base import EvalBackend, EvalOutput, EvalRequest
from cotdistill.utils.openai_client import ChatClient, ChatReply, ChatRequest


class OpenAIEvalBackend(EvalBackend):
    """Greedy chat completions (temperature 0) over HTTP with ``max_concurrency`` requests in flight."""

    name = "openai"

    def __init__(self, model: str, *, base_url: str | None, api_key_env: str | None = None,
                 max_concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 5,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 30.0, extra_body: dict[str, Any] | None = None):
        if not base_url:
            raise CotdistillError("base_url: the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise CotdistillError(f"api_key_env: environment variable {api_key_env} is not set")
        self.model = model
        self.client = ChatClient(model, base_url, api_key=key, max_concurrency=max_concurrency, timeout_s=timeout_s,
                                 max_retries=max_retries, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
                                 retry_after_max_s=backoff_max_s, extra_body=extra_body, who=f"eval model {model}")
        self.base_url = self.client.base_urls[0]

    def provenance(self) -> dict[str, Any]:
        """The served model name and endpoint; weights, template and dtype are the server's (unknown here)."""
        return {"model": self.model, "model_sha": None, "adapter": None, "adapter_sha": None,
                "chat_template_sha": None, "dtype": "server", "base_url": self.base_url}

    @staticmethod
    def _output(r: ChatReply) -> EvalOutput:
        if not r.ok:
            return EvalOutput(r.key, "", finish_reason="error", error=r.error)
        extra: dict[str, Any] = {"prompt_tokens": r.usage.get("prompt_tokens"), "attempts": r.attempts}
        if r.reasoning:
            extra["reasoning"] = r.reasoning
        return EvalOutput(r.key, r.text or "", n_tokens=int(r.usage.get("completion_tokens") or 0),
                          finish_reason=r.finish_reason or "stop", extra=extra)

    def generate(self, requests: list[EvalRequest], *, max_new_tokens: int, seed: int = 0) -> Iterator[list[EvalOutput]]:
        """Send requests with at most ``max_concurrency`` in flight; yield each one as it finishes."""
        params = {"temperature": 0.0, "top_p": 1.0, "max_tokens": max_new_tokens, "seed": seed, "n": 1}
        for reply in self.client.run([ChatRequest(r.key, r.messages, params) for r in requests]):
            yield [self._output(reply)]

    def close(self) -> None:
        """Close the HTTP clients."""
        self.client.close()
