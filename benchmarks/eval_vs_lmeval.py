"""Evaluation throughput and answer agreement: ``cotdistill.evaluate.run_eval`` vs lm-evaluation-harness.

    python benchmarks/eval_vs_lmeval.py --quick
    python benchmarks/eval_vs_lmeval.py --limit 64 --max-new-tokens 256

Same model (SmolLM2-135M-Instruct, the plain folder ``resolve_model_path`` converts the GGUF into; or the tiny
random model), same dtype (what cotdistill's ``dtype=auto`` picks on this machine, passed to lm-eval too), same
first ``N`` GSM8K test questions from the local file, same user prompt (our ``eval_user_prompt``: question +
instruction, written into the lm-eval task's data file, so the chat-templated prompt is identical), the model's
chat template with its default system turn, greedy decoding, the same ``max_new_tokens``/``max_gen_toks``, stop at
the end-of-turn token, batch size ``B`` for both (cotdistill: length-sorted left-padded batches; lm-eval HF
backend: its own length-sorted batches).

lm-eval runs a custom task (``dataset_path: json`` on a temporary file, ``output_type: generate_until``) with
``apply_chat_template=True``, fully offline. Each tool runs in its own fresh process; the timed part is the
evaluation call with the model already loaded (cotdistill: ``run_eval(..., backend_obj=HFBackend(...))``,
including writing its JSONL and summaries; lm-eval: ``simple_evaluate(model=HFLM(...), ...)``).

Agreement: lm-eval's raw generations are scored with OUR extractor (``cotdistill.data.answers.score``) and
compared per sample with cotdistill's extracted answers (and raw texts).
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


def _model_dir(spec: dict) -> str:
    if spec["model"] == "tiny":
        from cotdistill.utils.tiny import build_tiny_model

        d = Path(spec["tmp"]) / "tiny_model"
        if not (d / "config.json").exists():
            build_tiny_model(d)
        return str(d)
    from cotdistill.models import resolve_model_path

    return str(resolve_model_path(spec["model"]))


def _examples(spec: dict):
    from cotdistill.data.registry import load_benchmark

    return load_benchmark("gsm8k", limit=spec["limit"])


def worker(name: str, spec: dict, out: str) -> None:
    import torch

    from cotdistill.data.prompts import DEFAULT_INSTRUCTION, eval_user_prompt
    from cotdistill.models import resolve_dtype

    tmp = Path(spec["tmp"])
    model_dir = _model_dir(spec)
    dtype = str(resolve_dtype("auto")).replace("torch.", "")
    exs = _examples(spec)
    res: dict = {"variant": name, "n": len(exs), "dtype": dtype, "torch_threads": torch.get_num_threads()}
    if name == "cotdistill":
        from cotdistill.evaluate import run_eval
        from cotdistill.evaluate.backends.hf import HFBackend

        t0 = time.perf_counter()
        be = HFBackend(model_dir, dtype=dtype, batch_size=spec["batch_size"])
        res["load_seconds"] = round(time.perf_counter() - t0, 2)
        out_dir = tmp / "cotdistill_eval"
        t0 = time.perf_counter()
        summ = run_eval(model_dir, ["gsm8k"], out_dir, limit=spec["limit"], batch_size=spec["batch_size"],
                        max_new_tokens=spec["max_new_tokens"], dtype=dtype, backend_obj=be, progress=False,
                        bootstrap_samples=200)
        res["eval_seconds"] = round(time.perf_counter() - t0, 2)
        last = json.loads((out_dir / "summary.json").read_text())["last_run"]
        res["generation_seconds"] = round(last["wall_s"], 2)
        res["accuracy"] = summ["gsm8k"]["accuracy"]
        recs = [json.loads(ln) for ln in (out_dir / "gsm8k.jsonl").read_text().splitlines() if ln.strip()]
        res["samples"] = {r["id"]: {"output": r["output"], "extracted": r["extracted"], "correct": r["correct"]}
                          for r in recs}
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
        gen = {"seconds": 0.0}
        inner = lm.generate_until

        def generate_until(*args, **kw):  # time lm-eval's generation alone, like our last_run.wall_s
            t = time.perf_counter()
            try:
                return inner(*args, **kw)
            finally:
                gen["seconds"] += time.perf_counter() - t

        lm.generate_until = generate_until
        t0 = time.perf_counter()
        out_lm = lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=TaskManager(include_path=str(task_dir)),
                                         apply_chat_template=True, log_samples=True, num_fewshot=0,
                                         random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                                         fewshot_random_seed=0, bootstrap_iters=0)
        res["eval_seconds"] = round(time.perf_counter() - t0, 2)
        res["generation_seconds"] = round(gen["seconds"], 2)
        by_id = {e.id: e for e in exs}
        samples = {}
        new_tokens = 0
        first_ctx = None
        for s in out_lm["samples"][TASK]:
            doc = s["doc"]
            text = s["resps"][0][0]
            extracted, correct = score(text, by_id[doc["id"]])
            samples[doc["id"]] = {"output": text, "extracted": extracted, "correct": bool(correct)}
            new_tokens += len(lm.tokenizer(text, add_special_tokens=False)["input_ids"])
            if first_ctx is None:
                first_ctx = (doc["id"], s["arguments"][0][0])
        res["samples"] = samples
        res["new_tokens_retokenized"] = new_tokens
        res["accuracy"] = sum(v["correct"] for v in samples.values()) / max(1, len(samples))
        # the chat-templated prompt lm-eval sent, to prove it equals ours
        tok = lm.tokenizer
        ours = tok.apply_chat_template([{"role": "user", "content": eval_user_prompt(by_id[first_ctx[0]],
                                                                                   DEFAULT_INSTRUCTION)}],
                                       tokenize=False, add_generation_prompt=True)
        res["prompt_identical"] = first_ctx[1] == ours
        if not res["prompt_identical"]:
            res["prompt_lmeval"], res["prompt_ours"] = first_ctx[1][-300:], ours[-300:]
    C.write_worker_result(out, res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model spec, or 'tiny'")
    ap.add_argument("--limit", type=int, default=None, help="first N GSM8K test questions")
    ap.add_argument("--max-new-tokens", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, json.loads(a.spec), a.out)
        return
    if a.model != "tiny":
        from cotdistill.models import resolve_model_path

        resolve_model_path(a.model)
    info0 = C.machine_info()
    print(json.dumps(info0, indent=1))
    limit = a.limit or (16 if a.quick else 48)
    mnt = a.max_new_tokens or (160 if a.quick else 256)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        spec = {"tmp": tmp, "model": a.model, "limit": limit, "max_new_tokens": mnt, "batch_size": a.batch_size}
        for v in ("cotdistill", "lm_eval"):
            print(f"--- {v} ...", flush=True)
            try:
                results[v] = C.run_worker(__file__, v, spec)
            except Exception as e:  # noqa: BLE001
                print(f"{v} FAILED: {e}")
                results[v] = {"variant": v, "error": str(e).splitlines()[0][:300]}
            print(json.dumps({k: v2 for k, v2 in results[v].items() if k != "samples"}), flush=True)
    info1 = C.machine_info()
    ours, ref = results["cotdistill"], results["lm_eval"]
    model_desc = "tiny random Llama (cotdistill.utils.tiny)" if a.model == "tiny" else f"`{a.model}` (real weights)"
    head = (f"GSM8K test, first {limit} questions, {model_desc}, dtype {ours.get('dtype')}, greedy, max_new_tokens "
            f"{mnt}, batch size {a.batch_size}, chat template, zero-shot. Timed: the evaluation call with the model "
            f"already loaded. Goal ≥ 1.5× samples/s.\n\n")
    rows = []
    for r in (ours, ref):
        if "error" in r:
            rows.append([r["variant"], "failed: " + r["error"]] + [""] * 7)
            continue
        rows.append([r["variant"], r["n"], r["eval_seconds"], round(r["n"] / r["eval_seconds"], 3),
                     r["generation_seconds"], round(r["n"] / r["generation_seconds"], 3), r["load_seconds"],
                     round(r["accuracy"], 3), r["peak_rss_mib"]])
    body = head + C.md_table(["tool", "samples", "eval call s", "samples/s (eval call)", "generation s", "samples/s (generation)",
                              "model load s (excluded)",
                              "accuracy (our extractor)", "peak RSS MiB"], rows)
    if "error" not in ours and "error" not in ref:
        ids = sorted(set(ours["samples"]) & set(ref["samples"]))
        same_ans = sum(ours["samples"][i]["extracted"] == ref["samples"][i]["extracted"] for i in ids)
        same_txt = sum(ours["samples"][i]["output"].strip() == ref["samples"][i]["output"].strip() for i in ids)
        speed = ref["eval_seconds"] / ours["eval_seconds"]
        gspeed = ref["generation_seconds"] / ours["generation_seconds"]
        body += (f"\n\n**Speed-up (cotdistill samples/s ÷ lm-eval samples/s): {speed:.2f}× for the whole evaluation "
                 f"call, {gspeed:.2f}× for generation alone.** Per-sample agreement of "
                 f"extracted answers: {same_ans}/{len(ids)} ({same_ans / max(1, len(ids)):.1%}); identical raw "
                 f"outputs: {same_txt}/{len(ids)}. lm-eval's chat-templated prompt identical to ours: "
                 f"{ref.get('prompt_identical')}.")
        if not ref.get("prompt_identical"):
            body += f"\n\nPrompt tails differ: lm-eval `{ref.get('prompt_lmeval')!r}` vs ours `{ref.get('prompt_ours')!r}`"
    print(body)
    C.append_results("Evaluation: cotdistill run_eval vs lm-evaluation-harness", info0, info1, body)


if __name__ == "__main__":
    main()
