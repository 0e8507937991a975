"""A small real OpenAI-compatible HTTP server (stdlib ``ThreadingHTTPServer``), with fault injection.

Used to serve a local model as a live teacher offline (``cotdistill serve MODEL``) and, in tests, to
exercise clients against real HTTP with injected faults.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (no streaming).

``responder`` is either

* a model spec (HF id | folder | .gguf | alias): served with transformers ``generate``; concurrent
  requests with the same generation settings are batched together (left padding); or
* a callable ``(messages, params) -> str`` (or a dict ``{"text", "reasoning", "finish_reason", "prompt_tokens",
  "completion_tokens"}``), where ``messages`` is the chat list and ``params`` the request body
  (``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``n``, ``model``, ...). For ``/v1/completions``
  ``messages`` is one user turn holding the prompt and ``params["raw_prompt"]`` is true.

``faults`` is a list or iterator of fault names, consumed one per completion request (``/v1/models`` does
not consume one); once exhausted every request is ``ok``:

==========  ==================================================================================
``ok``      a normal reply
``429``     HTTP 429 with ``Retry-After`` (seconds) and ``retry-after-ms`` headers (``retry_after``)
``500``     HTTP 500 with an OpenAI-style error body
``503``     HTTP 503 with an OpenAI-style error body
``timeout`` sleeps ``timeout_sleep_s`` before answering (set it past the client's timeout)
``garbage`` HTTP 200 with a body that is not JSON
``empty``   HTTP 200, valid JSON with an empty ``choices`` list
``400``     HTTP 400 (a request the server refuses; not worth retrying)
``401``     HTTP 401 (the API key was refused)
==========  ==================================================================================

Reasoning: a responder's ``reasoning`` is returned as ``message.reasoning_content``, as vLLM, SGLang and llama.cpp
do with a reasoning parser. With ``reasoning_parser=True`` the server acts as such a parser itself: a leading
``<think>…</think>`` block of the generated text moves from ``content`` to ``reasoning_content`` (and a reply that
is all thinking has ``content: null``).

Only bind 127.0.0.1 in tests (the default).
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cotdistill.errors import CotdistillError

FAULTS = ("ok", "429", "500", "503", "timeout", "garbage", "empty", "400", "401")


class LocalModelResponder:
    """Serve a local model: requests are queued and a worker thread batches compatible ones.

    Greedy when ``temperature`` is 0 (or absent and ``default_temperature`` is 0); otherwise samples
    with ``temperature``/``top_p`` (seeded with the first request's ``seed`` of the batch).
    """

    def __init__(self, spec: str, *, adapter: str | None = None, dtype: str = "auto", batch_size: int = 8,
                 batch_wait_s: float = 0.02, default_max_tokens: int = 512):
        from cotdistill.models import end_token_ids, load_model_and_tokenizer

        self.model, self.tok, self.provenance = load_model_and_tokenizer(spec, dtype=dtype, adapter=adapter)
        self.name = str(spec)
        self.batch_size, self.batch_wait_s, self.default_max_tokens = batch_size, batch_wait_s, default_max_tokens
        self.eos_ids = end_token_ids(self.model, self.tok)
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._loop, name="openai-server-generate", daemon=True)
        self._worker.start()

    def _render(self, messages: list[dict], params: dict) -> str:
        if params.get("raw_prompt") or not getattr(self.tok, "chat_template", None):
            return "\n\n".join(str(m.get("content", "")) for m in messages)
        return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @staticmethod
    def _group_key(params: dict) -> tuple:
        return (int(params.get("max_tokens") or 0), float(params.get("temperature") or 0.0),
                float(params.get("top_p") or 1.0))

    def __call__(self, messages: list[dict], params: dict) -> dict:
        """Queue one request and wait for its completion."""
        fut: Future = Future()
        self._q.put((self._render(messages, params), params, fut))
        return fut.result()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            items = [first]
            deadline = time.monotonic() + self.batch_wait_s
            while len(items) < self.batch_size:
                try:
                    items.append(self._q.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            groups: dict[tuple, list] = {}
            for it in items:
                groups.setdefault(self._group_key(it[1]), []).append(it)
            for key, group in groups.items():
                try:
                    results = self._generate([g[0] for g in group], group[0][1])
                    for (_, _, fut), res in zip(group, results):
                        fut.set_result(res)
                except Exception as e:  # surface as HTTP 500 for every request of the batch
                    for _, _, fut in group:
                        fut.set_exception(e)

    def _generate(self, prompts: list[str], params: dict) -> list[dict]:
        """One left-padded batched ``generate``; input ``(B, L)``, output ``(B, L + T)``."""
        import torch

        from cotdistill.models import generate_batch

        temp = float(params.get("temperature") or 0.0)
        if temp > 0 and params.get("seed") is not None:
            torch.manual_seed(int(params["seed"]))
        gens = generate_batch(
            self.model, self.tok, prompts, max_new_tokens=int(params.get("max_tokens") or self.default_max_tokens),
            eos_ids=self.eos_ids, temperature=temp, top_p=float(params.get("top_p") or 1.0),
        )
        return [{"text": g.text, "finish_reason": g.finish_reason, "prompt_tokens": g.prompt_tokens,
                 "completion_tokens": len(g.ids)} for g in gens]

    def close(self) -> None:
        """Stop the worker thread."""
        self._stop.set()


class ServerHandle:
    """A running server: ``url`` (``http://HOST:PORT/v1``), ``requests`` (bodies received), ``stop()``."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread, state: dict):
        self._server, self._thread, self._state = server, thread, state
        self.host, self.port = server.server_address[:2]
        self.url = f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[dict]:
        """Every completion request received so far: ``{"path", "body", "fault"}``."""
        return list(self._state["log"])

    def stop(self) -> None:
        """Stop serving, wake sleeping ``timeout`` faults and release the port."""
        self._state["stop"].set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        closer = getattr(self._state["responder"], "close", None)
        if self._state["owned"] and closer:
            closer()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _make_handler(state: dict) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "cotdistill-openai/1"

        def log_message(self, fmt, *args):  # keep test and CLI output clean
            pass

        def _send(self, code: int, body: bytes, headers: dict | None = None, ctype: str = "application/json"):
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. after a timeout fault)

        def _json(self, code: int, obj: Any, headers: dict | None = None):
            self._send(code, json.dumps(obj).encode(), headers)

        def _error(self, code: int, msg: str, etype: str, headers: dict | None = None):
            self._json(code, {"error": {"message": msg, "type": etype, "code": code}}, headers)

        def do_GET(self):
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._json(200, {"object": "list", "data": [
                    {"id": state["model_name"], "object": "model", "created": 0, "owned_by": "cotdistill"}]})
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self):
            path = self.path.rstrip("/")
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            if path not in ("/v1/chat/completions", "/v1/completions", "/chat/completions", "/completions"):
                self._error(404, f"no route {self.path}", "not_found")
                return
            try:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError
            except ValueError:
                self._error(400, "request body is not a JSON object", "invalid_request_error")
                return
            with state["lock"]:
                fault = next(state["faults"], "ok")
                state["log"].append({"path": path, "body": body, "fault": fault})
            if fault == "429":
                ra = state["retry_after"]
                self._error(429, "rate limited (injected)", "rate_limit_error",
                            {"Retry-After": str(max(0, round(ra))), "retry-after-ms": str(int(ra * 1000))})
                return
            if fault == "400":
                self._error(400, "bad request (injected)", "invalid_request_error")
                return
            if fault == "401":
                self._error(401, "invalid API key (injected)", "authentication_error")
                return
            if fault in ("500", "503"):
                self._error(int(fault), f"server error {fault} (injected)", "server_error")
                return
            if fault == "timeout":
                state["stop"].wait(state["timeout_sleep_s"])
            if fault == "garbage":
                self._send(200, b'{"id": "x", "choices": [ {not json', ctype="application/json")
                return
            chat = path.endswith("chat/completions")
            if chat:
                messages = body.get("messages")
                if not isinstance(messages, list) or not messages:
                    self._error(400, "messages: must be a non-empty list", "invalid_request_error")
                    return
                params = dict(body)
            else:
                prompt = body.get("prompt")
                if isinstance(prompt, list):
                    prompt = prompt[0] if prompt else None
                if not isinstance(prompt, str):
                    self._error(400, "prompt: must be a string", "invalid_request_error")
                    return
                messages = [{"role": "user", "content": prompt}]
                params = dict(body, raw_prompt=True)
            if body.get("stream"):
                self._error(400, "stream: streaming is not supported by this server", "invalid_request_error")
                return
            choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
            if fault != "empty":
                try:
                    for i in range(max(1, int(body.get("n") or 1))):
                        res = state["responder"](messages, params)
                        if not isinstance(res, dict):
                            res = {"text": str(res)}
                        text, reasoning = res.get("text", ""), res.get("reasoning")
                        if state["reasoning_parser"] and chat:
                            from cotdistill.utils.openai_client import split_reasoning

                            text, parsed = split_reasoning(text)
                            reasoning = "\n\n".join(x for x in (reasoning, parsed) if x) or None
                        usage["prompt_tokens"] = int(res.get("prompt_tokens") or
                                                     sum(len(str(m.get("content", "")).split()) for m in messages))
                        n_words = len(f"{reasoning or ''} {text}".split())
                        usage["completion_tokens"] += int(res.get("completion_tokens") or n_words)
                        finish = res.get("finish_reason", "stop")
                        message: dict[str, Any] = {"role": "assistant", "content": text}
                        if reasoning is not None:
                            message["reasoning_content"] = reasoning
                            message["content"] = text or None  # parsers send null when nothing follows the trace
                        choices.append({"index": i, "message": message, "finish_reason": finish} if chat else
                                       {"index": i, "text": text, "finish_reason": finish, "logprobs": None})
                except Exception as e:
                    self._error(500, f"responder failed: {type(e).__name__}: {e}", "server_error")
                    return
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            self._json(200, {
                "id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": body.get("model") or state["model_name"],
                "choices": choices, "usage": usage,
            })

    return Handler


