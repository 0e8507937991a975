"""`cotdistill compare`: methods × seeds on the same curated data and evaluator, one table like the papers'.

Layout: the shared stages (rationales, dataset, base evaluation) live in ``runs/<name>/``; each method and
seed trains and evaluates in ``runs/<name>/<method>-s<seed>/`` through the same resumable pipeline, so a
crashed comparison resumes where it stopped. The table (``compare.md`` + ``compare.json``) gives, per
benchmark, the mean accuracy over seeds with a bootstrap 95% CI over questions (pooled over seeds), the
ID and OOD averages, and the gain over the base student.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cotdistill.config import Config
from cotdistill.errors import CotdistillError
from cotdistill.utils.io import atomic_write_json, atomic_write_text

SHARED_STAGES = {"rationales", "curate", "eval_base"}
METHOD_STAGES = {"train", "eval_student"}


def method_config(cfg: Config, method: str, seed: int) -> Config:
    """The config of one comparison cell: same data and evaluator, this method and training seed."""
    c = cfg.model_copy(deep=True)
    c.method = method
    c.train.seed = seed
    c.run.name = f"{cfg.run.name}/{method}-s{seed}"
    c.analysis.enabled = False
    c.report.enabled = False
    if method == "edit" and edit_continues_std_cot(cfg):
        # EDIT is a Std-CoT warm start followed by KRSL: continue this seed's Std-CoT cell rather than
        # training an identical Std-CoT a second time inside the EDIT cell.
        key = "init_adapter" if cfg.effective_train("edit").finetune == "lora" else "model"
        c.edit = c.edit.model_copy(
            update={"init_from": "none", "train": dict(cfg.edit.train) | {key: str(std_cot_student(cfg, seed))}}
        )
    return c


def edit_continues_std_cot(cfg: Config) -> bool:
    """Whether the EDIT cells start from the Std-CoT cells' students (both compared, EDIT warm-started)."""
    return cfg.edit.init_from == "std_cot" and "std_cot" in cfg.compare.methods


def std_cot_student(cfg: Config, seed: int) -> Path:
    """The Std-CoT cell's trained student (EDIT's starting point in a comparison)."""
    return cfg.run_dir() / f"std_cot-s{seed}" / "student"


def cell_order(methods: list[str]) -> list[str]:
    """Methods in run order: EDIT after Std-CoT, whose student it continues."""
    return sorted(methods, key=lambda m: (m == "edit", methods.index(m)))


def _correct_vector(eval_dir: Path, bench: str) -> dict[str, bool]:
    """question id → correct, from an evaluation's per-sample JSONL."""
    from cotdistill.evaluate.runner import bench_file_stem
    from cotdistill.utils.io import read_jsonl

    path = eval_dir / f"{bench_file_stem(bench)}.jsonl"
    if not path.exists():
        raise CotdistillError(f"{path}: evaluation output missing (run the comparison again to finish it)")
    return {str(r["id"]): bool(r["correct"]) for r in read_jsonl(path) if "id" in r}


