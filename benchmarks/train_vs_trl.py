"""Std-CoT training throughput and peak memory: cotdistill vs TRL ``SFTTrainer`` on the same data and settings.

    python benchmarks/train_vs_trl.py                   # 24 questions x K=4, seq 512, 3 rounds (~45 CPU-min)
    python benchmarks/train_vs_trl.py --model tiny --questions 4 --rounds 1   # script check (seconds)

Data: the first ``Q`` questions of the MCC-KD SVAMP rationales, ``K`` sampled rationales each (final answer line
stripped, the shared ``The answer is: {gold}`` suffix appended by our collator). Both tools train on the SAME
token sequences: the TRL dataset is pre-tokenized with our ``PathCollator.encode`` (columns ``input_ids`` and
``completion_mask``), so the prompt, completion and loss tokens are identical.

Settings shared by every variant: the same student (SmolLM2-135M-Instruct via ``load_model_and_tokenizer``, or
the tiny random model with ``--model tiny``), the same LoRA config (cotdistill defaults: r 16, alpha 32, dropout
0.1, all linear projections), lr 1e-4 constant, AdamW, one epoch, ``K`` sequences (one question) per optimizer
step, bf16 autocast exactly when cotdistill enables it on this CPU, gradient checkpointing as cotdistill's
default, ``max_seq_len`` equal, completion-only loss, no checkpoint saving, no logging integrations.

Variants (each in a fresh process; timing = ``on_train_begin`` → ``on_train_end`` of the HF Trainer loop, i.e.
data loading + collation + forward/backward/optimizer; model loading and TRL's dataset preparation excluded):

* ``cotdistill``: ``cotdistill.train.run.train`` with ``method: std_cot``, ``std_cot.paths: all``,
  ``train.share_prompt: false`` (every path its own row, the prompt computed K times).
* ``cotdistill_shared``: the same with ``train.share_prompt: true`` (a question's K paths packed into one row
  ``[prompt, path_1..K]`` with a 4-D mask, the prompt computed once; same logits).
* ``trl_padding_free``: SFTTrainer, ``padding_free=True`` (the batch flattened into one row with restarted
  position ids; transformers builds the block mask for sdpa), batch ``K``.
* ``trl_packed``: SFTTrainer, ``packing=True`` (BFD, padding-free), rows of about ``K`` sequences' tokens, batch 1.
* ``trl_padded``: SFTTrainer with its default padded collator, batch ``K``.

Metric: trained tokens/s = real (non-padding) tokens / seconds. "whole loop" (the headline) counts every token
of the epoch (identical for every variant: same sequences, one epoch) over the whole loop; "CPU" divides by the
process's CPU seconds in the loop instead (one thread: robust to waiting for a core on a shared machine);
"steady" excludes the first optimizer step (one-off allocator/autocast/lazy-init costs): tokens of steps 2..N
(counted per collated batch) ÷ time from the end of step 1 to the end of step N.

Rounds: every variant runs once per round in a fresh process, rounds interleaved (``--rounds``, default 3). Per
round, the speed-up of cotdistill over each TRL variant and over the round's fastest TRL variant; the result file
(``benchmarks/results/train_vs_trl-<label>-<stamp>.json``) has every round, the load average at the start and end
of each process, and the median, min and max. ``python benchmarks/make_results.py`` renders RESULTS.md.
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

VARIANTS = ["cotdistill", "cotdistill_shared", "trl_padding_free", "trl_packed", "trl_padded"]
DEFAULT_VARIANTS = ["cotdistill_shared", "trl_padded", "trl_padding_free", "trl_packed"]  # shared: our default
LR = 1e-4


# ---------------------------------------------------------------------------------------------- worker side
def _cpu() -> float:
    return C.cpu_seconds()


def _timer_callback():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.t_begin = self.t_end = None
            self.step_times: list[float] = []
            self.losses: list[float] = []

            self.batch_tokens: list[int] = []  # real tokens of each collated batch, in order (see count_tokens)
            self.in_loop = False  # only the loop's batches count: not MIND's L0 pass before, not the guard after

        def record(self, n_tokens: int) -> None:
            if self.in_loop:
                self.batch_tokens.append(int(n_tokens))

        def on_train_begin(self, args, state, control, **kw):
            self.t_begin = time.perf_counter()
            self.cpu_begin = _cpu()
            self.batch_tokens.clear()
            self.in_loop = True

        def on_step_end(self, args, state, control, **kw):
            self.step_times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

        def on_train_end(self, args, state, control, **kw):
            self.in_loop = False  # the final-loss guard collates one more batch after the loop
            self.t_end = time.perf_counter()
            self.cpu_end = _cpu()

    return Timer()


def count_tokens(timer, collate_fn, real_tokens):
    """Wrap a collate function so every batch's real token count lands in ``timer.batch_tokens``."""

    def wrapped(features):
        timer.record(real_tokens(features))
        return collate_fn(features)

    return wrapped


