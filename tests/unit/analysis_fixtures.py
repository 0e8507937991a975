"""Synthetic run folders for the analysis and report tests (no training or generation needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cotdistill.utils.io import append_jsonl, atomic_write_json, atomic_write_text

LABELS = ["intuitive", "analytical", "reflective"]


def write_dynamics(path: Path, steps: int = 30) -> None:
    """A MIND-like dynamics file: loss, lr, scalar loss terms and a per-label ``alpha`` dict."""
    recs = []
    for s in range(1, steps + 1):
        raw = [math.exp(0.05 * s * (i - 1)) for i in range(len(LABELS))]
        alpha = {lab: r / sum(raw) for lab, r in zip(LABELS, raw)}
        recs.append({
            "step": s, "epoch": s / steps, "loss": 2.0 * math.exp(-s / 10) + 0.3, "lr": 1e-4,
            "signals": {"ce": 1.5 * math.exp(-s / 12) + 0.2, "cons": 0.1 / s, "alpha": alpha},
        })
    append_jsonl(path, recs)


def write_eval(run_dir: Path, tag: str, model: str, *, n: int = 12, shift: int = 0,
               accs: dict[str, float] | None = None, adapter: str | None = None) -> None:
    """``eval/<tag>/`` with per-sample svamp responses and summaries for svamp (ID) and csqa (OOD)."""
    d = run_dir / "eval" / tag
    accs = accs or {"svamp": 0.5, "csqa": 0.4}
    rows = []
    words = ["apples", "trains", "books", "coins", "birds", "cars"]
    for i in range(n):
        w = words[(i + shift) % len(words)]
        rows.append({
            "id": f"svamp-{i}", "prompt": f"Jack has {i + 2} {w}. He buys {i} more. How many {w} now?",
            "output": f"He had {i + 2} {w} and bought {i}, so {i + 2} + {i} = {2 * i + 2}. The answer is: {2 * i + 2}",
            "extracted": str(2 * i + 2), "gold": str(2 * i + 2), "correct": (i + shift) % 2 == 0,
        })
    append_jsonl(d / "svamp.jsonl", rows)
    prov = {"model": model, "model_sha": "0" * 12, "adapter": adapter, "chat_template_sha": "abc", "backend": "hf",
            "dtype": "float32", "batch_size": 4, "seed": 0, "max_new_tokens": 64, "extractor_version": "1",
            "cotdistill_version": "0.1.0"}
    summary = {}
    for bench, acc in accs.items():
        total = 300 if bench == "svamp" else 100
        lo, hi = max(0.0, acc - 0.05), min(1.0, acc + 0.05)
        summary[bench] = {"benchmark": bench, "n": total, "correct": round(acc * total), "accuracy": acc,
                          "ci95": [lo, hi], "provenance": prov}
        atomic_write_json(d / f"{bench}.summary.json", summary[bench])
    atomic_write_json(d / "summary.json", summary)


def make_run(run_dir: Path, model: str, *, dynamics: bool = True, evals: bool = True, card: bool = True) -> Path:
    """A run folder with config, data card, dynamics and two evaluated models (base, mind)."""
    from cotdistill.config import Config, dump_config

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = Config.model_validate({"run": {"name": run_dir.name}, "method": "mind",
                                 "eval": {"benchmarks": ["svamp", "csqa"]},
                                 "analysis": {"n_questions": 12, "pca_dim": 5, "ood_benchmarks": ["csqa"]}})
    atomic_write_text(run_dir / "config.yaml", dump_config(cfg))
    if card:
        atomic_write_json(run_dir / "dataset" / "data_card.json", {
            "n_questions": {"train": 40, "dev": 5}, "n_paths": 120, "teachers": ["gpt-oss", "qwen"],
            "labels": {lab: 40 for lab in LABELS}, "filter": {"kept": 120, "dropped_incorrect": 14},
        })
    if dynamics:
        write_dynamics(run_dir / "dynamics.jsonl")
    if evals:
        write_eval(run_dir, "base", model, accs={"svamp": 0.40, "csqa": 0.30})
        write_eval(run_dir, "mind", model, shift=3, accs={"svamp": 0.55, "csqa": 0.28})
    return run_dir


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "analysis" / "metrics.json").read_text())
