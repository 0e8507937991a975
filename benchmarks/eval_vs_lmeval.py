"""Evaluation throughput and per-sample agreement: ``cotdistill.evaluate.run_eval`` vs lm-evaluation-harness.

    python benchmarks/eval_vs_lmeval.py --limit 200 --max-new-tokens 256 --batch-size 16 --rounds 3
    python benchmarks/eval_vs_lmeval.py --adapter /tmp/bench-student/student ...   # a distilled student
    python benchmarks/eval_vs_lmeval.py --model tiny --limit 8 --max-new-tokens 16 --rounds 1   # script check

Same weights (the base SmolLM2-135M-Instruct folder ``resolve_model_path`` converts the GGUF into, or, with
``--adapter``, that model with the LoRA adapter merged in bf16 and saved once before the rounds, so that both
tools load identical merged weights), same dtype (what cotdistill's ``dtype=auto`` picks on this machine), same
first ``N`` GSM8K test questions from the local file, same user prompt (our ``eval_user_prompt``: question +
instruction, written into the lm-eval task's data file, so the chat-templated prompt is identical), the model's
chat template with its default system turn, greedy decoding, the same ``max_new_tokens``/``max_gen_toks``, stop at
the end-of-turn token, the same batch size ``B`` for both. lm-eval's HF backend runs ``generate`` on static
batches of ``B`` prompts sorted longest first; cotdistill's HF backend keeps ``B`` rows decoding with continuous
batching (``evaluate/backends/continuous.py``), which reproduces those static batches token for token.

Each variant runs in its own fresh process, ``--rounds`` interleaved rounds (the order rotates each round). Timed,
with the model already loaded:

* whole call: cotdistill ``run_eval(..., backend_obj=HFBackend(...))`` including scoring and its JSONL/summary
  files; lm-eval ``simple_evaluate(model=HFLM(...), ...)`` including its task/dataset setup and metrics;
* generation: the time spent inside cotdistill's backend generator (``HFBackend.generate``; run_eval's own loop,
  which also scores and appends the JSONL between batches, is recorded as ``generation_loop_seconds``); lm-eval's
  ``generate_until`` alone (its tokenization, batching, ``generate`` calls and decoding).

Wall seconds and the process's CPU seconds are both recorded: with one thread, CPU seconds are what the run would
take on an idle core, so their ratio is the robust one on a shared machine.

Agreement, per round: identical raw outputs and identical extracted answers (lm-eval's generations scored with our
extractor) per question. Speed-up per round = lm-eval seconds ÷ cotdistill seconds in that round; the result
file has every round, the load average at the start and end of each process and its CPU seconds.
Writes ``benchmarks/results/eval_vs_lmeval-<label>-<stamp>.json``; ``python benchmarks/make_results.py`` renders
RESULTS.md from the result files.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

TASK = "cotdistill_bench_gsm8k"
VARIANTS = ["cotdistill", "lm_eval"]  # + "cotdistill_static" (our backend without continuous batching)


def _model_dir(spec: dict) -> str:
    if spec["model"] == "tiny":
        from cotdistill.utils.tiny import build_tiny_model

        d = Path(spec["tmp"]) / "tiny_model"
        if not (d / "config.json").exists():
            build_tiny_model(d)
        return str(d)
    if spec.get("merged_dir"):
        return spec["merged_dir"]
    from cotdistill.models import resolve_model_path

    return str(resolve_model_path(spec["model"]))


def merge_adapter(model: str, adapter: str, out: Path, dtype: str) -> str:
    """Save ``model`` with ``adapter`` merged (as cotdistill's HF backend merges it) as a plain model folder."""
    from cotdistill.models import load_model_and_tokenizer

    m, tok, _ = load_model_and_tokenizer(model, dtype=dtype, adapter=adapter, for_training=False)
    m.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def worker(name: str, spec: dict, out: str) -> None:
    import torch

    from cotdistill.data.prompts import DEFAULT_INSTRUCTION, eval_user_prompt
    from cotdistill.data.registry import load_benchmark

    tmp = Path(spec["tmp"])
    model_dir = _model_dir(spec)
    dtype = spec["dtype"]
    exs = load_benchmark("gsm8k", limit=spec["limit"])
    res: dict = {"variant": name, "n": len(exs), "dtype": dtype, "torch_threads": torch.get_num_threads()}
    if name.startswith("cotdistill"):
        from cotdistill.evaluate import run_eval
        from cotdistill.evaluate.backends.hf import HFBackend

        t0 = time.perf_counter()
        be = HFBackend(model_dir, dtype=dtype, batch_size=spec["batch_size"],
                       continuous=False if name == "cotdistill_static" else None)
        res["load_seconds"] = round(time.perf_counter() - t0, 2)
        res["continuous"] = be.continuous
        out_dir = tmp / f"eval-{name}"
        import shutil

        shutil.rmtree(out_dir, ignore_errors=True)
        gen = {"seconds": 0.0, "cpu": 0.0}
        inner_gen = be.generate

        def generate(*args, **kw):  # time inside the backend's generator alone (run_eval scores between yields)
            it = inner_gen(*args, **kw)
            while True:
                t, c = time.perf_counter(), C.cpu_seconds()
                try:
                    chunk = next(it)
                except StopIteration:
                    return
                finally:
                    gen["seconds"] += time.perf_counter() - t
                    gen["cpu"] += C.cpu_seconds() - c
                yield chunk

        be.generate = generate
        cpu0, t0 = C.cpu_seconds(), time.perf_counter()
        summ = run_eval(model_dir, ["gsm8k"], out_dir, limit=spec["limit"], batch_size=spec["batch_size"],
                        max_new_tokens=spec["max_new_tokens"], dtype=dtype, backend_obj=be, progress=False,
                        bootstrap_samples=200)
        res["eval_seconds"] = round(time.perf_counter() - t0, 2)
        res["eval_cpu_seconds"] = round(C.cpu_seconds() - cpu0, 2)
        last = json.loads((out_dir / "summary.json").read_text())["last_run"]
        res["generation_loop_seconds"] = round(last["wall_s"], 2)  # run_eval's loop: generation + scoring + files
        res["generation_seconds"] = round(gen["seconds"], 2)
        res["generation_cpu_seconds"] = round(gen["cpu"], 2)
        res["accuracy"] = summ["gsm8k"]["accuracy"]
        recs = [json.loads(ln) for ln in (out_dir / "gsm8k.jsonl").read_text().splitlines() if ln.strip()]
        res["samples"] = {r["id"]: {"output": r["output"], "extracted": r["extracted"]} for r in recs}
        res["new_tokens"] = sum(r.get("n_tokens", 0) for r in recs)
    else:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        from cotdistill.data.answers import score

        data = tmp / "lmeval_gsm8k.jsonl"
        with data.open("w") as f:
            for e in exs:
                f.write(json.dumps({"id": e.id, "prompt": eval_user_prompt(e, DEFAULT_INSTRUCTION),
                                    "gold": e.answer}) + "\n")
        t0 = time.perf_counter()
        lm = HFLM(pretrained=model_dir, dtype=dtype, batch_size=spec["batch_size"], device="cpu")
        res["load_seconds"] = round(time.perf_counter() - t0, 2)
        eot = lm.tokenizer.eos_token
        task_dir = tmp / "lmeval_tasks"
        task_dir.mkdir(exist_ok=True)
        # JSON is valid YAML: no quoting surprises
        (task_dir / f"{TASK}.yaml").write_text(json.dumps({
            "task": TASK, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}},
            "test_split": "test", "output_type": "generate_until", "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{gold}}", "target_delimiter": "", "num_fewshot": 0,
            "generation_kwargs": {"until": [eot], "do_sample": False, "max_gen_toks": spec["max_new_tokens"]},
            "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
        }, indent=1))
        gen = {"seconds": 0.0, "cpu": 0.0}
        inner = lm.generate_until

        def generate_until(*args, **kw):  # time lm-eval's generation alone
            t, c = time.perf_counter(), C.cpu_seconds()
            try:
                return inner(*args, **kw)
            finally:
                gen["seconds"] += time.perf_counter() - t
                gen["cpu"] += C.cpu_seconds() - c

        lm.generate_until = generate_until
        cpu0, t0 = C.cpu_seconds(), time.perf_counter()
        out_lm = lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=TaskManager(include_path=str(task_dir)),
                                         apply_chat_template=True, log_samples=True, num_fewshot=0,
                                         random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                                         fewshot_random_seed=0, bootstrap_iters=0)
        res["eval_seconds"] = round(time.perf_counter() - t0, 2)
        res["eval_cpu_seconds"] = round(C.cpu_seconds() - cpu0, 2)
        res["generation_seconds"] = round(gen["seconds"], 2)
        res["generation_cpu_seconds"] = round(gen["cpu"], 2)
        by_id = {e.id: e for e in exs}
        samples, new_tokens, first_ctx = {}, 0, None
        for s in out_lm["samples"][TASK]:
            doc, text = s["doc"], s["resps"][0][0]
            extracted, _ = score(text, by_id[doc["id"]])
            samples[doc["id"]] = {"output": text, "extracted": extracted}
            new_tokens += len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
            if first_ctx is None:
                first_ctx = (doc["id"], s["arguments"][0][0])
        res["samples"] = samples
        res["new_tokens"] = new_tokens  # re-tokenized text (the end token is not in it)
        res["accuracy"] = sum(score(v["output"], by_id[k])[1] for k, v in samples.items()) / max(1, len(samples))
        ours = lm.tokenizer.apply_chat_template(
            [{"role": "user", "content": eval_user_prompt(by_id[first_ctx[0]], DEFAULT_INSTRUCTION)}],
            tokenize=False, add_generation_prompt=True)
        res["prompt_identical"] = first_ctx[1] == ours
    C.write_worker_result(out, res)


