"""GPU check: training throughput and MFU of cotdistill vs TRL, MIND/COMPACT overhead, packing equivalence on CUDA.

Run through ``benchmarks/gpu_check.sh`` (≤ 8 minutes on one H100/H200). Two steps:

    python benchmarks/gpu_check.py prepare [--wheels]   # here (CPU, with the data dir): .gpu_bundle/ (+ .whl/)
    bash benchmarks/gpu_check.sh                        # on the device: carry [".gpu_bundle", ".whl"]
    bash benchmarks/gpu_check.sh --dry-run              # anywhere: tiny shapes on CPU, seconds (tests use it)

The device has no internet and no data dir, so ``prepare`` writes a bundle (a few MB, git-ignored): the student
tokenizer (SmolLM2's; its ids fit the Qwen vocabulary), the path rows (MCC-KD SVAMP, Q questions × K rationales,
answer line stripped) and the MiniLM encoder's config and tokenizer (MIND's encoder is built with random weights
there: its 90 MB of weights would not fit the 64 MiB that travels, and a speed check does not need them).
``--wheels`` also downloads, for the device's Python 3.12, the packages its image lacks (datasets, pydantic, trl,
...) into ``.whl/``.

``run``: students are random-initialised from the configs of real architectures (Qwen2.5-0.5B and -1.5B shapes;
weights fp32 as cotdistill trains them, bf16 autocast, SDPA attention, LoRA r16 on every linear layer, gradient
checkpointing as cotdistill's default), one epoch over the bundle's questions, one question (its K paths) per step.
Per architecture: Std-CoT through ``cotdistill.train.run.train`` (``train.share_prompt`` on), the same sequences
through TRL's ``SFTTrainer`` (padded, padding-free, BFD packing; the 1.5B model only the variant that was fastest on
0.5B), MIND and COMPACT through ``train``; steady tokens/s excludes the first ``--warmup-steps`` steps (CUDA
warm-up); MFU = model FLOPs per token × tokens/s ÷ the GPU's dense bf16 peak, with model FLOPs per token =
4 × (matmul parameters) for LoRA (forward + input gradients; the frozen weights get no weight gradient) + the
causal attention term 3 × 2 × layers × hidden × mean context (recomputation under gradient checkpointing is not
counted: MFU, not hardware utilisation). Then the packing equivalence: packed vs unpacked ``forward_logits``,
per-path CE and LoRA gradients of the 0.5B model on CUDA in fp32 (TF32 off), and the per-path CE under bf16
autocast. Writes ``gpu_check.json`` (and ``gpu_check-<gpu>-<stamp>.json`` in the result-file format of
``make_results.py``) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / ".gpu_bundle"
WHEELS = ROOT / ".whl"
# Shapes from the published config.json of each model (random weights here).
ARCHS = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True,
                         max_position_embeddings=32768, rope_theta=1000000.0, rms_norm_eps=1e-6),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=2048),
}
TRL_VARIANTS = ["trl_padded", "trl_padding_free", "trl_packed"]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks
# Packages the device image lacks (its package list: /work/.library/device/KINDS.md); pure Python except
# pydantic-core. Versions as in this project's environment.
DEVICE_WHEELS = ["datasets", "dill", "multiprocess", "pydantic", "pydantic-core", "annotated-types",
                 "typing-inspection", "trl", "gguf", "rapidfuzz", "math-verify", "latex2sympy2-extended",
                 "antlr4-python3-runtime"]


# ------------------------------------------------------------------------------------------------ prepare (CPU)
def prepare(bundle: Path, questions: int, k: int, tokenizer: str, wheels: bool) -> None:
    """Write the bundle the device needs (and, with ``wheels``, download the missing packages)."""
    import _common as C

    from cotdistill.models import load_tokenizer, resolve_model_path

    bundle.mkdir(parents=True, exist_ok=True)
    tok_src = tokenizer if Path(tokenizer).is_dir() else str(resolve_model_path(tokenizer))
    load_tokenizer(tok_src).save_pretrained(bundle / "tokenizer")
    rows = C.svamp_path_rows(questions, k)
    (bundle / "rows.json").write_text(json.dumps(rows))
    from cotdistill.methods.mind.encoder import resolve_encoder_path

    enc = Path(resolve_encoder_path("all-MiniLM-L6-v2"))
    (bundle / "encoder").mkdir(exist_ok=True)
    for f in enc.iterdir():  # config and tokenizer, no weights
        if f.is_file() and not f.name.endswith((".safetensors", ".bin", ".onnx", ".pt")):
            shutil.copy2(f, bundle / "encoder" / f.name)
    print(f"bundle: {bundle} ({sum(f.stat().st_size for f in bundle.rglob('*') if f.is_file()) / 2**20:.1f} MiB), "
          f"{len(rows)} questions x {k} paths")
    if wheels:
        from importlib.metadata import version

        WHEELS.mkdir(exist_ok=True)
        plats = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]
        for name in DEVICE_WHEELS:
            try:
                spec = f"{name}=={version(name)}"
            except Exception:  # noqa: BLE001 - not installed here: the device does not need it either
                continue
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                   "3.12", "--implementation", "cp", *[a for p in plats for a in ("--platform", p)], "-d",
                   str(WHEELS), spec]
            subprocess.run(cmd, check=True)
        print(f"wheels: {WHEELS} ({sum(f.stat().st_size for f in WHEELS.iterdir()) / 2**20:.1f} MiB)")


# ------------------------------------------------------------------------------------------------ run (device)
def matmul_params(cfg) -> int:
    """Parameters that take part in a matmul per token: attention and MLP projections, and the LM head."""
    d, ff, n_l = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    attn = d * cfg.num_attention_heads * hd * 2 + d * cfg.num_key_value_heads * hd * 2  # q, o + k, v
    return n_l * (attn + 3 * d * ff) + d * cfg.vocab_size


def flops_per_token(cfg, mean_context: float, lora: bool = True) -> float:
    """Model FLOPs per trained token (see the module docstring)."""
    dense = (4 if lora else 6) * matmul_params(cfg)
    attention = 3 * 2 * cfg.num_hidden_layers * cfg.hidden_size * mean_context
    return dense + attention


def make_student(arch: str, out: Path, tok_dir: Path, device: str) -> None:
    """A random-initialised student folder (fp32 weights) with the bundle tokenizer and its chat template."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(tok_dir)
    shape = dict(ARCHS[arch])
    shape.setdefault("vocab_size", len(tok))
    cfg = Qwen2Config(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, attn_implementation="sdpa")
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model


