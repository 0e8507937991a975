"""The shared OpenAI client against a real third-party server: llama-cpp-python's OpenAI-compatible server
serving the SmolLM2 GGUF (synthesis, a thinking-block reply forced by a GBNF grammar sent through extra_body, and
evaluation). Slow: `make test-slow` builds llama-cpp-python[server] first (a few minutes of compiling).

llama-cpp-python's server has no reasoning parser (``reasoning_content`` comes from llama.cpp's C++ ``llama-server
--reasoning-format``), so the ``<think>`` block arrives inside ``content``, the case cotdistill splits itself; the
``reasoning_content`` field is exercised against the project's own server in the fast suite."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed (make test-slow builds it)")

from _synth_helpers import write_questions  # noqa: E402

from cotdistill.config import Config  # noqa: E402
from cotdistill.teachers.store import RationaleStore  # noqa: E402
from cotdistill.teachers.synthesize import synthesize  # noqa: E402
from cotdistill.utils.openai_client import ChatClient, ChatRequest  # noqa: E402

# a thinking block, then a short answer: what a reasoning model writes when no parser sits in the server
THINK_GRAMMAR = r'''
root ::= "<think>" thought "</think>" answer
thought ::= [a-zA-Z0-9 .,+=]{4,60}
answer ::= "The answer is: " [0-9]{1,3}
'''


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    from cotdistill.models import alias_path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(alias_path("smollm2-135m-instruct")),
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
           "--model_alias", "smollm2",
           # batch 1: a native build on a CPU that advertises AMX crashes (SIGSEGV/SIGILL) in batched prompt
           # matmuls when the VM has not enabled AMX tiles; one token at a time takes the vector path
           "--n_batch", "1", "--n_ubatch", "1"]
    log = tmp_path_factory.mktemp("llama") / "server.log"  # a file: llama.cpp logs ~250 kB, a pipe would stall it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not come up in 180 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_synthesis_against_llama_cpp(llama_server, tmp_path):
    q = write_questions(tmp_path / "q.jsonl", 2)
    cfg = Config.model_validate({
        "run": {"name": "llama", "output_dir": str(tmp_path / "runs")},
        "data": {"question_pool": [f"jsonl:{q}"], "perspectives": ["intuitive"], "standard_path": "plain"},
        "curate": {"eval_guard": []},
        "teachers": [{"name": "smol", "model": "smollm2", "base_url": llama_server, "max_new_tokens": 48,
                      "max_concurrency": 2}]})
    s = synthesize(cfg, cfg.run_dir(), progress=False)
    assert s["complete"] and s["done"] == 4 and s["failed"] == 0
    recs = list(RationaleStore(cfg.run_dir() / "rationales").iter_records())
    assert all(r["raw_response"].strip() and r["usage"]["completion_tokens"] > 0 for r in recs)
    assert all(r["finish_reason"] in ("stop", "length") for r in recs)
    again = synthesize(cfg, cfg.run_dir(), progress=False)  # resumable: nothing left to send
    assert (again["sent"], again["complete"]) == (0, True)


def test_thinking_reply_is_split_and_kept(llama_server, tmp_path):
    with ChatClient("smollm2", llama_server, extra_body={"grammar": THINK_GRAMMAR}, timeout_s=120) as client:
        reply = client.complete(ChatRequest("k", [{"role": "user", "content": "What is 2 + 3?"}],
                                            {"temperature": 0.0, "max_tokens": 96}))
    assert reply.ok, reply.error
    assert reply.reasoning and "<think>" not in reply.reasoning and "</think>" not in reply.text
    assert reply.text.startswith("The answer is: ")

    q = write_questions(tmp_path / "q.jsonl", 1)
    cfg = Config.model_validate({
        "run": {"name": "think", "output_dir": str(tmp_path / "runs")},
        "data": {"question_pool": [f"jsonl:{q}"], "perspectives": [], "standard_path": "plain"},
        "curate": {"eval_guard": []},
        "teachers": [{"name": "smol", "model": "smollm2", "base_url": llama_server, "max_new_tokens": 96,
                      "extra_body": {"grammar": THINK_GRAMMAR}}]})
    assert synthesize(cfg, cfg.run_dir(), progress=False)["complete"]
    [rec] = RationaleStore(cfg.run_dir() / "rationales").iter_records()
    assert rec["reasoning"] and rec["raw_response"].startswith("The answer is: ")
    assert rec["gen_params"]["extra_body"] == {"grammar": THINK_GRAMMAR}


def test_eval_backend_against_llama_cpp(llama_server, tmp_path):
    from cotdistill.evaluate import run_eval

    bench = tmp_path / "bench.jsonl"
    bench.write_text('{"id": "a", "question": "What is 2 + 3?", "answer": "5"}\n'
                     '{"id": "b", "question": "What is 10 - 4?", "answer": "6"}\n')
    b = f"jsonl:{bench}"
    res = run_eval("smollm2", [b], tmp_path / "eval", backend="openai", base_url=llama_server, batch_size=2,
                   max_new_tokens=32, progress=False)[b]
    assert res["complete"] and res["n"] == 2 and res["provenance"]["base_url"] == llama_server
