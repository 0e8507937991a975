"""Any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, hosted APIs) over httpx.

Bounded concurrency (``max_concurrency`` worker threads, each taking its next request lazily the moment a reply
is in, so memory stays flat and no slot idles), and our own retry loop so every failure is visible: exponential
backoff with jitter on 429, 5xx, timeouts, connection errors and malformed or empty replies, honouring ``Retry-After``.
The API key is read from the environment variable named by ``api_key_env`` at start-up and kept only
in the HTTP client's headers; it is never written anywhere.
"""

from __future__ import annotations

import email.utils
import json
import os
import queue
import random
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from cotdistill.errors import CotdistillError
from cotdistill.teachers.backends.base import GenRequest, GenResult, TeacherBackend

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUS = {401, 403}  # every request would fail the same way: stop the run with a clear message


class _Retryable(Exception):
    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # HTTP date
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


_PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _tls_verify(base_url: str) -> ssl.SSLContext | bool:
    """httpx's ``verify`` for ``base_url``: the default CA bundle, except for a plain-http endpoint.

    A plain-http endpoint without a proxy (a local vLLM or llama.cpp server) never negotiates TLS (we do not
    follow redirects), so loading the CA bundle (~25 ms per run) is skipped: the context still verifies and
    has no CA, so any TLS peer would be refused, never trusted.
    """
    if base_url.lower().startswith("http://") and not any(os.environ.get(k) for k in _PROXY_ENV):
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    return True


class OpenAICompatBackend(TeacherBackend):
    """Chat completions against ``base_url`` with bounded concurrency and visible retries."""

    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 120.0,
    ):
        super().__init__()
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = float(os.environ.get("COTDISTILL_BACKOFF_BASE_S", backoff_base_s))
        self.backoff_max_s = backoff_max_s
        self.retry_after_max_s = retry_after_max_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            headers=headers,
            verify=_tls_verify(self.base_url),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    @classmethod
    def from_config(cls, teacher: Any, *, where: str = "config") -> OpenAICompatBackend:
        """Build from a ``TeacherConfig``; the API key comes from ``os.environ[teacher.api_key_env]``."""
        if not teacher.base_url:
            raise CotdistillError(f"{where}: base_url: the openai backend needs a base_url (e.g. http://127.0.0.1:8000/v1)")
        key = None
        if teacher.api_key_env:
            key = os.environ.get(teacher.api_key_env)
            if not key:
                raise CotdistillError(
                    f"{where}: api_key_env: environment variable {teacher.api_key_env} is not set or empty"
                )
        return cls(
            teacher.model, teacher.base_url, api_key=key, max_concurrency=teacher.max_concurrency,
            timeout_s=teacher.timeout_s, max_retries=teacher.max_retries,
        )

    def provenance(self) -> dict[str, Any]:
        """Backend kind, endpoint and model (no key)."""
        return {"backend": self.name, "base_url": self.base_url, "model": self.model}

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    # ------------------------------------------------------------------ one request

    def _payload(self, req: GenRequest) -> dict[str, Any]:
        p: dict[str, Any] = {
            "model": self.model, "messages": req.messages, "temperature": req.temperature,
            "top_p": req.top_p, "max_tokens": req.max_new_tokens,
        }
        if req.seed is not None:
            p["seed"] = req.seed
        return p

    def _attempt(self, req: GenRequest) -> tuple[str, dict[str, Any], str | None]:
        try:
            resp = self._client.post(f"{self.base_url}/chat/completions", json=self._payload(req))
        except httpx.TimeoutException:
            raise _Retryable(f"timeout after {self.timeout_s:g}s") from None
        except httpx.TransportError as e:
            raise _Retryable(f"connection error: {type(e).__name__}: {e}") from None
        if resp.status_code in FATAL_STATUS:
            raise CotdistillError(
                f"teacher {self.model} at {self.base_url}: HTTP {resp.status_code} (authentication refused; "
                "check api_key_env and the key it names)"
            )
        if resp.status_code in RETRYABLE_STATUS or resp.status_code >= 500:
            ra = _parse_retry_after(resp.headers.get("retry-after"))
            ms = resp.headers.get("retry-after-ms")  # OpenAI's finer-grained header wins when present
            if ms:
                try:
                    ra = max(0.0, float(ms) / 1000.0)
                except ValueError:
                    pass
            raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:200]!r}", retry_after=ra)
        if resp.status_code >= 400:
            raise ValueError(f"HTTP {resp.status_code}: {resp.text[:300]!r}")  # not retryable
        try:
            body = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _Retryable(f"malformed JSON reply: {resp.text[:120]!r}") from None
        try:
            choice = body["choices"][0]
            text = choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise _Retryable(f"reply without choices[0].message.content: {str(body)[:120]!r}") from None
        if not isinstance(text, str):
            raise _Retryable(f"reply content is not text: {str(text)[:120]!r}")
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        return text, usage, choice.get("finish_reason")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s) + random.uniform(0, 0.1)
        cap = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return random.uniform(cap / 2, cap)  # "equal jitter": never zero, never above the cap

    def _run_one(self, req: GenRequest) -> GenResult:
        t0 = time.monotonic()
        errors: list[str] = []
        for attempt in range(self.max_retries + 1):
            if self.stop_event.is_set():
                return GenResult(req.key, error="cancelled", attempts=attempt, latency_s=time.monotonic() - t0,
                                 usage={"attempt_errors": errors})
            try:
                text, usage, finish = self._attempt(req)
                usage = dict(usage)
                if errors:
                    usage["attempt_errors"] = errors
                return GenResult(req.key, text=text, usage=usage, finish_reason=finish, attempts=attempt + 1,
                                 latency_s=time.monotonic() - t0)
            except _Retryable as e:
                errors.append(str(e))
                if attempt < self.max_retries:
                    self.stop_event.wait(self._delay(attempt, e.retry_after))
            except ValueError as e:
                errors.append(str(e))
                break
        return GenResult(req.key, error=f"{errors[-1]} (after {len(errors)} attempt(s))", attempts=len(errors),
                         latency_s=time.monotonic() - t0, usage={"attempt_errors": errors})

    # ------------------------------------------------------------------ many

    def generate(self, requests: list[GenRequest]) -> Iterator[GenResult]:
        """Run requests with at most ``max_concurrency`` in flight; yield results as they finish.

        Each of the ``max_concurrency`` worker threads takes its next request itself the moment its reply is
        in, so a concurrency slot never waits for this generator (or its consumer) to be scheduled; requests
        are taken lazily from the iterator, so memory stays flat.
        """
        it = iter(requests)
        take = threading.Lock()
        out: queue.SimpleQueue = queue.SimpleQueue()
        done = object()

        def work() -> None:
            try:
                while not self.stop_event.is_set():
                    with take:
                        req = next(it, None)
                    if req is None:
                        break
                    out.put(self._run_one(req))
            except BaseException as e:  # noqa: BLE001 - a fatal (auth) error: re-raised by the consumer
                out.put(e)
            finally:
                out.put(done)

        n = min(self.max_concurrency, len(requests)) if hasattr(requests, "__len__") else self.max_concurrency
        threads = [threading.Thread(target=work, daemon=True, name=f"teacher-{i}") for i in range(n)]
        for th in threads:
            th.start()
        running = len(threads)
        try:
            while running:
                x = out.get()
                if x is done:
                    running -= 1
                elif isinstance(x, BaseException):
                    raise x
                else:
                    yield x
        finally:
            if running:  # consumer stopped early or a fatal error: in-flight workers give up quickly
                self.stop_event.set()