def bootstrap_ci(matrix: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% CI of the mean accuracy, resampling questions; ``matrix`` is [n_seeds, n_questions] of 0/1."""
    n = matrix.shape[1]
    if n == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    per_q = matrix.mean(0)
    boots = per_q[rng.integers(0, n, size=(n_boot, n))].mean(1)
    return float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def build_table(shared_dir: Path, cells: dict[str, list[Path]], benchmarks: list[str]) -> dict[str, Any]:
    """Accuracy table: rows = base + methods, columns = benchmarks (+ ID/OOD averages, gain over base).

    Args:
        shared_dir: folder holding ``eval/base``.
        cells: method → its per-seed eval folders.
        benchmarks: benchmark specs (columns).
    """
    from cotdistill.data.registry import benchmark_info

    roles = {b: benchmark_info(b).role for b in benchmarks}
    rows: dict[str, dict[str, Any]] = {}
    base = {b: _correct_vector(shared_dir / "eval" / "base", b) for b in benchmarks}
    for name, dirs in [("base", [shared_dir / "eval" / "base"]), *cells.items()]:
        row: dict[str, Any] = {"seeds": len(dirs), "benchmarks": {}}
        for b in benchmarks:
            vecs = [base[b]] if name == "base" else [_correct_vector(d, b) for d in dirs]
            ids = sorted(set.intersection(*(set(v) for v in vecs)) & set(base[b]))
            m = np.array([[v[i] for i in ids] for v in vecs], dtype=float)
            acc = float(m.mean()) if m.size else float("nan")
            lo, hi = bootstrap_ci(m)
            base_acc = float(np.mean([base[b][i] for i in ids])) if ids else float("nan")
            row["benchmarks"][b] = {"accuracy": acc, "ci95": [lo, hi], "n": len(ids), "gain": acc - base_acc,
                                    "per_seed": m.mean(1).tolist() if m.size else []}
        for role in ("id", "ood"):
            accs = [row["benchmarks"][b]["accuracy"] for b in benchmarks if roles[b] == role]
            row[f"{role}_avg"] = float(np.mean(accs)) if accs else None
        rows[name] = row
    for name, row in rows.items():
        for role in ("id", "ood"):
            if row[f"{role}_avg"] is not None:
                row[f"{role}_gain"] = row[f"{role}_avg"] - rows["base"][f"{role}_avg"]
    return {"benchmarks": benchmarks, "roles": roles, "rows": rows}


def table_markdown(table: dict[str, Any]) -> str:
    """The papers' layout: one row per method, accuracy % (95% CI) per benchmark, ID/OOD averages, gain."""
    benches = table["benchmarks"]
    head = ["Method", *[f"{b} ({table['roles'][b].upper()})" for b in benches], "ID avg", "OOD avg", "ID gain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in table["rows"].items():
        cells = [name + (f" (×{row['seeds']} seeds)" if row["seeds"] > 1 else "")]
        for b in benches:
            c = row["benchmarks"][b]
            cells.append(f"{100 * c['accuracy']:.1f} [{100 * c['ci95'][0]:.1f}, {100 * c['ci95'][1]:.1f}]")
        for key in ("id_avg", "ood_avg"):
            cells.append("—" if row[key] is None else f"{100 * row[key]:.1f}")
        gain = row.get("id_gain")
        cells.append("—" if name == "base" or gain is None else f"{100 * gain:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_compare(cfg: Config, *, dry_run: bool = False, echo: Callable[[str], None] = print,
                methods: list[str] | None = None) -> dict[str, Any] | None:
    """Run the shared stages once, then every (method, seed) cell; write ``compare.{md,json}``.

    ``methods`` (a subset of ``compare.methods``) runs only those cells and tabulates only them: start one
    process per subset to use several devices, then run once more without it for the full table (finished
    cells are skipped). Start the second process after the first has finished the shared stages.

    Under a multi-process launch (``accelerate launch`` / ``torchrun``) every rank calls this: rank 0 runs
    the shared stages, the evaluations and writes the table; all ranks train each cell together (see
    :mod:`cotdistill.pipeline`). The other ranks return None.
    """
    from cotdistill.pipeline import run_pipeline
    from cotdistill.utils.dist import is_main

    say = echo if is_main() else (lambda s: None)  # the pipeline itself decides what other ranks print

    chosen = list(cfg.compare.methods)
    if methods is not None:
        unknown = [m for m in methods if m not in chosen]
        if unknown or not methods:
            raise CotdistillError(
                f"--methods: {', '.join(unknown) or '(empty)'} not in compare.methods ({', '.join(chosen)})"
            )
        chosen = [m for m in chosen if m in methods]
    shared = cfg.run_dir()
    say(f"== shared stages in {shared}")
    run_pipeline(cfg, dry_run=dry_run, echo=echo, only=SHARED_STAGES)
    cells: dict[str, list[Path]] = {}
    for method in cell_order(chosen):
        for seed in cfg.compare.seeds:
            mc = method_config(cfg, method, seed)
            if method == "edit" and edit_continues_std_cot(cfg) and not dry_run:
                start = std_cot_student(cfg, seed)
                if not (start / "adapter_config.json").exists() and not (start / "config.json").exists():
                    raise CotdistillError(
                        f"{start}: EDIT continues the Std-CoT cell of seed {seed}, which has not finished: "
                        "run the comparison with std_cot first"
                    )
            say(f"== {method}, seed {seed} in {mc.run_dir()}")
            run_pipeline(mc, dry_run=dry_run, echo=echo, only=METHOD_STAGES, shared_dir=shared)
            cells.setdefault(method, []).append(mc.run_dir() / "eval" / method)
    if dry_run or not is_main():
        return None
    table = build_table(shared, {m: cells[m] for m in chosen}, list(cfg.eval.benchmarks))
    table["provenance"] = {"config": json.loads(json.dumps(cfg.model_dump(mode="json"))), "seeds": cfg.compare.seeds}
    atomic_write_json(shared / "compare.json", table)
    md = table_markdown(table)
    atomic_write_text(shared / "compare.md", md)
    echo(md)
    return table
