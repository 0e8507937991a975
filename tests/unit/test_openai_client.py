"""The shared OpenAI-compatible client against real local HTTP servers: reasoning traces, content null, auth and
bad-request handling, extra_body, and least-in-flight spreading over replicas."""

from __future__ import annotations

import threading
import time

import pytest

from cotdistill.errors import CotdistillError
from cotdistill.utils.openai_client import ChatClient, ChatRequest, merge_reasoning, split_reasoning
from cotdistill.utils.openai_server import start_server

MSG = [{"role": "user", "content": "What is 2 + 3?"}]


def test_split_reasoning_hand_cases():
    assert split_reasoning("The answer is: 5") == ("The answer is: 5", None)
    assert split_reasoning("<think>2 plus 3</think>\nThe answer is: 5") == ("The answer is: 5", "2 plus 3")
    # the chat template opened <think> in the prompt (DeepSeek-R1 distills): only the closing tag is generated
    assert split_reasoning("2 plus 3 is 5.\n</think>\n\nThe answer is: 5") == ("The answer is: 5", "2 plus 3 is 5.")
    # the budget ran out while thinking: everything is reasoning
    assert split_reasoning("<think>2 plus 3 is") == ("", "2 plus 3 is")
    # the server's reasoning field comes first, a leftover block after it
    assert split_reasoning("<think>b</think>c", "a") == ("c", "a\n\nb")
    assert split_reasoning(None, "  ") == ("", None) and split_reasoning(None, "r") == ("", "r")
    assert merge_reasoning("The answer is: 5", "2 + 3 = 5") == "2 + 3 = 5\n\nThe answer is: 5"
    assert merge_reasoning("x", None) == "x"


def test_reasoning_content_comes_back_apart_and_content_null_is_empty():
    def respond(messages, params):
        q = messages[-1]["content"]
        if q == "field":
            return {"text": "The answer is: 5", "reasoning": "2 + 3 = 5"}
        if q == "tags":
            return "<think>3 + 2 = 5</think>The answer is: 5"
        return "<think>still thinking about 2 + 3"  # truncated trace: content null under the parser

    with start_server(respond, reasoning_parser=True) as srv, ChatClient("m", srv.url) as client:
        got = {r.key: r for r in client.run([ChatRequest(k, [{"role": "user", "content": k}])
                                             for k in ("field", "tags", "cut")])}
        bodies = {r["body"]["messages"][-1]["content"]: r for r in srv.requests}
    assert (got["field"].text, got["field"].reasoning) == ("The answer is: 5", "2 + 3 = 5")
    assert (got["tags"].text, got["tags"].reasoning) == ("The answer is: 5", "3 + 2 = 5")
    assert (got["cut"].text, got["cut"].reasoning, got["cut"].ok) == ("", "still thinking about 2 + 3", True)
    assert all(r.attempts == 1 and not r.attempt_errors for r in got.values())  # content null is not retried
    assert len(bodies) == 3


def test_content_null_is_an_empty_answer_for_teachers_and_eval(tmp_path):
    """One rule for both stages (they used to disagree: retried by teachers, accepted by eval)."""
    from cotdistill.evaluate.backends import EvalRequest
    from cotdistill.evaluate.backends.openai_backend import OpenAIEvalBackend
    from cotdistill.teachers.backends import GenRequest
    from cotdistill.teachers.backends.openai_backend import OpenAITeacherBackend

    with start_server(lambda m, p: {"text": "", "reasoning": "no time left", "finish_reason": "length"}) as srv:
        t = OpenAITeacherBackend("m", srv.url, max_retries=2)
        e = OpenAIEvalBackend("m", base_url=srv.url, max_retries=2)
        try:
            [g] = list(t.generate([GenRequest("k", MSG)]))
            [[o]] = list(e.generate([EvalRequest("k", MSG)], max_new_tokens=8))
        finally:
            t.close()
            e.close()
        assert len(srv.requests) == 2
    assert (g.ok, g.text, g.reasoning, g.finish_reason, g.attempts) == (True, "", "no time left", "length", 1)
    assert (o.error, o.text, o.finish_reason, o.extra["reasoning"]) == (None, "", "length", "no time left")


