"""Std-CoT training throughput and peak memory: cotdistill vs TRL ``SFTTrainer`` on the same data and settings.

    python benchmarks/train_vs_trl.py --quick          # a few minutes on 2 CPU cores
    python benchmarks/train_vs_trl.py                   # longer, less noisy

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

Metric: trained tokens/s = real (non-padding) tokens / seconds. "steady" (the headline) excludes the first
optimizer step (one-off allocator/autocast/lazy-init costs that can reach seconds on a shared CPU): tokens of
steps 2..N (counted per collated batch) ÷ time from the end of step 1 to the end of step N. "whole loop" counts
every token of the epoch (identical for every variant: same sequences, one epoch) over the whole loop.
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
LR = 1e-4


# ---------------------------------------------------------------------------------------------- worker side
def _timer_callback():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def __init__(self):
            self.t_begin = self.t_end = None
            self.step_times: list[float] = []
            self.losses: list[float] = []

            self.batch_tokens: list[int] = []  # real tokens of each collated batch, in order (see count_tokens)

        def on_train_begin(self, args, state, control, **kw):
            self.t_begin = time.perf_counter()
            self.batch_tokens.clear()  # drop batches collated before the loop (MIND's L0 pass)

        def on_step_end(self, args, state, control, **kw):
            self.step_times.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

        def on_train_end(self, args, state, control, **kw):
            self.t_end = time.perf_counter()

    return Timer()


def count_tokens(timer, collate_fn, real_tokens):
    """Wrap a collate function so every batch's real token count lands in ``timer.batch_tokens``."""

    def wrapped(features):
        timer.batch_tokens.append(int(real_tokens(features)))
        return collate_fn(features)

    return wrapped


def steady_stats(timer) -> dict:
    """Loop and steady-state (first optimizer step excluded) throughput from the timer's records.

    With ``grad_accum = 1`` and ``dataloader_num_workers = 0`` the Trainer collates exactly one batch per step,
    right before it, so ``batch_tokens[i]`` are the tokens of step ``i``.
    """
    loop_s = timer.t_end - timer.t_begin
    tokens = sum(timer.batch_tokens)
    out = {"loop_seconds": round(loop_s, 2), "loop_tokens": tokens, "tokens_per_s_loop": round(tokens / loop_s, 1)}
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