def steady_stats(timer) -> dict:
    """Loop and steady-state (first optimizer step excluded) throughput from the timer's records.

    With ``grad_accum = 1`` and ``dataloader_num_workers = 0`` the Trainer collates exactly one batch per step,
    right before it, so ``batch_tokens[i]`` are the tokens of step ``i``.
    """
    loop_s = timer.t_end - timer.t_begin
    tokens = sum(timer.batch_tokens)
    cpu_s = timer.cpu_end - timer.cpu_begin
    out = {"loop_seconds": round(loop_s, 2), "loop_tokens": tokens, "tokens_per_s_loop": round(tokens / loop_s, 1),
           "loop_cpu_seconds": round(cpu_s, 2), "tokens_per_cpu_s_loop": round(tokens / cpu_s, 1)}
    n = len(timer.step_times)
    if n >= 2 and len(timer.batch_tokens) >= n:
        dt = timer.step_times[-1] - timer.step_times[0]
        tok = sum(timer.batch_tokens[1:n])
        out.update(steady_seconds=round(dt, 2), steady_tokens=tok, tokens_per_s=round(tok / dt, 1),
                   steady_seconds_per_step=round(dt / (n - 1), 3))
    else:
        out.update(tokens_per_s=out["tokens_per_s_loop"], steady_seconds_per_step=None)
    return out


def _model_spec(spec: dict) -> str:
    if spec["model"] != "tiny":
        return spec["model"]
    from cotdistill.utils.tiny import build_tiny_model

    d = Path(spec["tmp"]) / "tiny_model"
    if not (d / "config.json").exists():
        build_tiny_model(d)
    return str(d)


def _config(spec: dict, model: str, share_prompt: bool = False):
    from cotdistill.config import Config

    return Config.model_validate({
        "method": "std_cot",
        "std_cot": {"paths": "all"},
        "train": {"model": model, "finetune": "lora", "lr": LR, "epochs": 1, "max_steps": -1,
                  "max_seq_len": spec["max_seq_len"], "questions_per_step": 1, "grad_accum": 1,
                  "paths_micro_batch": spec["k"], "logging_steps": 1, "save_steps": 100000,
                  "report_to": ["none"], "gradient_checkpointing": spec["grad_ckpt"], "seed": 0,
                  "scheduler": "constant", "warmup_ratio": 0.0, "share_prompt": share_prompt},
    })


def _encoded(spec: dict, tok, cfg, rows: list[dict] | None = None) -> list[dict]:
    """Every (question, path) sequence as our collator builds it: ids + completion mask."""
    from cotdistill.pathset.collate import PathCollator, build_label_vocab

    rows = rows if rows is not None else C.svamp_path_rows(spec["questions"], spec["k"])
    col = PathCollator(tok, max_seq_len=cfg.train.max_seq_len, student_instruction=cfg.data.student_instruction,
                       answer_suffix=cfg.data.answer_suffix, label_vocab=build_label_vocab(rows))
    out = []
    for row in rows:
        prompt = col.prompt_ids(row)
        head, value = col.suffix_segments(row["gold"])
        for p in row["paths"]:
            enc = col.encode(prompt, col._ids(p["text"]), head, value)
            out.append({"input_ids": enc["ids"], "completion_mask": [int(x != -100) for x in enc["labels"]]})
    return out


def patch_path_collator(timer) -> None:
    """Count the real tokens of every cotdistill batch (valid paths' attention mask)."""
    from cotdistill.pathset.collate import PathCollator

    orig = PathCollator.__call__

    def call(self, rows):
        batch = orig(self, rows)
        timer.record(batch["attention_mask"][batch["path_valid"]].sum())
        return batch

    PathCollator.__call__ = call