def test_refused_key_stops_the_run_and_bad_request_is_not_retried():
    from cotdistill.evaluate.backends import EvalRequest
    from cotdistill.evaluate.backends.openai_backend import OpenAIEvalBackend

    with start_server(lambda m, p: "ok", faults=["401"]) as srv, ChatClient("m", srv.url, who="teacher t") as c:
        with pytest.raises(CotdistillError, match=r"teacher t at http://127.0.0.1:\d+/v1: HTTP 401 \(authentication"):
            list(c.run([ChatRequest(f"k{i}", MSG) for i in range(5)]))
        assert c.stop_event.is_set() and len(srv.requests) <= 5
    with start_server(lambda m, p: "ok", faults=["401"]) as srv:
        e = OpenAIEvalBackend("m", base_url=srv.url, max_concurrency=1)
        with pytest.raises(CotdistillError, match="HTTP 401"):
            list(e.generate([EvalRequest("k", MSG)], max_new_tokens=8))
        e.close()
    with start_server(lambda m, p: "ok", faults=["400"]) as srv, ChatClient("m", srv.url, max_retries=3) as c:
        [r] = list(c.run([ChatRequest("k", MSG)]))
        assert not r.ok and r.error.startswith("HTTP 400") and r.attempts == 1 and len(srv.requests) == 1


def test_extra_body_reaches_the_server_and_the_record_key(tmp_path):
    from cotdistill.config import Config
    from cotdistill.teachers.synthesize import plan

    (tmp_path / "q.jsonl").write_text('{"id": "q0", "question": "Tom has 1 apple. How many?", "answer": "1"}\n')

    def config(**extra):
        return Config.model_validate({
            "data": {"question_pool": [f"jsonl:{tmp_path / 'q.jsonl'}"], "perspectives": [], "standard_path": "plain"},
            "curate": {"eval_guard": []},
            "teachers": [{"name": "t", "model": "m", "base_url": "http://127.0.0.1:9/v1", **extra}]})

    plain, extra = plan(config())[0], plan(config(extra_body={"top_k": 20}))[0]
    assert "extra_body" not in plain.record["gen_params"]  # keys of configs without it are unchanged
    assert extra.record["gen_params"]["extra_body"] == {"top_k": 20} and extra.request.key != plain.request.key
    with start_server(lambda m, p: "ok") as srv, ChatClient("m", srv.url, extra_body={"top_k": 20}) as c:
        c.complete(ChatRequest("k", MSG, {"temperature": 0.5}))
        body = srv.requests[0]["body"]
    assert body["top_k"] == 20 and body["temperature"] == 0.5 and body["model"] == "m"


def test_replicas_least_in_flight_first():
    """Two replicas, one four times slower: each stays within its concurrency, the fast one takes more."""
    lock = threading.Lock()
    now = {"fast": 0, "slow": 0}
    peak = {"fast": 0, "slow": 0}
    served = {"fast": 0, "slow": 0}

    def replica(name, delay):
        def respond(messages, params):
            with lock:
                now[name] += 1
                served[name] += 1
                peak[name] = max(peak[name], now[name])
            time.sleep(delay)
            with lock:
                now[name] -= 1
            return f"{name}: {messages[-1]['content']}"

        return respond

    with start_server(replica("fast", 0.02)) as a, start_server(replica("slow", 0.08)) as b:
        with ChatClient("m", [a.url, b.url], max_concurrency=2) as c:
            replies = list(c.run([ChatRequest(str(i), [{"role": "user", "content": str(i)}]) for i in range(40)]))
    assert sorted(int(r.key) for r in replies) == list(range(40))
    assert all(r.text.endswith(f": {r.key}") and r.endpoint in (a.url, b.url) for r in replies)
    assert peak["fast"] <= 2 and peak["slow"] <= 2 and served["fast"] + served["slow"] == 40
    assert served["fast"] > served["slow"] >= 1


def test_a_dead_replica_rests_while_the_live_one_answers():
    with start_server(lambda m, p: "alive") as live:
        dead = "http://127.0.0.1:9/v1"  # nothing listens on port 9 (discard): connection refused at once
        with ChatClient("m", [dead, live.url], max_concurrency=1, max_retries=2, backoff_base_s=0.01) as c:
            replies = list(c.run([ChatRequest(str(i), MSG) for i in range(10)]))
    assert all(r.ok and r.text == "alive" for r in replies)
    assert sum(len(r.attempt_errors) for r in replies) <= 2  # the dead one is tried, then passed over
