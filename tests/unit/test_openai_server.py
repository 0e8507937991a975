"""The local OpenAI-compatible server: endpoints, every injected fault, the official client, a served model."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch

from cotdistill.utils.openai_server import start_server

CHAT = {"model": "m", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 16}


def echo(messages, params):
    """Responder: echoes the last user turn and the max_tokens it was asked for."""
    return f"echo: {messages[-1]['content']} ({params.get('max_tokens')})"


def test_models_and_chat():
    with start_server(echo, model_name="tiny-teacher") as srv:
        assert srv.url.startswith("http://127.0.0.1:") and srv.url.endswith("/v1")
        models = httpx.get(f"{srv.url}/models").json()
        assert models["data"][0]["id"] == "tiny-teacher"
        r = httpx.post(f"{srv.url}/chat/completions", json=CHAT)
        assert r.status_code == 200
        body = r.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"] == {"role": "assistant", "content": "echo: What is 2 + 3? (16)"}
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
        assert srv.requests[-1]["body"]["max_tokens"] == 16


def test_completions_n_and_bad_requests():
    with start_server(echo) as srv:
        r = httpx.post(f"{srv.url}/completions", json={"model": "m", "prompt": "Once upon", "n": 2}).json()
        assert r["object"] == "text_completion" and [c["text"] for c in r["choices"]] == ["echo: Once upon (None)"] * 2
        assert httpx.post(f"{srv.url}/chat/completions", content=b"[1, 2").status_code == 400
        assert httpx.post(f"{srv.url}/chat/completions", json={"messages": []}).status_code == 400
        assert httpx.post(f"{srv.url}/chat/completions", json={**CHAT, "stream": True}).status_code == 400
        assert httpx.post(f"{srv.url}/embeddings", json={}).status_code == 404
    with pytest.raises(ValueError, match="unknown fault"):
        start_server(echo, faults=["ok", "418"])


def test_each_fault():
    faults = ["429", "500", "503", "garbage", "empty", "timeout", "ok"]
    with start_server(echo, faults=faults, retry_after=2, timeout_sleep_s=5) as srv:
        httpx.get(f"{srv.url}/models")  # does not consume a fault
        post = lambda: httpx.post(f"{srv.url}/chat/completions", json=CHAT, timeout=1.0)  # noqa: E731
        r = post()
        assert r.status_code == 429 and r.headers["retry-after"] == "2" and r.headers["retry-after-ms"] == "2000"
        assert r.json()["error"]["type"] == "rate_limit_error"
        assert post().status_code == 500
        assert post().status_code == 503
        r = post()
        assert r.status_code == 200
        with pytest.raises(ValueError):
            r.json()
        r = post()
        assert r.status_code == 200 and r.json()["choices"] == []
        t0 = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            post()
        assert time.monotonic() - t0 < 3
        assert post().json()["choices"][0]["message"]["content"].startswith("echo:")
        assert post().status_code == 200  # faults exhausted: ok from now on
        assert [r["fault"] for r in srv.requests] == faults + ["ok"]
    # stop() returned although a 'timeout' handler was still sleeping


def test_faults_from_iterator_and_official_client():
    import openai

    with start_server(echo, faults=iter(["429", "500"]), retry_after=0.01) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="EMPTY", max_retries=3)
        resp = client.chat.completions.create(model="m", messages=CHAT["messages"], max_tokens=5)
        assert resp.choices[0].message.content == "echo: What is 2 + 3? (5)"
        assert [r["fault"] for r in srv.requests] == ["429", "500", "ok"]


@pytest.fixture(scope="module")
def wild_model_dir(tiny_model_dir, tmp_path_factory):
    """Tiny model with large random weights: greedy outputs depend on the prompt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    out = tmp_path_factory.mktemp("wild_srv") / "model"
    m.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def test_served_model_batches_concurrent_requests(wild_model_dir):
    """Concurrent requests are batched (left padding) and answer exactly as one-at-a-time requests."""
    prompts = ["What is 2 + 3?", "Jack had 5 apples and ate 2. How many are left?", "yes", "Plan: add"]

    def ask(url, p, out, i):
        r = httpx.post(f"{url}/chat/completions", timeout=60,
                       json={"model": "w", "messages": [{"role": "user", "content": p}], "max_tokens": 8,
                             "temperature": 0})
        out[i] = r.json()["choices"][0]["message"]["content"]

    with start_server(str(wild_model_dir), dtype="float32", batch_size=1) as srv:
        single = [None] * 4
        for i, p in enumerate(prompts):
            ask(srv.url, p, single, i)
    with start_server(str(wild_model_dir), dtype="float32", batch_size=4) as srv:
        srv._state["responder"].batch_wait_s = 0.5  # make sure the four requests meet in one batch
        batched = [None] * 4
        threads = [threading.Thread(target=ask, args=(srv.url, p, batched, i)) for i, p in enumerate(prompts)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert batched == single and len(set(single)) == 4


def test_cli_serve(tiny_model_dir):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "cotdistill", "serve", str(tiny_model_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving") and "http://127.0.0.1:" in line, proc.stderr.read() if not line else line
        url = line.split(" at ")[1].split()[0]
        r = httpx.post(f"{url}/chat/completions", json=CHAT, timeout=60)
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 16
    finally:
        proc.terminate()
        proc.wait(timeout=30)
