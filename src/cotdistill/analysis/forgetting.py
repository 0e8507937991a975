"""Forgetting (METHODS.md §6.8): OOD accuracy of base vs distilled, and linear CKA of their states.

The accuracy table comes from the evaluation summaries (``eval/<tag>/summary.json``); CKA compares
two models' last-layer states on identical teacher-forced inputs (questions + base responses).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cotdistill.errors import CotdistillError

# Fallback roles when the data registry cannot say (METHODS.md §5.2: ID math, OOD commonsense/science)
_ID = {"gsm8k", "svamp", "math500"}
_OOD = {"csqa", "strategyqa", "gpqa_diamond"}


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between ``x`` ``[N, D1]`` and ``y`` ``[N, D2]`` (rows = the same N inputs).

    ``CKA(X, Y) = ‖YᵀX‖_F² / (‖XᵀX‖_F ‖YᵀY‖_F)`` after centring each column. 1 = same structure up to
    rotation and isotropic scale; it is symmetric. Returns 0.0 when either matrix is constant.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise CotdistillError(f"analysis: CKA needs two matrices with the same rows, got {x.shape} and {y.shape}")
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    denom = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    if denom == 0:
        return 0.0
    return float(np.linalg.norm(y.T @ x, "fro") ** 2 / denom)


def benchmark_role(name: str, ood: list[str] | None = None) -> str:
    """``'id'`` or ``'ood'`` for a benchmark name (``gsm8k``, ``csqa:train`` ...).

    ``ood`` (``analysis.ood_benchmarks``) wins; then the data registry; then the METHODS.md §5.2 split.
    """
    base = name.split(":")[0]
    if ood and (name in ood or base in ood):
        return "ood"
    try:
        from cotdistill.data.registry import benchmark_info

        role = getattr(benchmark_info(base), "role", None)
        if role in ("id", "ood"):
            return role
    except Exception:  # registry absent or unknown name (e.g. jsonl:PATH): use the fallback
        pass
    return "ood" if base in _OOD else "id"


def load_eval_summaries(eval_dir: str | Path) -> dict[str, dict[str, dict]]:
    """``{tag: {benchmark: summary}}`` from ``eval_dir/<tag>/summary.json`` (or per-benchmark summaries).

    ``summary.json`` may map benchmark -> summary directly or hold them under ``"benchmarks"``.
    """
    eval_dir = Path(eval_dir)
    out: dict[str, dict[str, dict]] = {}
    if not eval_dir.is_dir():
        return out
    for tag_dir in sorted(p for p in eval_dir.iterdir() if p.is_dir() and ".stale-" not in p.name):
        benches: dict[str, dict] = {}
        summ = tag_dir / "summary.json"
        if summ.exists():
            try:
                data = json.loads(summ.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise CotdistillError(f"{summ}: not valid JSON ({e.msg})") from None
            if isinstance(data, dict) and isinstance(data.get("benchmarks"), dict):
                data = data["benchmarks"]
            if isinstance(data, dict):
                benches.update({k: v for k, v in data.items() if isinstance(v, dict) and "accuracy" in v})
        for p in sorted(tag_dir.glob("*.summary.json")):
            bench = p.name[: -len(".summary.json")]
            if bench not in benches:
                try:
                    benches[bench] = json.loads(p.read_text(encoding="utf-8"))
                except json.JSONDecodeError as e:
                    raise CotdistillError(f"{p}: not valid JSON ({e.msg})") from None
        if benches:
            out[tag_dir.name] = benches
    return out


def pick_base(tags: list[str]) -> str | None:
    """The reference model tag: ``base`` if present, else the first tag."""
    if not tags:
        return None
    return "base" if "base" in tags else tags[0]


def accuracy_table(
    summaries: dict[str, dict[str, dict]], ood: list[str] | None = None, base: str | None = None
) -> dict[str, Any]:
    """Models × benchmarks accuracy with 95% CIs, roles, deltas vs base, and ID/OOD averages.

    Returns ``{"base", "benchmarks": [{name, role}], "models": {tag: {bench: {accuracy, ci95, n,
    delta}}, "averages": {tag: {"id": float|None, "ood": float|None}}}`` (accuracies as fractions).
    """
    tags = list(summaries)
    base = base if base in summaries else pick_base(tags)
    names: list[str] = []
    for t in tags:
        names += [b for b in summaries[t] if b not in names]
    roles = {b: benchmark_role(b, ood) for b in names}
    first_seen = {b: i for i, b in enumerate(names)}
    names = sorted(names, key=lambda b: (roles[b] != "id", first_seen[b]))
    models: dict[str, dict] = {}
    averages: dict[str, dict] = {}
    for t in tags:
        row = {}
        for b in names:
            s = summaries[t].get(b)
            if s is None:
                continue
            acc = s.get("accuracy")
            ref = summaries.get(base, {}).get(b) if base else None
            delta = None
            if t != base and ref is not None and acc is not None and ref.get("accuracy") is not None:
                delta = float(acc) - float(ref["accuracy"])
            row[b] = {"accuracy": acc, "ci95": s.get("ci95"), "n": s.get("n"), "correct": s.get("correct"),
                      "delta": delta}
        models[t] = row
        avg = {}
        for role in ("id", "ood"):
            vals = [row[b]["accuracy"] for b in names if roles[b] == role and b in row and row[b]["accuracy"] is not None]
            avg[role] = float(np.mean(vals)) if vals else None
        averages[t] = avg
    return {"base": base, "benchmarks": [{"name": b, "role": roles[b]} for b in names], "models": models,
            "averages": averages}
