"""Wall time per trained token of MIND and COMPACT (and MCC-KD, for context) vs Std-CoT at equal paths.

    python benchmarks/method_overhead.py --quick
    python benchmarks/method_overhead.py --model tiny      # the tiny random model (seconds)

Every method trains, in its own fresh process, one epoch of the SAME path dataset (the first ``Q`` MCC-KD SVAMP
questions, ``K`` rationales each, labels ``sample0..K-1``), one question (= its K paths) per optimizer step,
``paths_micro_batch = K``, LoRA with the cotdistill defaults, each method's default settings otherwise.
Std-CoT uses ``std_cot.paths: all`` so it trains on the same K paths.

Per-token time = the HF Trainer loop (``on_train_begin`` → ``on_train_end``) ÷ the real tokens of the epoch's
sequences (identical for every method); the headline "steady" number excludes the first optimizer step
(see ``train_vs_trl.py``). The one-off ``Method.prepare`` (MIND: sentence-encoder pass, the
no-grad L0 pass over every path and the MetaNet warm-up epochs; COMPACT: token tables) runs before the loop,
is excluded from the per-token number and reported separately.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import train_vs_trl as T  # noqa: E402

METHODS = ["std_cot", "mind", "compact", "mcc_kd"]


def worker(name: str, spec: dict, out: str) -> None:
    import torch

    import cotdistill.methods.registry as registry
    from cotdistill.config import Config
    from cotdistill.models import load_model_and_tokenizer
    from cotdistill.train.run import _bf16_enabled, train

    t_start = time.perf_counter()
    model_spec = T._model_spec(spec)
    tmp = Path(spec["tmp"])
    ds_dir = tmp / "paths"
    if not (ds_dir / "dataset_dict.json").exists():
        C.save_path_dataset(C.svamp_path_rows(spec["questions"], spec["k"]), ds_dir)
    cfg = Config.model_validate({
        "method": name,
        "std_cot": {"paths": "all"},
        "mcc_kd": {"max_rationales": max(2, spec["k"])},
        "train": {"model": model_spec, "finetune": "lora", "lr": T.LR, "epochs": 1, "max_steps": -1,
                  "max_seq_len": spec["max_seq_len"], "questions_per_step": 1, "grad_accum": 1,
                  "paths_micro_batch": spec["k"], "logging_steps": 1, "save_steps": 100000,
                  "report_to": ["none"], "gradient_checkpointing": spec["grad_ckpt"], "seed": 0,
                  "scheduler": "constant", "warmup_ratio": 0.0},
    })
    _, tok, _ = load_model_and_tokenizer(model_spec, for_training=True)
    seqs = T._encoded(spec, tok, cfg)

    prep = {"seconds": 0.0}
    orig_get = registry.get_method

    def timed_get_method(n, c):  # time the one-off prepare (it runs before the Trainer loop)
        m = orig_get(n, c)
        inner = m.prepare

        def prepare(*a, **kw):
            t0 = time.perf_counter()
            try:
                return inner(*a, **kw)
            finally:
                prep["seconds"] += time.perf_counter() - t0

        import functools

        m.prepare = functools.wraps(inner)(prepare)
        return m

    registry.get_method = timed_get_method
    timer = T._timer_callback()
    run_dir = tmp / f"run-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    T.patch_path_collator(timer)
    train(cfg, ds_dir, run_dir, resume=False, callbacks=[timer])
    tokens = sum(len(s["input_ids"]) for s in seqs)
    st = T.steady_stats(timer)
    if st["loop_tokens"] != tokens:
        raise RuntimeError(f"{name}: the loop collated {st['loop_tokens']} tokens, the epoch has {tokens}")
    C.write_worker_result(out, {
        "variant": name, "steps": len(timer.step_times), "tokens": tokens, **st,
        "ms_per_token": round(1000 / st["tokens_per_s"], 3),
        "ms_per_token_loop": round(1000 / st["tokens_per_s_loop"], 3),
        "prepare_seconds": round(prep["seconds"], 2), "setup_seconds": round(timer.t_begin - t_start, 1),
        "bf16": _bf16_enabled(True), "torch_threads": torch.get_num_threads(),
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model spec, or 'tiny'")
    ap.add_argument("--questions", type=int, default=None)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--no-grad-ckpt", action="store_true")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--repeat", type=int, default=None,
                    help="rounds over all methods, interleaved (default 1 quick, 2 full); the median is reported")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, json.loads(a.spec), a.out)
        return
    from cotdistill.models import resolve_model_path

    if a.model != "tiny":
        resolve_model_path(a.model)
    info0 = C.machine_info()
    print(json.dumps(info0, indent=1))
    q = a.questions or (10 if a.quick else 30)
    with tempfile.TemporaryDirectory(prefix="bench-methods-") as tmp:
        spec = {"tmp": tmp, "model": a.model, "questions": q, "k": a.k, "max_seq_len": a.max_seq_len,
                "grad_ckpt": not a.no_grad_ckpt}
        runs = C.run_rounds(__file__, a.methods.split(","), spec, a.repeat or (1 if a.quick else 2))
    info1 = C.machine_info()
    results = [C.median_run(rs, "ms_per_token") for rs in runs.values()]
    base = next((r for r in results if r["variant"] == "std_cot" and "error" not in r), None)
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["variant"], "failed: " + r["error"]] + [""] * 8)
            continue
        ratio = f"{r['ms_per_token'] / base['ms_per_token']:.2f}x" if base else ""
        allv = r.get("all_ms_per_token", [])
        mpt = f"{r['ms_per_token']}" + (f" (runs: {', '.join(map(str, allv))})" if len(allv) > 1 else "")
        rows.append([r["variant"], r["steps"], r["tokens"], r["loop_seconds"], r["ms_per_token_loop"], mpt,
                     r["steady_seconds_per_step"], ratio, r["prepare_seconds"], r["peak_rss_mib"]])
    table = C.md_table(["method", "steps", "tokens", "loop s", "ms/token (whole loop)", "ms/token (steady, median)",
                        "steady s/step",
                        "time/token vs Std-CoT", "prepare s (excluded)", "peak RSS MiB"], rows)
    model_desc = "tiny random Llama (cotdistill.utils.tiny)" if a.model == "tiny" else f"`{a.model}` (real weights)"
    body = (f"Method overhead, {model_desc}, {q} questions × K={a.k} paths (MCC-KD SVAMP), one epoch, one question "
            f"per step, paths_micro_batch {a.k}, LoRA, max_seq_len {a.max_seq_len}, gradient checkpointing "
            f"{not a.no_grad_ckpt}, each method's default settings. Goal: MIND and COMPACT ≤ 1.15× Std-CoT.\n\n"
            + table)
    print(body)
    C.append_results("Method overhead: MIND / COMPACT vs Std-CoT", info0, info1, body)


if __name__ == "__main__":
    main()
