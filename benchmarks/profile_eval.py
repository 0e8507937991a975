"""Where evaluation time goes: cotdistill's HF backend (continuous batching) vs static ``generate`` batches.

    OMP_NUM_THREADS=1 python benchmarks/profile_eval.py --limit 48 --max-new-tokens 256 --batch-size 16
    python benchmarks/profile_eval.py --model tiny --limit 8 --max-new-tokens 16   # script check

The evaluation benchmark (``eval_vs_lmeval.py``) gives the ratio; this one says why it is what it is. For each mode
(``continuous``: our default; ``static``: the same backend with ``continuous=False``, i.e. ``model.generate`` on
static batches, as lm-eval's HF backend runs it) on the same questions, one process each:

* the time inside the model's forward (every prefill and decode step) vs everything else (sampling, cache
  bookkeeping, Python) — measured by wrapping ``model.forward``;
* row-steps: rows computed per decode step summed over steps, vs the new tokens kept — the work static batches
  spend on rows that have already ended (continuous batching replaces them at once, but pays for the tail: near
  the end of the run fewer than ``B`` rows remain);
* the top functions by internal time (cProfile).

Writes ``benchmarks/results/profile_eval-<label>-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MODES = ["continuous", "static"]


def worker(name: str, spec: dict, out: str) -> None:
    import torch

    from cotdistill.data.prompts import eval_user_prompt
    from cotdistill.data.registry import load_benchmark
    from cotdistill.evaluate.backends import EvalRequest
    from cotdistill.evaluate.backends.hf import HFBackend

    if spec["model"] == "tiny":
        from cotdistill.utils.tiny import build_tiny_model

        model_dir = Path(spec["tmp"]) / "tiny_model"
        if not (model_dir / "config.json").exists():
            build_tiny_model(model_dir)
    else:
        from cotdistill.models import resolve_model_path

        model_dir = resolve_model_path(spec["model"])
    be = HFBackend(str(model_dir), dtype=spec["dtype"], batch_size=spec["batch_size"],
                   continuous=None if name == "continuous" else False)
    exs = load_benchmark("gsm8k", limit=spec["limit"])
    reqs = [EvalRequest(ex.id, [{"role": "user", "content": eval_user_prompt(ex)}]) for ex in exs]

    fwd = {"seconds": 0.0, "calls": 0, "row_steps": 0}
    inner = be.model.forward

    # wraps: generate() reads forward's signature (logits_to_keep, cache arguments); a bare (*args, **kw) would make
    # it compute full-prompt logits, which changes both the work and, in bf16, some greedy tokens
    @functools.wraps(inner)
    def timed_forward(*args, **kw):
        ids = kw.get("input_ids", args[0] if args else None)
        t = time.perf_counter()
        try:
            return inner(*args, **kw)
        finally:
            fwd["seconds"] += time.perf_counter() - t
            fwd["calls"] += 1
            if ids is not None and ids.shape[1] == 1:  # a decode step: one token per row
                fwd["row_steps"] += int(ids.shape[0])

    be.model.forward = timed_forward
    prof = cProfile.Profile()
    t0, c0 = time.perf_counter(), C.cpu_seconds()
    prof.enable()
    outs = [o for chunk in be.generate(reqs, max_new_tokens=spec["max_new_tokens"]) for o in chunk]
    prof.disable()
    wall, cpu = time.perf_counter() - t0, C.cpu_seconds() - c0
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    kept = sum(o.n_tokens for o in outs)
    C.write_worker_result(out, {
        "mode": name, "continuous": be.continuous, "n": len(outs), "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2), "forward_seconds": round(fwd["seconds"], 2),
        "forward_share": round(fwd["seconds"] / wall, 3), "forward_calls": fwd["calls"],
        "decode_row_steps": fwd["row_steps"], "new_tokens_kept": kept,
        "row_steps_per_kept_token": round(fwd["row_steps"] / max(kept, 1), 3),
        "torch_threads": torch.get_num_threads(), "peak_rss_mib": C.peak_rss_mib(),
        "top_tottime": buf.getvalue().splitlines()[:40],
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model spec, or 'tiny'")
    ap.add_argument("--limit", type=int, default=48)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="bfloat16")
    a = C.parse_or_work(ap, worker)
    if a is None:
        return
    before = C.machine_info()
    with tempfile.TemporaryDirectory(prefix="bench-profile-eval-") as tmp:
        spec = {"model": a.model, "limit": a.limit, "max_new_tokens": a.max_new_tokens, "batch_size": a.batch_size,
                "dtype": a.dtype, "tmp": tmp}
        results = {m: C.run_worker(__file__, m, spec) for m in MODES}
    for m, r in results.items():
        print(m, {k: v for k, v in r.items() if k != "top_tottime"})
    if a.model != "tiny":
        C.save_result("profile_eval", "base", {"settings": {k: v for k, v in spec.items() if k != "tmp"},
                                                "date_utc": before["date_utc"], "machine": before, "machine_after": C.machine_info(),
                                                "modes": results})


if __name__ == "__main__":
    main()
