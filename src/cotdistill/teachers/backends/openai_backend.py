"""A teacher behind any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, hosted APIs).

A thin adapter over the shared :class:`cotdistill.utils.openai_client.ChatClient` (bounded concurrency, visible
retries, Retry-After, replicas, reasoning traces). The API key is read from the environment variable named by
``api_key_env`` at start-up and handed to the SDK client only; it is never written anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.teachers.backends.base import GenRequest, GenResult, TeacherBackend
from cotdistill.utils.openai_client import ChatClient, ChatReply, ChatRequest


class OpenAITeacherBackend(TeacherBackend):
    """Chat completions against ``base_urls`` (one or several replicas of ``model``)."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_urls: str | list[str],
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 120.0,
        extra_body: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.model = model
        self.client = ChatClient(
            model, base_urls, api_key=api_key, max_concurrency=max_concurrency, timeout_s=timeout_s,
            max_retries=max_retries, backoff_max_s=backoff_max_s, retry_after_max_s=retry_after_max_s,
            # the environment override lets fault-injection tests run in seconds
            backoff_base_s=float(os.environ.get("COTDISTILL_BACKOFF_BASE_S", backoff_base_s)),
            extra_body=extra_body, who=f"teacher {model}", stop_event=self.stop_event,
        )

    @classmethod
    def from_config(cls, teacher: Any, *, where: str = "config") -> OpenAITeacherBackend:
        """Build from a ``TeacherConfig``; the API key comes from ``os.environ[teacher.api_key_env]``."""
        urls = list(teacher.base_urls or ([teacher.base_url] if teacher.base_url else []))
        if not urls:
            raise CotdistillError(f"{where}: base_url: the openai backend needs a base_url (e.g. http://127.0.0.1:8000/v1)")
        key = None
        if teacher.api_key_env:
            key = os.environ.get(teacher.api_key_env)
            if not key:
                raise CotdistillError(
                    f"{where}: api_key_env: environment variable {teacher.api_key_env} is not set or empty"
                )
        return cls(
            teacher.model, urls, api_key=key, max_concurrency=teacher.max_concurrency,
            timeout_s=teacher.timeout_s, max_retries=teacher.max_retries, extra_body=teacher.extra_body,
        )

    @property
    def base_url(self) -> str:
        """The first endpoint."""
        return self.client.base_urls[0]

    def provenance(self) -> dict[str, Any]:
        """Backend kind, endpoint(s) and model (no key)."""
        prov: dict[str, Any] = {"backend": self.name, "base_url": self.base_url, "model": self.model}
        if len(self.client.base_urls) > 1:
            prov["base_urls"] = self.client.base_urls
        if self.client.extra_body:
            prov["extra_body"] = self.client.extra_body
        return prov

    def close(self) -> None:
        """Close the HTTP clients."""
        self.client.close()

    def _result(self, r: ChatReply) -> GenResult:
        usage = dict(r.usage)
        if r.attempt_errors:
            usage["attempt_errors"] = r.attempt_errors
        if r.endpoint is not None and len(self.client.base_urls) > 1:
            usage["endpoint"] = r.endpoint
        return GenResult(r.key, text=r.text if r.ok else None, reasoning=r.reasoning, error=r.error, usage=usage,
                         finish_reason=r.finish_reason, attempts=r.attempts, latency_s=r.latency_s)

    def generate(self, requests: list[GenRequest]) -> Iterator[GenResult]:
        """Run requests with at most ``max_concurrency`` per endpoint in flight; yield results as they finish."""
        chat = [ChatRequest(r.key, r.messages, {"temperature": r.temperature, "top_p": r.top_p,
                                                "max_tokens": r.max_new_tokens, "seed": r.seed}) for r in requests]
        for reply in self.client.run(chat):
            yield self._result(reply)
