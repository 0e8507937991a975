"""OpenAI-compatible backend: chat completions against any ``base_url`` (vLLM, SGLang, llama.cpp
server, hosted APIs, or ``cotdistill serve``), with bounded concurrency and retries.

Retried: HTTP 408/409/429/5xx (honouring ``Retry-After`` / ``retry-after-ms``), timeouts, connection
errors, malformed JSON and replies without choices. Other 4xx fail at once. A request that still
fails after ``max_retries`` retries comes back as an :class:`EvalOutput` with ``error`` set; the runner
does not record it, so re-running the same command retries it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.evaluate.backends.base import EvalBackend, EvalOutput, EvalRequest

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


def _retry_after(headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds; HTTP dates are ignored)."""
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        v = headers.get(name)
        if v is not None:
            try:
                return max(0.0, float(v) * scale)
            except ValueError:
                continue
    return None


class OpenAIBackend(EvalBackend):
    """Greedy chat completions (temperature 0) over HTTP with ``max_concurrency`` requests in flight."""

    name = "openai"

    def __init__(self, model: str, *, base_url: str | None, api_key_env: str | None = None,
                 max_concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 5,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 30.0):
        if not base_url:
            raise CotdistillError("base_url: the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise CotdistillError(f"api_key_env: environment variable {api_key_env} is not set")
        else:
            key = "EMPTY"  # local servers ignore it; never fall back to a real key silently
        import httpx

        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = int(max_retries)
        self.backoff_base_s, self.backoff_max_s = backoff_base_s, backoff_max_s
        self.client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0)),
            headers={"Authorization": f"Bearer {key}"},
            limits=httpx.Limits(max_connections=self.max_concurrency),
        )

    def provenance(self) -> dict[str, Any]:
        """The served model name and endpoint; weights, template and dtype are the server's (unknown here)."""
        return {"model": self.model, "model_sha": None, "adapter": None, "adapter_sha": None,
                "chat_template_sha": None, "dtype": "server", "base_url": self.base_url}

    def _attempt(self, req: EvalRequest, max_new_tokens: int, seed: int) -> EvalOutput:
        import httpx

        payload = {"model": self.model, "messages": req.messages, "temperature": 0.0, "top_p": 1.0,
                   "max_tokens": max_new_tokens, "seed": seed, "n": 1}
        try:
            r = self.client.post(f"{self.base_url}/chat/completions", json=payload)
        except httpx.TimeoutException as e:
            raise _Retryable(f"timeout ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error ({type(e).__name__}: {e})") from None
        if r.status_code in _RETRY_STATUS:
            raise _Retryable(f"HTTP {r.status_code}", _retry_after(r.headers))
        if r.status_code >= 400:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        try:
            body = r.json()
            choice = body["choices"][0]
            text = choice["message"]["content"]
        except (ValueError, json.JSONDecodeError):
            raise _Retryable("malformed JSON reply") from None
        except (KeyError, IndexError, TypeError):
            raise _Retryable("reply without choices/message") from None
        usage = body.get("usage") or {}
        return EvalOutput(req.key, text or "", n_tokens=int(usage.get("completion_tokens") or 0),
                          finish_reason=choice.get("finish_reason") or "stop",
                          extra={"prompt_tokens": usage.get("prompt_tokens")})

    def _run_one(self, req: EvalRequest, max_new_tokens: int, seed: int) -> EvalOutput:
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                out = self._attempt(req, max_new_tokens, seed)
                out.extra["attempts"] = attempt + 1
                return out
            except _Retryable as e:
                last = str(e)
                if attempt == self.max_retries:
                    break
                delay = e.retry_after
                if delay is None:
                    delay = min(self.backoff_max_s, self.backoff_base_s * 2**attempt) * (0.5 + random.random() / 2)
                time.sleep(min(delay, self.backoff_max_s))
            except Exception as e:  # non-retryable (4xx, bad URL)
                return EvalOutput(req.key, "", finish_reason="error", error=f"{type(e).__name__}: {e}"[:300])
        return EvalOutput(req.key, "", finish_reason="error",
                          error=f"gave up after {self.max_retries + 1} attempts: {last}")

    def generate(self, requests: list[EvalRequest], *, max_new_tokens: int, seed: int = 0) -> Iterator[list[EvalOutput]]:
        """Send requests with at most ``max_concurrency`` in flight; yield each one as it finishes."""
        if not requests:
            return
        pool = ThreadPoolExecutor(max_workers=self.max_concurrency, thread_name_prefix="eval-openai")
        try:
            pending = {pool.submit(self._run_one, r, max_new_tokens, seed) for r in requests}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield [f.result() for f in done]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()