def trl_trainer(name: str, model, tok, seqs: list[dict], cfg, *, k: int, grad_ckpt: bool, bf16: bool, out_dir,
                callbacks: list):
    """A TRL ``SFTTrainer`` for variant ``name`` on the pre-tokenized ``seqs`` with cotdistill's LoRA settings."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    ds = Dataset.from_list(seqs)
    lc = cfg.train.lora
    mean_len = sum(len(s["input_ids"]) for s in seqs) / len(seqs)
    extra = {
        "trl_padding_free": {"padding_free": True, "max_length": None, "per_device_train_batch_size": k},
        "trl_packed": {"packing": True, "packing_strategy": "bfd",
                       "max_length": max(cfg.train.max_seq_len, int(k * mean_len + 63) // 64 * 64),
                       "per_device_train_batch_size": 1},
        "trl_padded": {"max_length": cfg.train.max_seq_len, "per_device_train_batch_size": k},
    }[name]
    args = SFTConfig(
        output_dir=str(out_dir), gradient_accumulation_steps=1, learning_rate=cfg.train.lr,
        weight_decay=cfg.train.weight_decay, lr_scheduler_type="constant", num_train_epochs=1,
        max_grad_norm=cfg.train.max_grad_norm, optim="adamw_torch", bf16=bf16,
        gradient_checkpointing=grad_ckpt,
        gradient_checkpointing_kwargs={"use_reentrant": False} if grad_ckpt else None,
        logging_steps=1, save_strategy="no", report_to="none", seed=0, data_seed=0,
        completion_only_loss=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        disable_tqdm=True, **extra,
    )
    return SFTTrainer(
        model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=callbacks,
        peft_config=LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, bias=lc.bias,
                               target_modules=list(lc.target_modules), task_type="CAUSAL_LM"),
    )


def worker(name: str, spec: dict, out: str) -> None:
    import torch

    from cotdistill.train.run import _bf16_enabled

    t_start = time.perf_counter()
    model_spec = _model_spec(spec)
    cfg = _config(spec, model_spec, share_prompt=name == "cotdistill_shared")
    bf16 = _bf16_enabled(True)
    timer = _timer_callback()
    tmp = Path(spec["tmp"])
    from cotdistill.models import load_model_and_tokenizer

    if name.startswith("cotdistill"):
        from cotdistill.train.run import train

        ds_dir = tmp / "paths"
        if not (ds_dir / "dataset_dict.json").exists():
            C.save_path_dataset(C.svamp_path_rows(spec["questions"], spec["k"]), ds_dir)
        _, tok, _ = load_model_and_tokenizer(model_spec, for_training=True)
        seqs = _encoded(spec, tok, cfg)
        run_dir = tmp / f"run-{name}"
        shutil.rmtree(run_dir, ignore_errors=True)
        patch_path_collator(timer)
        train(cfg, ds_dir, run_dir, resume=False, callbacks=[timer])
        steps = sum(1 for _ in open(run_dir / "dynamics.jsonl"))
    else:
        model, tok, _ = load_model_and_tokenizer(model_spec, dtype="float32", for_training=True,
                                                 attn_implementation=cfg.train.attn_implementation)
        seqs = _encoded(spec, tok, cfg)
        trainer = trl_trainer(name, model, tok, seqs, cfg, k=spec["k"], grad_ckpt=spec["grad_ckpt"], bf16=bf16,
                              out_dir=tmp / f"run-{name}", callbacks=[timer])
        trainer.data_collator = count_tokens(timer, trainer.data_collator,
                                             lambda feats: sum(len(f["input_ids"]) for f in feats))
        trainer.train()
        steps = trainer.state.global_step
    tokens = sum(len(s["input_ids"]) for s in seqs)
    loss_tokens = sum(sum(s["completion_mask"]) for s in seqs)
    st = steady_stats(timer)
    if st["loop_tokens"] != tokens:
        raise RuntimeError(f"{name}: the loop collated {st['loop_tokens']} tokens, the epoch has {tokens}")
    C.write_worker_result(out, {
        "variant": name, "steps": steps, "sequences": len(seqs), "tokens": tokens, "loss_tokens": loss_tokens,
        **st,
        "setup_seconds": round(timer.t_begin - t_start, 1), "bf16": bf16,
        "first_loss": timer.losses[0] if timer.losses else None,
        "last_loss": timer.losses[-1] if timer.losses else None,
        "torch_threads": torch.get_num_threads(),
    })


# ---------------------------------------------------------------------------------------------- driver side
def _round_ratios(rnd: dict[str, dict], ours: str, key: str) -> dict:
    """cotdistill ÷ each TRL variant (and ÷ the round's fastest TRL variant) on metric ``key`` in one round."""
    if ours not in rnd or "error" in rnd[ours]:
        return {}
    trl = {v: r for v, r in rnd.items() if v.startswith("trl") and "error" not in r}
    out = {v: round(rnd[ours][key] / r[key], 4) for v, r in trl.items()}
    if trl:
        best = max(trl, key=lambda v: trl[v][key])
        out["best_trl"], out["best_trl_variant"] = round(rnd[ours][key] / trl[best][key], 4), best
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model spec, or 'tiny' (random tiny Llama)")
    ap.add_argument("--questions", type=int, default=24, help="questions (= optimizer steps of cotdistill)")
    ap.add_argument("--k", type=int, default=4, help="paths per question")
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--no-grad-ckpt", action="store_true", help="disable gradient checkpointing (all variants)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all variants")
    a = C.parse_or_work(ap, worker)
    if a is None:
        return

    from cotdistill.models import resolve_model_path

    if a.model != "tiny":
        resolve_model_path(a.model)  # convert the GGUF once, outside the measured processes
    info0 = C.machine_info()
    print(json.dumps(info0, indent=1))
    variants = a.variants.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        spec = {"tmp": tmp, "model": a.model, "questions": a.questions, "k": a.k, "max_seq_len": a.max_seq_len,
                "grad_ckpt": not a.no_grad_ckpt}
        runs = C.run_rounds(__file__, variants, spec, a.rounds)
    info1 = C.machine_info()
    ours = "cotdistill_shared" if "cotdistill_shared" in variants else "cotdistill"
    rounds = []
    for i in range(a.rounds):
        rnd = {v: runs[v][i] for v in variants}
        rounds.append({"round": i + 1, "variants": rnd,
                       "speedup": _round_ratios(rnd, ours, "tokens_per_s_loop"),
                       "speedup_cpu": _round_ratios(rnd, ours, "tokens_per_cpu_s_loop"),
                       "speedup_steady": _round_ratios(rnd, ours, "tokens_per_s")})
    ok = {v: [r for r in runs[v] if "error" not in r] for v in variants}
    summary = {"ours": ours, "tokens_per_s": {}, "tokens_per_cpu_s": {}, "speedup": {}, "speedup_cpu": {}}
    for v in variants:
        summary["tokens_per_s"][v] = C.spread([r["tokens_per_s_loop"] for r in ok[v]])
        summary["tokens_per_cpu_s"][v] = C.spread([r["tokens_per_cpu_s_loop"] for r in ok[v]])
    for v in [x for x in variants if x.startswith("trl")] + ["best_trl"]:
        for key in ("speedup", "speedup_cpu"):
            summary[key][v] = C.spread([r[key][v] for r in rounds if v in r[key]])
    trl_meds = {v: summary["tokens_per_s"][v]["median"] for v in variants
                if v.startswith("trl") and summary["tokens_per_s"][v]["median"]}
    if trl_meds and summary["tokens_per_s"][ours]["median"]:
        best = max(trl_meds, key=trl_meds.get)
        summary["best_trl_by_median"] = best
        summary["speedup_vs_best_median"] = round(summary["tokens_per_s"][ours]["median"] / trl_meds[best], 4)
    first = next((r for v in variants for r in ok[v]), {})
    payload = {
        "date_utc": info0["date_utc"], "machine": info0, "machine_after": info1,
        "settings": {"model": a.model, "questions": a.questions, "k": a.k, "max_seq_len": a.max_seq_len,
                     "gradient_checkpointing": not a.no_grad_ckpt, "bf16_autocast": first.get("bf16"),
                     "lora": "r16 alpha32 dropout0.1 all linear", "lr": LR, "rounds": a.rounds, "variants": variants,
                     "data": "MCC-KD SVAMP rationales, one question (K paths) per step"},
        "rounds": rounds, "summary": summary,
    }
    print(json.dumps(summary, indent=1))
    if a.model == "tiny":  # a check of the script, not a measurement
        return
    C.save_result("train_vs_trl", "smollm2", payload)


if __name__ == "__main__":
    main()