def _agreement(ours: dict, ref: dict) -> dict:
    ids = sorted(set(ours["samples"]) & set(ref["samples"]))
    diff_text = [i for i in ids if ours["samples"][i]["output"].strip() != ref["samples"][i]["output"].strip()]
    diff_ans = [i for i in ids if ours["samples"][i]["extracted"] != ref["samples"][i]["extracted"]]
    return {"n": len(ids), "identical_outputs": len(ids) - len(diff_text), "same_answers": len(ids) - len(diff_ans),
            "differing_output_ids": diff_text, "differing_answer_ids": diff_ans}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model spec, or 'tiny'")
    ap.add_argument("--adapter", default=None, help="LoRA adapter folder (a distilled student), merged once")
    ap.add_argument("--label", default=None, help="name in the result file (default: base / student)")
    ap.add_argument("--limit", type=int, default=200, help="first N GSM8K test questions")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    a = C.parse_or_work(ap, worker)
    if a is None:
        return
    from cotdistill.models import resolve_dtype, resolve_model_path

    dtype = str(resolve_dtype("auto")).replace("torch.", "")
    label = a.label or ("student" if a.adapter else ("tiny" if a.model == "tiny" else "base"))
    info0 = C.machine_info()
    print(json.dumps(info0, indent=1))
    variants = a.variants.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        spec = {"tmp": tmp, "model": a.model, "limit": a.limit, "max_new_tokens": a.max_new_tokens,
                "batch_size": a.batch_size, "dtype": dtype}
        if a.model != "tiny":
            resolve_model_path(a.model)  # convert the GGUF once, outside the measured processes
        if a.adapter:
            spec["merged_dir"] = merge_adapter(a.model, a.adapter, Path(tmp) / "merged", dtype)
        runs = C.run_rounds(__file__, variants, spec, a.rounds)
    info1 = C.machine_info()
    rounds = []
    for i in range(a.rounds):
        rnd = {"round": i + 1, "variants": {}}
        for v in variants:
            r = runs[v][i]
            rnd["variants"][v] = {k: x for k, x in r.items() if k != "samples"}
        ours, ref = runs["cotdistill"][i], runs.get("lm_eval", [None] * a.rounds)[i]
        if ref is not None and "error" not in ours and "error" not in ref:
            rnd["agreement_vs_lm_eval"] = _agreement(ours, ref)
            rnd["speedup_generation"] = round(ref["generation_seconds"] / ours["generation_seconds"], 4)
            rnd["speedup_generation_cpu"] = round(ref["generation_cpu_seconds"] / ours["generation_cpu_seconds"], 4)
            rnd["speedup_call"] = round(ref["eval_seconds"] / ours["eval_seconds"], 4)
            rnd["speedup_call_cpu"] = round(ref["eval_cpu_seconds"] / ours["eval_cpu_seconds"], 4)
        st = runs.get("cotdistill_static", [None] * a.rounds)[i]
        if st is not None and "error" not in ours and "error" not in st:
            rnd["agreement_vs_static"] = _agreement(ours, st)
            rnd["speedup_generation_vs_static"] = round(st["generation_seconds"] / ours["generation_seconds"], 4)
        rounds.append(rnd)
    ok = [r for r in rounds if "speedup_generation" in r]
    summary = {
        "speedup_generation": C.spread([r["speedup_generation"] for r in ok]),
        "speedup_generation_cpu": C.spread([r["speedup_generation_cpu"] for r in ok]),
        "speedup_call": C.spread([r["speedup_call"] for r in ok]),
        "speedup_call_cpu": C.spread([r["speedup_call_cpu"] for r in ok]),
        "identical_outputs_min": min((r["agreement_vs_lm_eval"]["identical_outputs"] for r in ok), default=None),
        "same_answers_min": min((r["agreement_vs_lm_eval"]["same_answers"] for r in ok), default=None),
        "n": a.limit,
        "samples_per_s": {v: C.spread([runs[v][i]["n"] / runs[v][i]["generation_seconds"] for i in range(a.rounds)
                                       if "error" not in runs[v][i]]) for v in variants},
        "samples_per_s_call": {v: C.spread([runs[v][i]["n"] / runs[v][i]["eval_seconds"] for i in range(a.rounds)
                                            if "error" not in runs[v][i]]) for v in variants},
        "mean_new_tokens": {v: C.spread([runs[v][i]["new_tokens"] / runs[v][i]["n"] for i in range(a.rounds)
                                         if "error" not in runs[v][i]]) for v in variants},
    }
    if any("speedup_generation_vs_static" in r for r in rounds):
        summary["speedup_generation_vs_static"] = C.spread(
            [r["speedup_generation_vs_static"] for r in rounds if "speedup_generation_vs_static" in r])
    payload = {
        "date_utc": info0["date_utc"], "machine": info0, "machine_after": info1,
        "settings": {"model": a.model, "adapter": a.adapter, "limit": a.limit, "max_new_tokens": a.max_new_tokens,
                     "batch_size": a.batch_size, "dtype": dtype, "rounds": a.rounds, "variants": variants,
                     "benchmark": "gsm8k test", "decoding": "greedy, chat template, zero-shot"},
        "rounds": rounds, "summary": summary,
    }
    print(json.dumps(summary, indent=1))
    if a.model == "tiny":  # a check of the script, not a measurement
        print(json.dumps(rounds, indent=1))
        return
    C.save_result("eval_vs_lmeval", label, payload)


if __name__ == "__main__":
    main()