def _config(model_dir: str, method: str, a, encoder_dir: str):
    from cotdistill.config import Config

    return Config.model_validate({
        "method": method, "std_cot": {"paths": "all"}, "mcc_kd": {"max_rationales": max(2, a.k)},
        "mind": {"encoder": {"name": encoder_dir}},
        "train": {"model": model_dir, "finetune": "lora", "lr": 1e-4, "epochs": 1, "max_steps": -1,
                  "max_seq_len": a.max_seq_len, "questions_per_step": 1, "grad_accum": 1,
                  "paths_micro_batch": a.k, "logging_steps": 1, "save_steps": 100000, "report_to": ["none"],
                  "gradient_checkpointing": True, "seed": 0, "scheduler": "constant", "warmup_ratio": 0.0},
    })


def _sync_callback():
    import torch
    from transformers import TrainerCallback

    class Sync(TrainerCallback):  # step times are host times: wait for the GPU before the timer reads the clock
        def on_step_end(self, args, state, control, **kw):
            if torch.cuda.is_available():
                torch.cuda.synchronize()

    return Sync()


def _steady(timer, warmup: int) -> dict:
    """Tokens/s over steps warmup+1..N (batch_tokens[i] are step i's tokens)."""
    n = len(timer.step_times)
    w = min(warmup, n - 1)
    dt = timer.step_times[-1] - timer.step_times[w - 1] if w >= 1 else timer.t_end - timer.t_begin
    tok = sum(timer.batch_tokens[w:n])
    return {"steps": n, "tokens": sum(timer.batch_tokens[:n]), "steady_tokens": tok,
            "steady_seconds": round(dt, 3), "tokens_per_s": round(tok / dt, 1),
            "loop_seconds": round(timer.t_end - timer.t_begin, 2)}