def _encoded(spec: dict, tok, cfg) -> list[dict]:
    """Every (question, path) sequence as our collator builds it: ids + completion mask."""
    from cotdistill.pathset.collate import PathCollator, build_label_vocab

    rows = C.svamp_path_rows(spec["questions"], spec["k"])
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
        timer.batch_tokens.append(int(batch["attention_mask"][batch["path_valid"]].sum()))
        return batch

    PathCollator.__call__ = call


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
        from datasets import Dataset
        from peft import LoraConfig
        from trl import SFTConfig, SFTTrainer

        model, tok, _ = load_model_and_tokenizer(model_spec, dtype="float32", for_training=True,
                                                 attn_implementation=cfg.train.attn_implementation)
        seqs = _encoded(spec, tok, cfg)
        ds = Dataset.from_list(seqs)
        lc = cfg.train.lora
        k = spec["k"]
        mean_len = sum(len(s["input_ids"]) for s in seqs) / len(seqs)
        extra = {
            "trl_padding_free": {"padding_free": True, "max_length": None, "per_device_train_batch_size": k},
            "trl_packed": {"packing": True, "packing_strategy": "bfd",
                           "max_length": max(cfg.train.max_seq_len, int(k * mean_len + 63) // 64 * 64),
                           "per_device_train_batch_size": 1},
            "trl_padded": {"max_length": cfg.train.max_seq_len, "per_device_train_batch_size": k},
        }[name]
        args = SFTConfig(
            output_dir=str(tmp / f"run-{name}"), gradient_accumulation_steps=1, learning_rate=LR,
            weight_decay=cfg.train.weight_decay, lr_scheduler_type="constant", num_train_epochs=1,
            max_grad_norm=cfg.train.max_grad_norm, optim="adamw_torch", bf16=bf16,
            gradient_checkpointing=spec["grad_ckpt"],
            gradient_checkpointing_kwargs={"use_reentrant": False} if spec["grad_ckpt"] else None,
            logging_steps=1, save_strategy="no", report_to="none", seed=0, data_seed=0,
            completion_only_loss=True, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
            disable_tqdm=True, **extra,
        )
        trainer = SFTTrainer(
            model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[timer],
            peft_config=LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, bias=lc.bias,
                                   target_modules=list(lc.target_modules), task_type="CAUSAL_LM"),
        )
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
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small run (a few minutes on 2 cores)")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model spec, or 'tiny' (random tiny Llama)")
    ap.add_argument("--questions", type=int, default=None, help="questions (= optimizer steps of cotdistill)")
    ap.add_argument("--k", type=int, default=4, help="paths per question")
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--no-grad-ckpt", action="store_true", help="disable gradient checkpointing (all variants)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeat", type=int, default=None,
                    help="rounds over all variants, interleaved (default 1 quick, 2 full); the median is reported")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, json.loads(a.spec), a.out)
        return

    from cotdistill.models import resolve_model_path

    if a.model != "tiny":
        resolve_model_path(a.model)  # convert the GGUF once, outside the measured processes
    info0 = C.machine_info()
    print(json.dumps(info0, indent=1))
    q = a.questions or (12 if a.quick else 40)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        spec = {"tmp": tmp, "model": a.model, "questions": q, "k": a.k, "max_seq_len": a.max_seq_len,
                "grad_ckpt": not a.no_grad_ckpt}
        runs = C.run_rounds(__file__, a.variants.split(","), spec, a.repeat or (1 if a.quick else 2))
    info1 = C.machine_info()
    results = [C.median_run(rs, "tokens_per_s") for rs in runs.values()]
    ok = {r["variant"]: r for r in results if "error" not in r}
    # the speed-up column is relative to the faster cotdistill variant measured
    ours = max((ok[v] for v in ("cotdistill", "cotdistill_shared") if v in ok), key=lambda r: r["tokens_per_s"],
               default=None)
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["variant"], "failed: " + r["error"]] + [""] * 8)
            continue
        ratio = f"{ours['tokens_per_s'] / r['tokens_per_s']:.2f}x" if ours else ""
        allv = r.get("all_tokens_per_s", [])
        tps = f"{r['tokens_per_s']}" + (f" (runs: {', '.join(map(str, allv))})" if len(allv) > 1 else "")
        rows.append([r["variant"], r["steps"], r["tokens"], r["loop_seconds"], r["tokens_per_s_loop"], tps,
                     r["steady_seconds_per_step"], r["peak_rss_mib"], ratio,
                     f"{r['first_loss']:.3f} → {r['last_loss']:.3f}" if r.get("first_loss") is not None else ""])
    table = C.md_table(["variant", "steps", "tokens", "loop s", "tokens/s (whole loop)",
                        "tokens/s (steady, median)", "steady s/step", "peak RSS MiB",
                        f"{ours['variant'] if ours else 'cotdistill'} speed-up (steady)",
                        "logged loss first → last"], rows)
    model_desc = "tiny random Llama (cotdistill.utils.tiny)" if a.model == "tiny" else f"`{a.model}` (real weights)"
    bf16 = results[0].get("bf16") if results else None
    body = (f"Std-CoT training, {model_desc}, {q} questions × K={a.k} SVAMP (MCC-KD) rationales, one epoch, "
            f"LoRA r16, max_seq_len {a.max_seq_len}, bf16 autocast {bf16}, gradient checkpointing "
            f"{not a.no_grad_ckpt}. Speed-up = {ours['variant'] if ours else 'cotdistill'} tokens/s ÷ variant "
            "tokens/s (goal ≥ 1.2× vs TRL's best).\n\n"
            + table)
    if "cotdistill" in ok and "cotdistill_shared" in ok:
        sh, un = ok["cotdistill_shared"], ok["cotdistill"]
        body += (f"\n\n**train.share_prompt speed-up (cotdistill_shared ÷ cotdistill tokens/s, steady median): "
                 f"{sh['tokens_per_s'] / un['tokens_per_s']:.2f}×** (whole loop "
                 f"{sh['tokens_per_s_loop'] / un['tokens_per_s_loop']:.2f}×); peak RSS {sh['peak_rss_mib']} vs "
                 f"{un['peak_rss_mib']} MiB. Both train on identical sequences; the packed forward computes each "
                 "question's prompt once.")
    print(body)
    C.append_results("Training: cotdistill Std-CoT vs TRL SFTTrainer", info0, info1, body)


if __name__ == "__main__":
    main()