def start_server(
    responder: str | Callable[[list[dict], dict], Any],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    faults: Iterable[str] | None = None,
    retry_after: float = 1.0,
    timeout_sleep_s: float = 30.0,
    model_name: str | None = None,
    adapter: str | None = None,
    dtype: str = "auto",
    batch_size: int = 8,
    reasoning_parser: bool = False,
) -> ServerHandle:
    """Start an OpenAI-compatible server in a background thread; returns its handle (``.url``, ``.stop()``).

    Args:
        responder: a local model spec, or a callable ``(messages, params) -> str | dict`` (module docstring).
        host, port: bind address; port 0 picks a free port.
        faults: fault names consumed one per completion request (see module docstring).
        retry_after: seconds announced by the ``429`` fault.
        timeout_sleep_s: how long the ``timeout`` fault stalls (stop() wakes it).
        model_name: id listed by ``/v1/models`` (default: the spec, or ``"local"`` for callables).
        adapter, dtype, batch_size: for model-spec responders (LoRA adapter, dtype, max batch).
        reasoning_parser: split a leading ``<think>`` block into ``reasoning_content`` (module docstring).
    """
    if isinstance(faults, (list, tuple)):  # iterators are checked lazily (unknown names act as ok)
        bad = [f for f in faults if str(f) not in FAULTS]
        if bad:
            raise ValueError(f"faults: unknown fault {bad[0]!r} (one of {', '.join(FAULTS)})")
    state: dict[str, Any] = {
        "faults": iter(str(f) for f in (faults if faults is not None else ())),
        "lock": threading.Lock(), "log": [], "stop": threading.Event(),
        "retry_after": float(retry_after), "timeout_sleep_s": float(timeout_sleep_s),
        "reasoning_parser": bool(reasoning_parser),
    }
    # bind before loading a model: a port in use is a one-line error in a second, not after a long load
    try:
        server = ThreadingHTTPServer((host, port), _make_handler(state))
    except OSError as e:
        raise CotdistillError(f"{host}:{port}: cannot listen ({e.strerror or e}); choose another --port") from None
    owned = isinstance(responder, str)
    try:
        if owned:
            responder = LocalModelResponder(responder, adapter=adapter, dtype=dtype, batch_size=batch_size)
    except BaseException:
        server.server_close()
        raise
    state.update(responder=responder, owned=owned,
                 model_name=model_name or (responder.name if owned else "local"))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="openai-server", daemon=True)
    thread.start()
    return ServerHandle(server, thread, state)