def run_variant(name: str, model_dir: Path, rows: list[dict], a, work: Path, encoder_dir: str) -> dict:
    """One training run (cotdistill method or TRL variant) in this process; throughput and peak GPU memory."""
    import torch

    import train_vs_trl as T
    from cotdistill.models import load_model_and_tokenizer
    from cotdistill.train.run import _bf16_enabled, train

    method = name if not name.startswith("trl") else "std_cot"
    cfg = _config(str(model_dir), method, a, encoder_dir)
    timer = T._timer_callback()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out_dir = work / f"run-{model_dir.name}-{name}"
    shutil.rmtree(out_dir, ignore_errors=True)
    prep = {"s": 0.0}
    if not name.startswith("trl"):
        import cotdistill.methods.registry as registry

        orig_get = registry.get_method

        def timed(n, c):
            m = orig_get(n, c)
            inner = m.prepare

            def prepare_(*x, **kw):
                t = time.perf_counter()
                try:
                    return inner(*x, **kw)
                finally:
                    prep["s"] += time.perf_counter() - t

            m.prepare = prepare_
            return m

        from cotdistill.pathset.collate import PathCollator

        registry.get_method = timed
        orig_call = PathCollator.__call__
        T.patch_path_collator(timer)
        try:
            train(cfg, work / "paths", out_dir, resume=False, callbacks=[_sync_callback(), timer])
        finally:
            registry.get_method, PathCollator.__call__ = orig_get, orig_call
    else:
        model, tok, _ = load_model_and_tokenizer(str(model_dir), dtype="float32", for_training=True,
                                                 attn_implementation="sdpa")
        seqs = T._encoded({"k": a.k}, tok, cfg, rows=rows)
        trainer = T.trl_trainer(name, model, tok, seqs, cfg, k=a.k, grad_ckpt=True, bf16=_bf16_enabled(True),
                                out_dir=out_dir, callbacks=[_sync_callback(), timer])
        trainer.data_collator = T.count_tokens(timer, trainer.data_collator,
                                               lambda feats: sum(len(f["input_ids"]) for f in feats))
        trainer.train()
        del trainer, model
    res = {"variant": name, **_steady(timer, a.warmup_steps), "prepare_seconds": round(prep["s"], 2),
           "wall_seconds": round(time.perf_counter() - t0, 1)}
    if torch.cuda.is_available():
        res["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
    shutil.rmtree(out_dir, ignore_errors=True)
    return res


def packing_equivalence(model_dir: Path, rows: list[dict], a, device: str) -> dict:
    """Packed vs unpacked forward on ``device``: logits, per-path CE and LoRA gradients (fp32), CE under bf16."""
    import torch
    from peft import LoraConfig, get_peft_model

    from cotdistill.methods.std_cot import forward_logits, path_ce
    from cotdistill.models import load_model_and_tokenizer
    from cotdistill.pathset.collate import PathCollator, build_label_vocab

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model, tok, _ = load_model_and_tokenizer(str(model_dir), dtype="float32", for_training=True,
                                             attn_implementation="sdpa")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, init_lora_weights=False,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"], task_type="CAUSAL_LM"))
    model.to(device).eval()
    sel = rows[:2]
    from cotdistill.config import DataConfig

    dc = DataConfig()
    col = PathCollator(tok, max_seq_len=a.max_seq_len, student_instruction=dc.student_instruction,
                       answer_suffix=dc.answer_suffix, label_vocab=build_label_vocab(sel), share_prompt=True)
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in col(sel).items()}
    plain = {**batch, "share_prompt": torch.zeros_like(batch["share_prompt"])}
    idx = batch["path_valid"].nonzero(as_tuple=True)[0]

    def run(b):
        model.zero_grad(set_to_none=True)
        ce = path_ce(model, b, idx)
        ce.sum().backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            logits = forward_logits(model, b, idx)
        return ce.detach(), grads, logits

    ce_p, g_p, lg_p = run(batch)
    ce_u, g_u, lg_u = run(plain)
    real = batch["attention_mask"][idx][:, : lg_p.size(1)].bool()
    out = {"device": device, "paths": int(idx.numel()),
           "max_abs_logit_diff": float((lg_p[real] - lg_u[real]).abs().max()),
           "max_abs_ce_diff": float((ce_p - ce_u).abs().max()),
           "max_rel_grad_diff": max(float((g_p[n] - g_u[n]).norm() / g_u[n].norm().clamp_min(1e-12)) for n in g_p)}
    with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16), torch.no_grad():
        cb_p, cb_u = path_ce(model, batch, idx), path_ce(model, plain, idx)
    out["bf16_max_rel_ce_diff"] = float(((cb_p - cb_u).abs() / cb_u.abs()).max())
    out["passed"] = (out["max_abs_logit_diff"] < 1e-3 and out["max_abs_ce_diff"] < 1e-4
                     and out["max_rel_grad_diff"] < 1e-3 and out["bf16_max_rel_ce_diff"] < 2e-2)
    del model
    return out


