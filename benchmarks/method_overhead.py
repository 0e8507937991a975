"""Wall time per trained token of MIND, COMPACT and MCC-KD vs Std-CoT at equal paths, on SmolLM2-135M.

    python benchmarks/method_overhead.py                     # the CPU comparison's settings, 3 rounds (~30 CPU-min)
    python benchmarks/method_overhead.py --model tiny --questions 4 --prepare-questions 8 --rounds 1  # script check

Settings are the CPU comparison's (configs/compare_cpu.yaml): SmolLM2-135M-Instruct, LoRA (cotdistill defaults),
lr 3e-4, one question (its K = 2 paths) per optimizer step, max_seq_len 256, no gradient checkpointing,
``train.share_prompt`` on (the default), each method's default settings otherwise. Every method trains, in its own
fresh process, one epoch of the SAME path dataset (the first ``Q`` MCC-KD SVAMP questions, ``K`` rationales each,
labels ``sample0..K-1``); Std-CoT uses ``std_cot.paths: all`` so it trains on the same paths. Rounds are
interleaved (``--rounds``, default 3; the order rotates each round).

Per-token time = the HF Trainer loop (``on_train_begin`` → ``on_train_end``) ÷ the real tokens of the epoch's
sequences (identical for every method). The one-off ``Method.prepare`` runs before the loop and is timed
separately. MIND's (sentence-encoder pass over every path, the no-grad L0 pass over every path, the MetaNet
warm-up epochs) grows with the dataset, so the variant ``mind_prepare`` runs it on the CPU comparison's dataset
size (``--prepare-questions`` = 300 questions × K paths; then one training step) in each round, with an empty
embedding cache (as a first run has). Two ratios per round:

* per token: ``ms/token(method) ÷ ms/token(Std-CoT)`` (prepare excluded);
* realistic run (MIND): ``(prepare_300 + tokens_300 × ms/token(MIND)) ÷ (tokens_300 × ms/token(Std-CoT))``, i.e. a
  one-epoch run over the 300 questions (the CPU comparison's 300 steps), prepare included; its share of that run
  is reported too.

Writes ``benchmarks/results/method_overhead-<label>-<stamp>.json``; ``benchmarks/make_results.py`` renders it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
import train_vs_trl as T  # noqa: E402

METHODS = ["std_cot", "mcc_kd", "mind", "compact"]
LR = 3e-4  # configs/compare_cpu.yaml


PREPARE_PARTS = ("_encode", "initial_losses", "warmup")  # MindMethod.prepare's three costly steps


def _timed_part(fn, name: str, parts: dict[str, float]):
    """``fn`` adding its wall seconds to ``parts[name]``."""

    @functools.wraps(fn)
    def timed(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            parts[name] = parts.get(name, 0.0) + time.perf_counter() - t0

    return timed


def worker(name: str, spec: dict, out: str) -> None:
    import torch

    import cotdistill.methods.registry as registry
    from cotdistill.config import Config
    from cotdistill.models import load_model_and_tokenizer
    from cotdistill.train.run import _bf16_enabled, train

    t_start = time.perf_counter()
    model_spec = T._model_spec(spec)
    tmp = Path(spec["tmp"])
    prepare_only = name == "mind_prepare"
    # a fresh cache folder (sharing only the converted model): MIND's sentence-encoder vectors are cached on disk by
    # text, and a real first run computes them, so no round may reuse another round's vectors
    from cotdistill.utils.paths import cache_dir

    real_cache = cache_dir()
    fresh = tmp / f"cache-{name}-{os.getpid()}"
    fresh.mkdir()
    if (real_cache / "models").is_dir():
        (fresh / "models").symlink_to(real_cache / "models")
    os.environ["COTDISTILL_CACHE_DIR"] = str(fresh)
    method = "mind" if prepare_only else name
    n_q = spec["prepare_questions"] if prepare_only else spec["questions"]
    ds_dir = tmp / f"paths-{n_q}"
    if not (ds_dir / "dataset_dict.json").exists():
        C.save_path_dataset(C.svamp_path_rows(n_q, spec["k"]), ds_dir)
    cfg = Config.model_validate({
        "method": method,
        "std_cot": {"paths": "all"},
        "mcc_kd": {"max_rationales": max(2, spec["k"])},
        "train": {"model": model_spec, "finetune": "lora", "lr": LR, "epochs": 1,
                  "max_steps": 1 if prepare_only else -1,
                  "max_seq_len": spec["max_seq_len"], "questions_per_step": 1, "grad_accum": 1,
                  "paths_micro_batch": spec["k"], "logging_steps": 1, "save_steps": 100000,
                  "report_to": ["none"], "gradient_checkpointing": spec["grad_ckpt"], "seed": 0,
                  "scheduler": "constant", "warmup_ratio": 0.0},
    })
    _, tok, _ = load_model_and_tokenizer(model_spec, for_training=True)
    spec_n = dict(spec, questions=n_q)
    seqs = T._encoded(spec_n, tok, cfg)
    tokens = sum(len(s["input_ids"]) for s in seqs)

    prep = {"seconds": 0.0, "cpu_seconds": 0.0}
    parts: dict[str, float] = {}
    orig_get = registry.get_method

    def timed_get_method(n, c):  # time the one-off prepare (it runs before the Trainer loop)
        m = orig_get(n, c)
        inner = m.prepare

        def prepare(*a, **kw):
            t0, c0 = time.perf_counter(), C.cpu_seconds()
            try:
                return inner(*a, **kw)
            finally:
                prep["seconds"] += time.perf_counter() - t0
                prep["cpu_seconds"] += C.cpu_seconds() - c0

        m.prepare = functools.wraps(inner)(prepare)
        for part in PREPARE_PARTS:  # MIND: where prepare's time goes (sentence encoder, L0 pass, MetaNet warm-up)
            if hasattr(m, part):
                setattr(m, part, _timed_part(getattr(m, part), part, parts))
        return m

    registry.get_method = timed_get_method
    timer = T._timer_callback()
    run_dir = tmp / f"run-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    T.patch_path_collator(timer)
    train(cfg, ds_dir, run_dir, resume=False, callbacks=[timer])
    res = {"variant": name, "method": method, "questions": n_q, "tokens": tokens,
           "prepare_seconds": round(prep["seconds"], 2), "prepare_cpu_seconds": round(prep["cpu_seconds"], 2),
           "prepare_parts_seconds": {k: round(v, 2) for k, v in parts.items()},
           "setup_seconds": round(timer.t_begin - t_start, 1), "bf16": _bf16_enabled(True),
           "torch_threads": torch.get_num_threads()}
    if not prepare_only:
        st = T.steady_stats(timer)
        if st["loop_tokens"] != tokens:
            raise RuntimeError(f"{name}: the loop collated {st['loop_tokens']} tokens, the epoch has {tokens}")
        res.update(st, steps=len(timer.step_times), ms_per_token=round(1000 * st["loop_seconds"] / tokens, 4),
                   ms_per_cpu_token=round(1000 * st["loop_cpu_seconds"] / tokens, 4))
    C.write_worker_result(out, res)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model spec, or 'tiny'")
    ap.add_argument("--questions", type=int, default=24, help="questions of the timed epoch (= optimizer steps)")
    ap.add_argument("--prepare-questions", type=int, default=300, help="dataset size of the mind_prepare variant")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--max-seq-len", type=int, default=256)
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (off in compare_cpu.yaml)")
    ap.add_argument("--methods", default=",".join(METHODS + ["mind_prepare"]))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all methods")
    ap.add_argument("--label", default="smollm2",
                    help="result-file label (RESULTS.md's summary reads 'smollm2'; others appear in the details)")
    a = C.parse_or_work(ap, worker)
    if a is None:
        return
    from cotdistill.models import resolve_model_path

    if a.model != "tiny":
        resolve_model_path(a.model)
    info0 = C.machine_info()
    print(json.dumps(info0, indent=1))
    variants = a.methods.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-methods-") as tmp:
        spec = {"tmp": tmp, "model": a.model, "questions": a.questions, "prepare_questions": a.prepare_questions,
                "k": a.k, "max_seq_len": a.max_seq_len, "grad_ckpt": a.grad_ckpt}
        runs = C.run_rounds(__file__, variants, spec, a.rounds)
    info1 = C.machine_info()
    rounds = []
    for i in range(a.rounds):
        rnd = {v: runs[v][i] for v in variants}
        base = rnd.get("std_cot", {})
        entry: dict = {"round": i + 1, "variants": rnd, "per_token": {}, "per_cpu_token": {}}
        if "error" not in base and "ms_per_token" in base:
            for v, r in rnd.items():
                if "ms_per_token" in r and "error" not in r:
                    entry["per_token"][v] = round(r["ms_per_token"] / base["ms_per_token"], 4)
                    entry["per_cpu_token"][v] = round(r["ms_per_cpu_token"] / base["ms_per_cpu_token"], 4)
            mind, prep = rnd.get("mind", {}), rnd.get("mind_prepare", {})
            if "ms_per_token" in mind and "error" not in prep and "prepare_seconds" in prep:
                tok300 = prep["tokens"]
                std_run = tok300 * base["ms_per_token"] / 1000
                mind_run = prep["prepare_seconds"] + tok300 * mind["ms_per_token"] / 1000
                entry["realistic_run"] = {
                    "questions": prep["questions"], "tokens": tok300, "std_cot_seconds": round(std_run, 1),
                    "mind_seconds": round(mind_run, 1), "mind_prepare_seconds": prep["prepare_seconds"],
                    "mind_prepare_share": round(prep["prepare_seconds"] / mind_run, 4),
                    "mind_vs_std_cot": round(mind_run / std_run, 4)}
        rounds.append(entry)
    summary: dict = {"per_token": {}, "per_cpu_token": {}, "ms_per_token": {}}
    for v in variants:
        summary["ms_per_token"][v] = C.spread([r["ms_per_token"] for r in runs[v] if "ms_per_token" in r])
        for key in ("per_token", "per_cpu_token"):
            vals = [r[key][v] for r in rounds if v in r[key]]
            if vals:
                summary[key][v] = C.spread(vals)
    rr = [r["realistic_run"] for r in rounds if "realistic_run" in r]
    if rr:
        summary["mind_realistic_run"] = C.spread([x["mind_vs_std_cot"] for x in rr])
        summary["mind_prepare_share"] = C.spread([x["mind_prepare_share"] for x in rr])
        summary["mind_prepare_seconds_300"] = C.spread([x["mind_prepare_seconds"] for x in rr])
    summary["prepare_seconds"] = {v: C.spread([r["prepare_seconds"] for r in runs[v] if "prepare_seconds" in r])
                                  for v in variants}
    first = next((r for v in variants for r in runs[v] if "error" not in r), {})
    payload = {
        "date_utc": info0["date_utc"], "machine": info0, "machine_after": info1,
        "settings": {"model": a.model, "questions": a.questions, "prepare_questions": a.prepare_questions,
                     "k": a.k, "max_seq_len": a.max_seq_len, "gradient_checkpointing": a.grad_ckpt,
                     "bf16_autocast": first.get("bf16"), "lr": LR, "share_prompt": True, "rounds": a.rounds,
                     "variants": variants, "data": "MCC-KD SVAMP rationales, one question (K paths) per step"},
        "rounds": rounds, "summary": summary,
    }
    print(json.dumps(summary, indent=1))
    if a.model == "tiny":  # a check of the script, not a measurement
        return
    C.save_result("method_overhead", a.label, payload)


if __name__ == "__main__":
    main()
