"""Evaluation: bootstrap CI, left padding, stop at eos, resume, provenance refusal, openai backend, CLI errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cotdistill.errors import CotdistillError
from cotdistill.evaluate import accuracy_summary, bootstrap_ci, model_tag, run_eval

QUESTIONS = [
    ("q1", "What is 2 + 3?", "5"),
    ("q2", "Jack had 5 apples and ate 2. How many apples are left now?", "3"),
    ("q3", "A train travels 60 miles per hour for 3 hours. How far does it go?", "180"),
    ("q4", "yes", "7"),
    ("q5", "First, compute the total of 12 and 7, then subtract 4.", "15"),
]


def _env() -> dict:
    # one thread: on a shared 2-core box, tiny-model generate is ~20x faster without OpenMP contention
    return dict(os.environ, OMP_NUM_THREADS="1")


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotdistill", *map(str, args)], capture_output=True, text=True,
                          env=_env(), cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def wild_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with large random weights, so greedy outputs depend on the prompt (the plain tiny
    model repeats its last prompt token, which would make padding tests vacuous)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * 0.15)
    out = tmp_path_factory.mktemp("wild") / "model"
    m.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture()
def bench_file(tmp_path) -> Path:
    p = tmp_path / "bench.jsonl"
    p.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in QUESTIONS))
    return p


# --------------------------------------------------------------------------- scoring


def test_bootstrap_ci_hand_cases():
    assert bootstrap_ci([True] * 7) == (1.0, 1.0)
    assert bootstrap_ci([False] * 7) == (0.0, 0.0)
    assert bootstrap_ci([]) == (0.0, 0.0)
    # n = 1: every resample is the single value
    assert bootstrap_ci([True]) == (1.0, 1.0)


def test_bootstrap_ci_matches_manual_resampling():
    x = [True, False, True, True, False, True, False, True]
    rng = np.random.default_rng(3)
    means = np.array(x, float)[rng.integers(0, 8, size=(500, 8))].mean(1)
    assert bootstrap_ci(x, n_boot=500, seed=3) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    lo, hi = bootstrap_ci(x, seed=0)
    assert lo <= 5 / 8 <= hi and lo < hi
    assert bootstrap_ci(x, seed=0) == (lo, hi)  # seeded
    wide = bootstrap_ci([1, 0] * 5, seed=0)
    narrow = bootstrap_ci([1, 0] * 500, seed=0)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_accuracy_summary():
    s = accuracy_summary([True, False, True, True])
    assert (s["n"], s["correct"], s["accuracy"]) == (4, 3, 0.75)
    assert len(s["ci95"]) == 2


def test_model_tag():
    assert model_tag("smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert model_tag("Qwen/Qwen2.5-1.5B-Instruct") == "Qwen--Qwen2.5-1.5B-Instruct"
    assert model_tag("/x/y/SmolLM2.Q4_1.gguf") == "SmolLM2.Q4_1"
    assert model_tag("smollm2-135m-instruct", "/runs/a/student") == "smollm2-135m-instruct+student"


# --------------------------------------------------------------------------- hf backend


def test_left_padding_batched_equals_unbatched(wild_model_dir):
    from cotdistill.evaluate.backends.hf import HFBackend

    be = HFBackend(str(wild_model_dir), dtype="float32", batch_size=4)
    prompts = [be.render([{"role": "user", "content": q}]) for _, q, _ in QUESTIONS[:4]]
    lens = {len(be.tok(p, add_special_tokens=False)["input_ids"]) for p in prompts}
    assert len(lens) > 1  # the batch really needs padding
    batched = be.generate_texts(prompts, max_new_tokens=12)
    single = [be.generate_texts([p], max_new_tokens=12)[0] for p in prompts]
    assert [b[0] for b in batched] == [s[0] for s in single]
    assert len({b[1] for b in batched}) == 4  # outputs differ per prompt: the check is not vacuous
    # right padding (the bug this guards against) changes some outputs
    be.tok.padding_side = "right"
    enc = be.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = be.model.generate(**enc, max_new_tokens=12, do_sample=False, pad_token_id=be.tok.pad_token_id)
    right = out[:, enc["input_ids"].shape[1]:].tolist()
    assert right != [b[0] for b in batched]


def test_generate_sorted_batches_and_stop_at_eos(tiny_model_dir):
    from cotdistill.evaluate.backends import EvalRequest
    from cotdistill.evaluate.backends.hf import HFBackend

    be = HFBackend(str(tiny_model_dir), dtype="float32", batch_size=2)
    reqs = [EvalRequest(i, [{"role": "user", "content": q}]) for i, q, _ in QUESTIONS]
    chunks = list(be.generate(reqs, max_new_tokens=5))
    assert [len(c) for c in chunks] == [2, 2, 1]
    plens = [o.extra["prompt_tokens"] for c in chunks for o in c]
    assert plens == sorted(plens, reverse=True)  # longest first
    assert {o.key for c in chunks for o in c} == {r.key for r in reqs}
    assert all(o.finish_reason == "length" and o.n_tokens == 5 for c in chunks for o in c)
    # the plain tiny model always continues with "\n": make that token an end token -> stops at once
    nl = be.tok("\n", add_special_tokens=False)["input_ids"][0]
    be.eos_ids = sorted({*be.eos_ids, nl})
    (ids, text, finish), = be.generate_texts([be.render(reqs[0].messages)], max_new_tokens=5)
    assert (ids, text, finish) == ([], "", "stop")


# --------------------------------------------------------------------------- run_eval: files, resume, refusal


def _lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def test_cli_eval_end_to_end_and_resume(tiny_model_dir, bench_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = ["eval", "--model", tiny_model_dir, "--benchmarks", f"jsonl:{bench_file}", "--limit", 3,
            "--batch-size", 2, "--max-new-tokens", 6, "--output", out]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and "bench" in r.stdout
    jsonl = out / "jsonl-bench.jsonl"
    first = _lines(jsonl)
    assert [x["id"] for x in sorted(first, key=lambda x: x["id"])] == ["q1", "q2", "q3"]
    for rec in first:
        assert {"id", "prompt", "output", "extracted", "gold", "correct"} <= set(rec)
        assert rec["prompt"].startswith(dict((i, q) for i, q, _ in QUESTIONS)[rec["id"]])
        assert "The answer is" in rec["prompt"]
    summ = json.loads((out / "jsonl-bench.summary.json").read_text())
    assert summ["n"] == 3 and summ["correct"] == 0 and summ["accuracy"] == 0.0 and len(summ["ci95"]) == 2
    prov = summ["provenance"]
    for k in ("model", "model_sha", "adapter", "chat_template_sha", "backend", "dtype", "batch_size", "seed",
              "max_new_tokens", "extractor_version", "cotdistill_version"):
        assert k in prov
    assert prov["batch_size"] == 2 and prov["max_new_tokens"] == 6 and prov["backend"] == "hf"
    allsum = json.loads((out / "summary.json").read_text())
    assert allsum["last_run"]["generated"] == 3
    assert f"jsonl:{bench_file}" in allsum["benchmarks"]

    # the rest in-process (CLI start-up costs ~20 s on the shared box); count model loads and generate calls
    import cotdistill.evaluate.backends as backends

    calls = {"load": 0, "generated": 0}
    real_make = backends.make_eval_backend

    def counting_make(*a, **k):
        calls["load"] += 1
        be = real_make(*a, **k)
        real_gen = be.generate

        def gen(reqs, **kw):
            calls["generated"] += len(reqs)
            yield from real_gen(reqs, **kw)

        be.generate = gen
        return be

    monkeypatch.setattr(backends, "make_eval_backend", counting_make)
    kw = dict(batch_size=2, max_new_tokens=6, progress=False)
    b = f"jsonl:{bench_file}"

    # same settings again: nothing regenerated (the model is not even loaded), files untouched
    before = jsonl.read_bytes()
    res = run_eval(str(tiny_model_dir), [b], out, limit=3, **kw)
    assert calls == {"load": 0, "generated": 0} and res[b]["n"] == 3
    assert jsonl.read_bytes() == before
    assert json.loads((out / "summary.json").read_text())["last_run"]["generated"] == 0

    # larger limit: only the 2 new questions are generated, the old lines are kept as they were
    res = run_eval(str(tiny_model_dir), [b], out, limit=5, **kw)
    assert calls == {"load": 1, "generated": 2} and res[b]["n"] == 5
    assert jsonl.read_bytes().startswith(before)
    assert len(_lines(jsonl)) == 5

    # different settings into the same folder: refused before any model load, nothing written
    with pytest.raises(CotdistillError) as e:
        run_eval(str(tiny_model_dir), [b], out, limit=5, **{**kw, "max_new_tokens": 7})
    assert "max_new_tokens" in str(e.value) and "--output" in str(e.value) and "\n" not in str(e.value)
    assert calls["load"] == 1 and len(_lines(jsonl)) == 5


def test_resume_after_torn_tail(tiny_model_dir, bench_file, tmp_path):
    kw = dict(limit=2, batch_size=2, max_new_tokens=4, progress=False)
    run_eval(str(tiny_model_dir), [f"jsonl:{bench_file}"], tmp_path, **kw)
    jsonl = tmp_path / "jsonl-bench.jsonl"
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # crash in the middle of a write
    res = run_eval(str(tiny_model_dir), [f"jsonl:{bench_file}"], tmp_path, **kw)
    assert res[f"jsonl:{bench_file}"]["n"] == 2
    assert len(_lines(jsonl)) == 2 and jsonl.read_text().endswith("\n")


def test_rescore_with_new_extractor(tiny_model_dir, bench_file, tmp_path):
    b = f"jsonl:{bench_file}"
    run_eval(str(tiny_model_dir), [b], tmp_path, limit=2, max_new_tokens=3, progress=False)
    jsonl = tmp_path / "jsonl-bench.jsonl"
    recs = _lines(jsonl)
    gold = {i: a for i, _, a in QUESTIONS}
    for r in recs:  # pretend an old extractor wrote these; the outputs are kept and re-scored
        r["output"] = f"so the total is {gold[r['id']]}.\nThe answer is: {gold[r['id']]}"
        r["extractor_version"] = "old"
        r["correct"] = False
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = run_eval(str(tiny_model_dir), [b], tmp_path, limit=2, max_new_tokens=3, progress=False)
    assert res[b]["accuracy"] == 1.0
    assert all(r["correct"] and r["extractor_version"] != "old" for r in _lines(jsonl))


@pytest.mark.parametrize("args, needle", [
    (["--benchmarks", "nosuch_bench"], "nosuch_bench"),
    (["--model", "/no/such/model"], "/no/such/model"),
    (["--backend", "tpu"], "--backend"),
    (["--backend", "openai"], "base-url"),
    (["--backend", "vllm"], "vllm"),
])
def test_cli_bad_inputs_one_line_exit_2(tiny_model_dir, bench_file, tmp_path, args, needle):
    base = {"--model": str(tiny_model_dir), "--benchmarks": f"jsonl:{bench_file}", "--output": str(tmp_path / "o")}
    base.update(dict(zip(args[::2], args[1::2])))
    if base.get("--backend") == "vllm" and importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed: the 'not installed' error cannot occur")
    r = _cli("eval", *[x for kv in base.items() for x in kv])
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err
    assert not (tmp_path / "o" / "summary.json").exists()


# --------------------------------------------------------------------------- openai backend over real HTTP


def _oracle(messages, params):
    """A 'teacher' that knows the answers of QUESTIONS."""
    user = messages[-1]["content"]
    for _, q, a in QUESTIONS:
        if user.startswith(q):
            return f"Let me think. The answer is: {a}"
    return "I do not know."


def test_openai_backend_with_faults(bench_file, tmp_path):
    from cotdistill.evaluate.backends.openai_backend import OpenAIEvalBackend as OpenAIBackend
    from cotdistill.utils.openai_server import start_server

    faults = ["429", "500", "garbage", "503", "empty", "timeout"]
    with start_server(_oracle, faults=faults, retry_after=0.05, timeout_sleep_s=3) as srv:
        be = OpenAIBackend("local", base_url=srv.url, max_concurrency=2, timeout_s=0.5, max_retries=6,
                           backoff_base_s=0.01)
        b = f"jsonl:{bench_file}"
        res = run_eval("local", [b], tmp_path, backend="openai", base_url=srv.url, backend_obj=be,
                       batch_size=2, max_new_tokens=32, progress=False)[b]
        assert res["n"] == 5 and res["accuracy"] == 1.0
        assert len(srv.requests) == 5 + len(faults)  # every fault cost exactly one retry
        assert all(r["body"]["temperature"] == 0.0 and r["body"]["max_tokens"] == 32 for r in srv.requests)
        assert res["provenance"]["backend"] == "openai" and res["provenance"]["model"] == "local"


def test_openai_backend_gives_up_then_resume_retries_only_failed(bench_file, tmp_path):
    from cotdistill.evaluate.backends.openai_backend import OpenAIEvalBackend as OpenAIBackend
    from cotdistill.utils.openai_server import start_server

    b = f"jsonl:{bench_file}"
    # concurrency 1 makes the fault order deterministic: q1's two attempts both fail
    with start_server(_oracle, faults=["500", "500"]) as srv:
        be = OpenAIBackend("local", base_url=srv.url, max_concurrency=1, max_retries=1, backoff_base_s=0.01)
        with pytest.raises(CotdistillError, match="1 request.*failed.*re-run"):
            run_eval("local", [b], tmp_path, backend="openai", base_url=srv.url, backend_obj=be,
                     batch_size=1, progress=False)
        summ = json.loads((tmp_path / "jsonl-bench.summary.json").read_text())
        assert summ["complete"] is False and summ["missing"] == 1 and summ["n"] == 4
    with start_server(_oracle) as srv:
        be = OpenAIBackend("local", base_url=srv.url, max_concurrency=1, max_retries=0)
        res = run_eval("local", [b], tmp_path, backend="openai", base_url=srv.url, backend_obj=be,
                       batch_size=1, progress=False)[b]
        assert len(srv.requests) == 1  # only the failed question is sent again
        assert res["complete"] and res["accuracy"] == 1.0


def test_openai_backend_matches_hf_on_served_model(wild_model_dir, bench_file, tmp_path):
    """The served model (cotdistill serve's engine) answers exactly like the in-process hf backend."""
    from cotdistill.evaluate.backends import EvalRequest
    from cotdistill.evaluate.backends.hf import HFBackend
    from cotdistill.evaluate.backends.openai_backend import OpenAIEvalBackend as OpenAIBackend
    from cotdistill.utils.openai_server import start_server

    reqs = [EvalRequest(i, [{"role": "user", "content": q}]) for i, q, _ in QUESTIONS[:3]]
    hf = {o.key: o.text for c in HFBackend(str(wild_model_dir), dtype="float32", batch_size=1)
          .generate(reqs, max_new_tokens=8) for o in c}
    with start_server(str(wild_model_dir), dtype="float32", batch_size=1) as srv:
        be = OpenAIBackend("wild", base_url=srv.url, max_concurrency=3)
        served = {o.key: o.text for c in be.generate(reqs, max_new_tokens=8) for o in c}
    assert served == hf and len(set(hf.values())) == 3


def test_sbs_student_is_evaluated_with_its_task_prefix(tiny_model_dir, bench_file, tmp_path):
    """Regression: SbS students were evaluated without a task prefix and answered neither task
    ("The answer is: 10" for all 300 SVAMP questions of the CPU comparison)."""
    from cotdistill.config import Config
    from cotdistill.evaluate.runner import bench_file_stem, recorded_user_prefix
    from cotdistill.utils.io import read_jsonl
    from cotdistill.methods.registry import student_user_prefix
    from cotdistill.pipeline import build_plan

    sbs = Config.model_validate({"method": "sbs", "data": {"imports": [{"format": "mcc-kd"}]}})
    assert student_user_prefix(sbs) == "explain: "
    assert student_user_prefix(sbs.model_copy(update={"sbs": sbs.sbs.model_copy(update={"eval_task": "label"})})) \
        == "predict: "
    assert student_user_prefix(sbs.model_copy(update={"method": "std_cot"})) == ""
    stage = {s.name: s for s in build_plan(sbs, tmp_path / "run")}
    assert stage["eval_student"].inputs["user_prefix"] == "explain: "  # a changed prefix re-runs the evaluation
    assert "user_prefix" not in stage["eval_base"].inputs

    b = f"jsonl:{bench_file}"
    run_eval(str(tiny_model_dir), [b], tmp_path / "p", limit=2, max_new_tokens=2, progress=False,
             user_prefix="explain: ")
    rows = read_jsonl(tmp_path / "p" / f"{bench_file_stem(b)}.jsonl")
    assert rows and all(r["prompt"].startswith("explain: ") for r in rows)
    assert json.loads((tmp_path / "p" / f"{bench_file_stem(b)}.provenance.json").read_text())["user_prefix"] == "explain: "
    with pytest.raises(CotdistillError):  # same folder, different prompt: refused, not mixed
        run_eval(str(tiny_model_dir), [b], tmp_path / "p", limit=2, max_new_tokens=2, progress=False)

    student = tmp_path / "student"
    student.mkdir()
    assert recorded_user_prefix(student) == ""
    (student / "cotdistill_train.json").write_text(json.dumps({"eval_user_prefix": "explain: "}))
    assert recorded_user_prefix(student) == "explain: "


def test_vllm_provenance_names_the_installed_version(tiny_model_dir, monkeypatch):
    """Regression: describe_backend('vllm') read ``vllm.__version__`` where ``vllm`` is the package's own backends.vllm
    submodule (AttributeError on every vLLM resume check). vLLM cannot run on this CPU machine, so a module holding only ``__version__`` stands
    in for the import; describe_backend loads no engine."""
    import sys
    import types

    from cotdistill.evaluate.backends import describe_backend

    fake = types.ModuleType("vllm")
    fake.__version__ = "0.0.test"
    monkeypatch.setitem(sys.modules, "vllm", fake)
    prov = describe_backend("vllm", str(tiny_model_dir), dtype="bfloat16")
    assert prov["vllm_version"] == "0.0.test" and prov["dtype"] == "bfloat16" and "resolved_path" not in prov