def run(a) -> dict:
    import torch

    t_start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not a.dry_run else "cpu"
    bundle = Path(a.bundle)
    rows = json.loads((bundle / "rows.json").read_text())[: a.questions]
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    import _common as C

    C.save_path_dataset(rows, work / "paths")
    # MIND's encoder: the MiniLM architecture with random weights (see the module docstring)
    from transformers import AutoConfig, AutoModel

    encoder_dir = work / "encoder"
    shutil.copytree(bundle / "encoder", encoder_dir, dirs_exist_ok=True)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.from_pretrained(encoder_dir)).save_pretrained(encoder_dir)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)
    info = {"gpu": gpu, "torch": torch.__version__, "device": device, "peak_bf16_tflops": peak,
            "bf16_supported": bool(device == "cuda" and torch.cuda.is_bf16_supported())}
    try:
        import transformers

        info["transformers"] = transformers.__version__
        import trl

        info["trl"] = trl.__version__
        have_trl = True
    except ImportError as e:
        info["trl_missing"] = str(e)
        have_trl = False
    print(json.dumps(info), flush=True)
    archs = ["tiny"] if a.dry_run else a.archs.split(",")
    results: dict = {"info": info, "settings": vars(a), "archs": {}}

    def over_budget() -> bool:
        return time.perf_counter() - t_start > a.budget_s

    fastest_trl = None
    for arch in archs:
        model_dir = work / f"student-{arch}"
        t0 = time.perf_counter()
        make_student(arch, model_dir, bundle / "tokenizer", device)
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model_dir)
        r: dict = {"make_seconds": round(time.perf_counter() - t0, 1), "matmul_params": matmul_params(cfg),
                   "variants": {}}
        results["archs"][arch] = r
        trl_here = TRL_VARIANTS if (fastest_trl is None or a.dry_run) else [fastest_trl]
        order = ["std_cot"] + (trl_here if have_trl else []) + ["mind", "compact"]
        for name in order:
            if over_budget():
                r["variants"][name] = {"skipped": "time budget"}
                continue
            try:
                r["variants"][name] = run_variant(name, model_dir, rows, a, work, str(encoder_dir))
            except Exception as e:  # noqa: BLE001 - record and go on: the other figures still count
                r["variants"][name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            print(arch, name, json.dumps(r["variants"][name]), flush=True)
        ok = {n: v for n, v in r["variants"].items() if "tokens_per_s" in v}
        if "std_cot" in ok:
            tokens, seqs = ok["std_cot"]["tokens"], a.questions * a.k
            mean_ctx = tokens / max(1, seqs) / 2  # causal: a token attends to half its sequence on average
            fpt = flops_per_token(cfg, mean_ctx)
            r["flops_per_token"] = fpt
            for n, v in ok.items():
                v["mfu"] = round(v["tokens_per_s"] * fpt / (peak * 1e12), 4) if peak else None
            trl_ok = {n: v for n, v in ok.items() if n.startswith("trl")}
            if trl_ok:
                best = max(trl_ok, key=lambda n: trl_ok[n]["tokens_per_s"])
                fastest_trl = fastest_trl or best
                r["speedup_vs_fastest_trl"] = round(ok["std_cot"]["tokens_per_s"] / trl_ok[best]["tokens_per_s"], 3)
                r["fastest_trl"] = best
            for m in ("mind", "compact"):
                if m in ok:
                    r[f"{m}_time_per_token_vs_std_cot"] = round(ok["std_cot"]["tokens_per_s"] / ok[m]["tokens_per_s"], 3)
        if arch == archs[0] and not over_budget():
            try:
                r["packing_equivalence"] = packing_equivalence(model_dir, rows, a, device)
            except Exception as e:  # noqa: BLE001
                r["packing_equivalence"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
            print(arch, "packing", json.dumps(r["packing_equivalence"]), flush=True)
        shutil.rmtree(model_dir, ignore_errors=True)
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    first = results["archs"].get(archs[0], {})
    results["summary"] = {
        "headline": ", ".join(f"{arch}: std_cot {v['variants'].get('std_cot', {}).get('tokens_per_s')} tok/s "
                              f"(MFU {v['variants'].get('std_cot', {}).get('mfu')}), "
                              f"{v.get('speedup_vs_fastest_trl')}× {v.get('fastest_trl')}"
                              for arch, v in results["archs"].items()),
        "packing_equivalence_passed": first.get("packing_equivalence", {}).get("passed"),
    }
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="write the bundle (CPU machine with the data dir)")
    p.add_argument("--bundle", default=str(BUNDLE))
    p.add_argument("--questions", type=int, default=32)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--tokenizer", default="smollm2-135m-instruct", help="model spec or folder")
    p.add_argument("--wheels", action="store_true", help="also download the device's missing packages to .whl/")
    r = sub.add_parser("run", help="the check (on the device; --dry-run: tiny shapes on CPU)")
    r.add_argument("--bundle", default=str(BUNDLE))
    r.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"))
    r.add_argument("--work", default="/tmp/cotdistill-gpu-check")
    r.add_argument("--archs", default="qwen2.5-0.5b,qwen2.5-1.5b")
    r.add_argument("--questions", type=int, default=32)
    r.add_argument("--k", type=int, default=4)
    r.add_argument("--max-seq-len", type=int, default=512)
    r.add_argument("--warmup-steps", type=int, default=3)
    r.add_argument("--budget-s", type=float, default=420, help="skip remaining runs after this many seconds")
    r.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU: checks the script, no numbers")
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(Path(a.bundle), a.questions, a.k, a.tokenizer, a.wheels)
        return
    if a.dry_run:
        a.questions, a.k, a.max_seq_len, a.warmup_steps = min(a.questions, 3), min(a.k, 2), 256, 1
    res = run(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(res, indent=1))
    if not a.dry_run:
        import _common as C

        label = res["info"]["gpu"].replace(" ", "_").replace("/", "_")[:40]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        payload = {"benchmark": "gpu_check", "label": label, "command": "bash benchmarks/gpu_check.sh",
                   "date_utc": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()), "machine": C.machine_info(),
                   "settings": res["settings"], "rounds": [], "summary": res["summary"], "result": res}
        (out / f"gpu_check-{label}-{stamp}.json").write_text(json.dumps(payload, indent=1, sort_keys=True))
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
