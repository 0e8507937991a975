"""One OpenAI-compatible chat client for every stage: live teachers, evaluation and ``cotdistill serve``'s tests.

Built on the ``openai`` SDK's ``AsyncOpenAI`` (HTTP, JSON, timeouts, typed errors, ``extra_body``). What the SDK
does not do, and cotdistill needs, is added here:

* **Visible retries.** The SDK's own retry loop is switched off (``max_retries=0``) because it is silent: every
  failed attempt here is kept (``ChatReply.attempt_errors``, stored with the record), and malformed JSON or a reply
  without choices, which the SDK returns or raises as a success/parse error, is retried too. Retried: HTTP 408,
  409, 425, 429 and 5xx, timeouts, connection errors, malformed JSON, replies without choices; waits honour
  ``retry-after-ms`` / ``Retry-After`` (seconds or an HTTP date, capped), else exponential backoff with equal
  jitter. HTTP 401/403 stops the whole run with a :class:`CotdistillError` (every request would fail the same
  way); other 4xx fail the request at once.
* **Bounded, lazy concurrency over replicas.** ``max_concurrency`` requests in flight per endpoint; requests are
  taken from the caller's iterable only when a slot frees (flat memory), and each attempt goes to the endpoint
  with the fewest requests in flight (``base_urls``: several vLLM servers of one model), ties in turn. An endpoint
  whose last attempt failed (connection error, timeout, 5xx) rests for a while (1, 2, 4 … 30 s) unless every
  endpoint rests, so a dead replica does not eat the retries.
* **Reasoning traces.** A reasoning parser's ``reasoning_content`` (vLLM, SGLang, llama.cpp, DeepSeek) or
  ``reasoning`` field, and ``<think>…</think>`` blocks left in ``content``, come back apart from the answer text
  (:func:`split_reasoning`).
* ``content: null`` is an empty answer ``""`` (a well-formed reply, e.g. a reasoning model that spent its whole
  budget thinking: ``finish_reason`` says ``length``), never retried: a retry with the same seed returns the same.

The SDK is asynchronous; callers are synchronous generators, so each client runs its own event loop in a daemon
thread and hands results back through a queue as they finish (any order). The API key is held only by the SDK
client (from the environment variable the config names); it is never logged or written.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import queue
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cotdistill.errors import CotdistillError

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}  # and any other 5xx
FATAL_STATUS = {401, 403}  # every request would fail the same way: stop the run with a clear message

_THINK_BLOCK = re.compile(r"^\s*(?:<think>)?(.*?)</think>\s*", re.DOTALL | re.IGNORECASE)


@dataclass
class ChatRequest:
    """One chat completion: ``key`` (echoed in the reply), the ``messages`` and the sampling ``params``
    (``temperature``, ``top_p``, ``max_tokens``, ``seed``, ... as in the OpenAI API)."""

    key: str
    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChatReply:
    """The outcome of one request: ``text`` (the answer, reasoning removed) or ``error`` (one line).

    ``reasoning`` is the model's separate chain of thought (None when the server returned none), ``usage`` the
    server's token counts, ``attempt_errors`` one line per failed attempt before the outcome, ``endpoint`` the
    base URL that answered.
    """

    key: str
    text: str | None = None
    reasoning: str | None = None
    error: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    attempt_errors: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    endpoint: str | None = None

    @property
    def ok(self) -> bool:
        """True when the request produced an answer (possibly empty)."""
        return self.error is None and self.text is not None


class _Retryable(Exception):
    def __init__(self, msg: str, retry_after: float | None = None):
        super().__init__(msg)
        self.retry_after = retry_after


class _Failed(Exception):
    """Not retryable: this request fails, the others go on."""


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI's finer header wins) or ``Retry-After`` (seconds or an
    HTTP date); None when absent or unreadable. ``headers`` is any mapping with ``.get``."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:  # an HTTP date
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def split_reasoning(content: str | None, reasoning: str | None = None) -> tuple[str, str | None]:
    """``(answer text, reasoning)`` of a reply.

    ``reasoning`` is the server's separate field (a reasoning parser's output). A ``<think>…</think>`` block at the
    start of ``content`` (a server without a reasoning parser; also when the chat template opened ``<think>`` in
    the prompt, so only ``</think>`` appears) is moved into the reasoning too; an unclosed ``<think>`` (the budget
    ran out while thinking) makes all of ``content`` reasoning. Blank reasoning becomes None.
    """
    text = content or ""
    parts = [reasoning.strip()] if isinstance(reasoning, str) and reasoning.strip() else []
    m = _THINK_BLOCK.match(text)
    if m:
        parts.append(m.group(1).strip())
        text = text[m.end():]
    elif text.lstrip().lower().startswith("<think>"):
        parts.append(text.lstrip()[len("<think>"):].strip())
        text = ""
    joined = "\n\n".join(p for p in parts if p)
    return text, (joined or None)


def merge_reasoning(text: str | None, reasoning: str | None) -> str:
    """One text: the reasoning, a blank line, then the answer text (either may be missing)."""
    return "\n\n".join(p.strip() for p in (reasoning, text) if p and p.strip())


def _message_text(content: Any) -> str | None:
    """``message.content`` as text: a string, null (→ ""), or a list of text parts (joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") if isinstance(p, dict) else getattr(p, "text", None) for p in content]
        if all(isinstance(p, str) for p in parts):
            return "".join(parts)
    return None


class _Endpoint:
    def __init__(self, url: str):
        self.url = url
        self.in_flight = 0
        self.failures = 0  # consecutive failed attempts
        self.rest_until = 0.0  # monotonic time before which a failing endpoint is passed over
        self.client: Any = None  # the AsyncOpenAI client, built in the event loop's thread


class ChatClient:
    """Chat completions against one or more OpenAI-compatible endpoints serving ``model``.

    Args:
        model: the served model name sent with every request.
        base_urls: one URL (``http://HOST:PORT/v1``) or several replicas of the same model.
        api_key: the key itself (read from the environment by the caller), or None for local servers.
        max_concurrency: requests in flight per endpoint.
        timeout_s: per-attempt timeout.
        max_retries: retries after the first attempt (see the module docstring for what is retried).
        backoff_base_s, backoff_max_s: exponential backoff bounds (without ``Retry-After``).
        retry_after_max_s: cap on a server's ``Retry-After``.
        extra_body: extra JSON fields sent with every request (``top_k``, ``chat_template_kwargs``, ...).
        who: how error messages name this client (``teacher gpt-oss``, ``eval model m``).
        stop_event: set by the caller (Ctrl-C, a consumer that stopped) to stop sending new requests.
    """

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
        who: str | None = None,
        stop_event: threading.Event | None = None,
    ):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls or not all(isinstance(u, str) and u.strip() for u in urls):
            raise CotdistillError("base_url: an OpenAI-compatible endpoint is needed (e.g. http://127.0.0.1:8000/v1)")
        self.model = model
        self.endpoints = [_Endpoint(u.strip().rstrip("/")) for u in urls]
        self.api_key = api_key
        self.max_concurrency = max(1, int(max_concurrency))
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.retry_after_max_s = float(retry_after_max_s)
        self.extra_body = dict(extra_body or {})
        self.who = who or f"model {model}"
        self.stop_event = stop_event or threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._turn = 0  # round-robin among equally loaded endpoints

    @property
    def base_urls(self) -> list[str]:
        """The endpoints' URLs (no credentials are ever part of them here)."""
        return [e.url for e in self.endpoints]

    # ------------------------------------------------------------------ the event loop thread

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=loop.run_forever, name="openai-client", daemon=True)
            self._thread.start()
            self._loop = loop
        return self._loop

    def _sdk_client(self, ep: _Endpoint):
        if ep.client is None:
            import openai

            # "EMPTY": local servers ignore the key; never let the SDK fall back to OPENAI_API_KEY silently
            ep.client = openai.AsyncOpenAI(base_url=ep.url, api_key=self.api_key or "EMPTY", max_retries=0,
                                           timeout=self.timeout_s)
        return ep.client

    def close(self) -> None:
        """Close the HTTP clients and stop the event loop thread."""
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def _close() -> None:
            for ep in self.endpoints:
                if ep.client is not None:
                    await ep.client.close()
                    ep.client = None

        try:
            asyncio.run_coroutine_threadsafe(_close(), loop).result(timeout=10)
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ one request

    def _pick(self) -> _Endpoint:
        """The endpoint with the fewest requests in flight among those not resting; ties are taken in turn."""
        n = len(self.endpoints)
        self._turn = (self._turn + 1) % n
        order = self.endpoints[self._turn:] + self.endpoints[: self._turn]
        now = time.monotonic()
        return min(order, key=lambda e: (e.rest_until > now, e.in_flight))

    @staticmethod
    def _health(ep: _Endpoint, failed: bool) -> None:
        if failed:
            ep.failures += 1
            ep.rest_until = time.monotonic() + min(30.0, 2.0 ** (ep.failures - 1))
        else:
            ep.failures, ep.rest_until = 0, 0.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before retry ``attempt + 1``: the server's ``Retry-After`` (capped) if it sent one, else
        equal-jitter exponential backoff (never zero, never above ``backoff_max_s``)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max_s) + random.uniform(0, 0.1)
        cap = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        return random.uniform(cap / 2, cap)

    async def _attempt(self, ep: _Endpoint, req: ChatRequest) -> ChatReply:
        import openai

        body = {k: v for k, v in req.params.items() if v is not None}
        try:
            raw = await self._sdk_client(ep).chat.completions.with_raw_response.create(
                model=self.model, messages=req.messages, extra_body=self.extra_body or None, **body)
            completion = raw.parse()
        except openai.APITimeoutError:
            raise _Retryable(f"timeout after {self.timeout_s:g}s") from None
        except openai.APIConnectionError as e:
            raise _Retryable(f"connection error: {type(e.__cause__ or e).__name__}: {e.__cause__ or e}") from None
        except openai.APIStatusError as e:
            code = e.status_code
            if code in FATAL_STATUS:
                raise CotdistillError(
                    f"{self.who} at {ep.url}: HTTP {code} (authentication refused; check api_key_env and the key "
                    "it names)") from None
            text = e.response.text[:200] if e.response is not None else str(e)[:200]
            if code in RETRYABLE_STATUS or code >= 500:
                raise _Retryable(f"HTTP {code}: {text!r}",
                                 parse_retry_after(e.response.headers if e.response is not None else None)) from None
            raise _Failed(f"HTTP {code}: {text!r}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, openai.APIResponseValidationError) as e:
            raise _Retryable(f"malformed JSON reply: {str(e)[:120]!r}") from None
        except openai.OpenAIError as e:  # any other SDK failure: visible, and retried like a transport error
            raise _Retryable(f"{type(e).__name__}: {str(e)[:160]}") from None
        choices = getattr(completion, "choices", None)
        message = getattr(choices[0], "message", None) if isinstance(choices, list) and choices else None
        if message is None:
            raise _Retryable(f"reply without choices[0].message: {str(completion)[:120]!r}")
        content = _message_text(getattr(message, "content", None))
        if content is None:
            raise _Retryable(f"reply content is not text: {str(message.content)[:120]!r}")
        extra = getattr(message, "model_extra", None) or {}
        field_reasoning = extra.get("reasoning_content") or extra.get("reasoning")
        text, reasoning = split_reasoning(content, field_reasoning if isinstance(field_reasoning, str) else None)
        usage = completion.usage.model_dump(exclude_none=True) if getattr(completion, "usage", None) else {}
        return ChatReply(req.key, text=text, reasoning=reasoning, usage=usage,
                         finish_reason=getattr(choices[0], "finish_reason", None), endpoint=ep.url)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when the stop event is set."""
        end = time.monotonic() + seconds
        while not self.stop_event.is_set() and (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, 0.05))

    async def _one(self, req: ChatRequest) -> ChatReply:
        t0 = time.monotonic()
        errors: list[str] = []
        for attempt in range(self.max_retries + 1):
            if self.stop_event.is_set():
                return ChatReply(req.key, error="cancelled", attempts=attempt, attempt_errors=errors,
                                 latency_s=time.monotonic() - t0)
            ep = self._pick()
            ep.in_flight += 1
            try:
                reply = await self._attempt(ep, req)
                self._health(ep, failed=False)
            except _Retryable as e:
                self._health(ep, failed=True)
                errors.append(str(e))
                log.debug("%s at %s: attempt %d: %s", self.who, ep.url, attempt + 1, e)
                retry_after = e.retry_after
                reply = None
            except _Failed as e:
                errors.append(str(e))
                break
            finally:
                ep.in_flight -= 1
            if reply is not None:
                reply.attempts, reply.attempt_errors = attempt + 1, errors
                reply.latency_s = time.monotonic() - t0
                return reply
            if attempt < self.max_retries:
                await self._sleep(self.delay(attempt, retry_after))
        return ChatReply(req.key, error=f"{errors[-1]} (after {len(errors)} attempt(s))", attempts=len(errors),
                         attempt_errors=errors, latency_s=time.monotonic() - t0)

    # ------------------------------------------------------------------ many

    def complete(self, request: ChatRequest) -> ChatReply:
        """One request (with retries), synchronously."""
        return next(self.run([request]))

    def run(self, requests: Iterable[ChatRequest]) -> Iterator[ChatReply]:
        """Send ``requests`` with at most ``max_concurrency`` per endpoint in flight; yield each reply as it
        finishes (any order). Requests are taken from the iterable only when a slot frees. A consumer that stops
        early (or an HTTP 401/403, re-raised here) sets :attr:`stop_event` and cancels what is in flight."""
        loop = self._ensure_loop()
        it = iter(requests)
        out: queue.SimpleQueue = queue.SimpleQueue()
        done = object()
        n_workers = self.max_concurrency * len(self.endpoints)
        if hasattr(requests, "__len__"):
            n_workers = min(n_workers, len(requests))  # type: ignore[arg-type]

        async def worker() -> None:
            while not self.stop_event.is_set():
                req = next(it, None)  # no await in between: one worker at a time takes from the iterator
                if req is None:
                    return
                out.put(await self._one(req))

        async def main() -> None:
            try:
                tasks = [asyncio.ensure_future(worker()) for _ in range(max(0, n_workers))]
                try:
                    await asyncio.gather(*tasks)
                except BaseException:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                    raise
            except asyncio.CancelledError:
                pass
            except BaseException as e:  # noqa: BLE001 - a fatal (auth) error: re-raised by the consumer
                out.put(e)
            finally:
                out.put(done)

        future = asyncio.run_coroutine_threadsafe(main(), loop)
        finished = False
        try:
            while True:
                x = out.get()
                if x is done:
                    finished = True
                    return
                if isinstance(x, BaseException):
                    raise x
                yield x
        finally:
            if not finished:  # the consumer stopped early or a fatal error: in-flight requests are cancelled
                self.stop_event.set()
                future.cancel()
