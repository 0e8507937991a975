"""`cotdistill compare`: methods × seeds on the same curated data and evaluator, one table like the papers'.

Layout: the shared stages (rationales, dataset, base evaluation) live in ``runs/<name>/``; each method and
seed trains and evaluates in ``runs/<name>/<method>-s<seed>/`` through the same resumable pipeline, so a
crashed comparison resumes where it stopped. The table (``compare.md`` + ``compare.json``) gives, per
benchmark, the mean accuracy over seeds with a 95% CI (Wilson on few questions, else a bootstrap over
seeds and questions), the ID and OOD averages, the gain over the base student, and the paired
differences of every method to the base student and to Std-CoT: Δ with a seeds × questions bootstrap
CI, exact McNemar p per seed and a Holm-corrected verdict (see :func:`build_table`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotdistill.config import Config
from cotdistill.errors import CotdistillError
from cotdistill.evaluate.stats import (
    ALPHA,
    N_BOOT,
    PairedDifference,
    accuracy_interval,
    decide_family,
    paired_accuracy_difference,
)
from cotdistill.utils.io import atomic_write_json, atomic_write_text

SHARED_STAGES = {"rationales", "curate", "eval_base", "nll_base"}
METHOD_STAGES = {"train", "eval_student", "nll_student"}


def method_config(cfg: Config, row: str, seed: int) -> Config:
    """The config of one comparison cell: same data and evaluator, this row's method (a variant: with its
    ``set`` keys) and training seed. Cells live in ``<run>/<row>-s<seed>/``."""
    c = cfg.for_row(row)
    method = c.method
    c.train.seed = seed
    c.run.name = f"{cfg.run.name}/{row}-s{seed}"
    c.analysis.enabled = False
    c.report.enabled = False
    if method == "edit" and row == "edit" and edit_continues_std_cot(cfg):
        # EDIT is a Std-CoT warm start followed by KRSL: continue this seed's Std-CoT cell rather than
        # training an identical Std-CoT a second time inside the EDIT cell.
        key = "init_adapter" if cfg.effective_train("edit").finetune == "lora" else "model"
        c.edit = c.edit.model_copy(
            update={"init_from": "none", "train": dict(cfg.edit.train) | {key: str(std_cot_student(cfg, seed))}}
        )
    return c


def check_tuning(cfg: Config) -> str | None:
    """Refuse a settings search that scores test questions; for a table scored on part of a test split,
    the one-line note to print (such a table must never pick settings). None when nothing to say."""
    from cotdistill.data.registry import benchmark_info, is_dev_split

    tests = [b for b in cfg.eval.benchmarks if not is_dev_split(b)]
    if cfg.compare.tune and tests:
        raise CotdistillError(
            f"config: compare.tune: a settings search may only score dev splits (svamp:dev, gsm8k:dev); "
            f"eval.benchmarks has test questions: {', '.join(tests)}"
        )
    if cfg.eval.limit is not None and not cfg.compare.tune:
        partial = [b for b in tests if (benchmark_info(b).size or 0) > cfg.eval.limit]
        if partial:
            return (f"note: eval.limit {cfg.eval.limit} scores part of {', '.join(partial)}: read this table as a "
                    "demonstration; choose settings with compare.tune on a dev split, never from it")
    return None


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


def _seed_label(eval_dir: Path, index: int) -> str:
    """The training seed of a cell's eval folder (``<run>/<method>-s<seed>/eval/<method>``), else its position."""
    m = re.search(r"-s(\d+)$", eval_dir.parent.parent.name)
    return m.group(1) if m else str(index)


def _outcomes(vecs: list[dict[str, bool]], ids: list[str]) -> np.ndarray:
    """[n_seeds, n_questions] 0/1 matrix of ``vecs`` (one per seed) on the questions ``ids``."""
    return np.array([[v[i] for i in ids] for v in vecs], dtype=float).reshape(len(vecs), len(ids))


def _common_ids(vecs: list[dict[str, bool]]) -> list[str]:
    return sorted(set.intersection(*(set(v) for v in vecs)))


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def build_table(shared_dir: Path, cells: dict[str, list[Path]], benchmarks: list[str], *,
                reference: str | None = "std_cot", also: Sequence[str] = (), alpha: float = ALPHA,
                n_boot: int = N_BOOT) -> dict[str, Any]:
    """Accuracy table and paired differences: rows = base + methods, columns = benchmarks.

    Accuracy per row and benchmark: mean over seeds, with the interval of
    :func:`cotdistill.evaluate.stats.accuracy_interval` (Wilson below 100 questions, else a bootstrap
    over seeds and questions), ID/OOD averages and the gain over base.

    Paired differences (``table["paired"][target][benchmark][method]``): every method against the base
    student and against ``reference`` (a row name; None or absent → that comparison is skipped with a
    note), on the questions both sides answered, with
    :func:`cotdistill.evaluate.stats.paired_accuracy_difference` (Δ, hierarchical bootstrap CI over
    seeds and questions, exact McNemar p per seed, sign-flip p over seeds) and Holm over one family =
    the methods compared with the same target on the same benchmark (:func:`cotdistill.evaluate.stats.decide_family`).
    Per-seed outcomes go into the resampling as they are: no averaging per question first.

    Args:
        shared_dir: folder holding ``eval/base``.
        cells: method → its per-seed eval folders (``<run>/<method>-s<seed>/eval/<method>``; the seed
            number in that name pairs seeds between methods; rows may have different seed counts).
        benchmarks: benchmark specs (columns).
        reference: the second comparison target (default Std-CoT).
        also: further targets (``compare.also_vs``), each its own Holm family.
        alpha: test level, 1 − interval coverage.
        n_boot: bootstrap replicates per interval.
    """
    from cotdistill.data.registry import benchmark_info

    roles = {b: benchmark_info(b).role for b in benchmarks}
    base_dir = shared_dir / "eval" / "base"
    seeds: dict[str, list[str]] = {"base": ["base"]}
    outcomes: dict[str, dict[str, list[dict[str, bool]]]] = {
        "base": {b: [_correct_vector(base_dir, b)] for b in benchmarks}}
    for name, dirs in cells.items():
        seeds[name] = [_seed_label(d, i) for i, d in enumerate(dirs)]
        outcomes[name] = {b: [_correct_vector(d, b) for d in dirs] for b in benchmarks}
    rows: dict[str, dict[str, Any]] = {}
    for name, per_bench in outcomes.items():
        row: dict[str, Any] = {"seeds": len(seeds[name]), "benchmarks": {}}
        if name != "base":
            row["seed_labels"] = seeds[name]
        for b in benchmarks:
            base_vec = outcomes["base"][b][0]
            ids = [i for i in _common_ids(per_bench[b]) if i in base_vec]
            m = _outcomes(per_bench[b], ids)
            acc = float(m.mean()) if m.size else float("nan")
            lo, hi, how = accuracy_interval(m, alpha=alpha, n_boot=n_boot)
            base_acc = float(np.mean([base_vec[i] for i in ids])) if ids else float("nan")
            row["benchmarks"][b] = {"accuracy": _num(acc), "ci95": [_num(lo), _num(hi)], "ci_method": how,
                                    "n": len(ids), "gain": _num(acc - base_acc),
                                    "per_seed": m.mean(1).tolist() if m.size else []}
        for role in ("id", "ood"):
            accs = [row["benchmarks"][b]["accuracy"] for b in benchmarks if roles[b] == role]
            accs = [a for a in accs if a is not None]
            row[f"{role}_avg"] = float(np.mean(accs)) if accs else None
        rows[name] = row
    for name, row in rows.items():
        for role in ("id", "ood"):
            if row[f"{role}_avg"] is not None and rows["base"][f"{role}_avg"] is not None:
                row[f"{role}_gain"] = row[f"{role}_avg"] - rows["base"][f"{role}_avg"]

    notes: list[str] = []
    paired: dict[str, dict[str, dict[str, Any]]] = {}
    targets = _targets(reference, also)
    if not reference:
        notes.append("no reference method given: only the differences to the base student are shown")
    for target in targets:
        if target not in outcomes:
            notes.append(f"reference method {target!r} is not in this table: the differences to it are skipped")
            continue
        for b in benchmarks:
            family: dict[str, PairedDifference] = {}
            for name in outcomes:
                if name in ("base", target):
                    continue
                ids = _common_ids(outcomes[name][b] + outcomes[target][b])
                family[name] = paired_accuracy_difference(
                    _outcomes(outcomes[name][b], ids), _outcomes(outcomes[target][b], ids),
                    seeds[name], seeds[target], alpha=alpha, n_boot=n_boot)
                if not family[name].per_seed:
                    notes.append(f"{b}: {name} and {target} share no training seed: no per-seed McNemar test")
            decide_family(family, alpha)
            paired.setdefault(target, {})[b] = {m: r.as_dict() for m, r in family.items()}
    return {"benchmarks": benchmarks, "roles": roles, "rows": rows, "reference": reference, "paired": paired,
            "notes": notes, "statistics": {"alpha": alpha, "n_boot": n_boot, "description": STATISTICS_NOTE}}


def _targets(reference: str | None, also: Sequence[str]) -> list[str]:
    """The paired comparison targets in table order: the base student, the reference, then ``also``."""
    out = ["base"]
    for t in [reference, *also]:
        if t and t not in out:
            out.append(t)
    return out


STATISTICS_NOTE = (
    "Accuracy: mean over seeds; 95% CI by Wilson score interval (n = questions) below 100 questions, "
    "else a percentile bootstrap resampling seeds and questions. Paired differences: Δ = A − B on the "
    "questions both answered; 95% CI by a bootstrap resampling seeds (as pairs when both methods ran the "
    "same seed numbers) and questions (one draw shared by both methods); exact McNemar p per seed (A's "
    "seed against B's seed of the same number, or against the base student); the p given to Holm is a "
    "paired sign-flip permutation test on each question's difference of seed means (McNemar's test "
    "generalised to several seeds; the exact McNemar test when both have one seed); Holm over the methods "
    "compared with the same target on the same benchmark. Verdict better/worse: Holm p < alpha and the CI "
    "excludes 0; else not separable."
)


def _pts(x: float, signed: bool = False) -> str:
    """A fraction in percentage points, one decimal (rounded first so that −1e-17 prints as 0.0, not −0.0)."""
    return ("{:+.1f}" if signed else "{:.1f}").format(round(100 * x, 1) + 0.0)


def _pct_ci(lo: float | None, hi: float | None, signed: bool = False) -> str:
    if lo is None or hi is None:
        return "[—]"
    return f"[{_pts(lo, signed)}, {_pts(hi, signed)}]"


def _p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def table_markdown(table: dict[str, Any]) -> str:
    """The papers' layout (one row per method, accuracy % with 95% CI per benchmark, ID/OOD averages,
    gain), then the paired differences to the base student and to the reference method."""
    benches = table["benchmarks"]
    head = ["Method", *[f"{b} ({table['roles'][b].upper()})" for b in benches], "ID avg", "OOD avg", "ID gain"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    wilson = False
    for name, row in table["rows"].items():
        cells = [name + (f" (×{row['seeds']} seeds)" if row["seeds"] > 1 else "")]
        for b in benches:
            c = row["benchmarks"][b]
            mark = "ʷ" if c.get("ci_method") == "wilson" else ""
            wilson = wilson or bool(mark)
            acc = "—" if c["accuracy"] is None else f"{100 * c['accuracy']:.1f}"
            cells.append(f"{acc} {_pct_ci(*c['ci95'])}{mark}")
        for key in ("id_avg", "ood_avg"):
            cells.append("—" if row[key] is None else f"{100 * row[key]:.1f}")
        gain = row.get("id_gain")
        cells.append("—" if name == "base" or gain is None else f"{100 * gain:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    for name in table.get("rows_not_run") or []:
        lines.append("| " + " | ".join([name] + ["not run"] * (len(head) - 1)) + " |")
    lines.append("")
    lines.append("Accuracy in %, mean over seeds, 95% CI in brackets: "
                 + ("Wilson score interval (ʷ) below 100 questions, otherwise " if wilson else "")
                 + "bootstrap over seeds and questions.")
    paired = table.get("paired") or {}
    if paired:
        lines += ["", "### Paired differences", "",
                  "| Benchmark | Method | vs | Δ points [95% CI] | McNemar p per seed (A-only:B-only) "
                  "| p all seeds (Holm) | Verdict |",
                  "|---|---|---|---|---|---|---|"]
        for target, per_bench in paired.items():
            for b, family in per_bench.items():
                for name, r in family.items():
                    delta = "—" if r["delta"] is None else _pts(r["delta"], signed=True)
                    seeds = ", ".join(f"s{s['seed']}: {_p(s['p'])} ({s['a_only']}:{s['b_only']})"
                                      for s in r["per_seed"]) or "—"
                    lines.append(f"| {b} | {name} | {target} | {delta} {_pct_ci(*r['ci95'], signed=True)} | "
                                 f"{seeds} | {_p(r['p_holm'])} | {r['verdict']} |")
        lines += ["", STATISTICS_NOTE.replace("alpha", str(table.get("statistics", {}).get("alpha", ALPHA)))]
    for note in table.get("notes") or []:
        lines.append(f"- Note: {note}")
    return "\n".join(lines) + "\n"


def build_nll_table(shared_dir: Path, cells: dict[str, list[Path]], rset: Any, *, reference: str | None = "std_cot",
                    also: Sequence[str] = (), alpha: float = ALPHA, n_boot: int = N_BOOT) -> dict[str, Any]:
    """Held-out rationale NLL per row (mean over seeds and questions, lower is better) and the paired
    differences to the base student, to ``reference`` and to each of ``also`` (:func:`cotdistill.evaluate.stats.paired_metric_difference`:
    Δ with a seeds × questions bootstrap CI, Wilcoxon signed-rank, Holm over the rows compared with one target).

    Args:
        shared_dir: folder holding ``nll/base``.
        cells: row → its per-seed NLL folders (``<run>/<row>-s<seed>/nll/<method>``).
        rset: the :class:`~cotdistill.curate.heldout.RationaleSet` scored.
    """
    from cotdistill.evaluate.rationale_nll import nll_by_source, read_nll_rows
    from cotdistill.evaluate.stats import hierarchical_bootstrap, paired_metric_difference

    folders = {"base": [shared_dir / "nll" / "base"], **cells}
    raw = {name: [read_nll_rows(d, rset) for d in dirs] for name, dirs in folders.items()}
    vecs = {name: [{str(r["id"]): float(r["nll"]) for r in rows} for rows in per_seed] for name, per_seed in raw.items()}
    seeds = {"base": ["base"], **{name: [_seed_label(d, i) for i, d in enumerate(dirs)] for name, dirs in cells.items()}}

    def matrix(name: str, ids: list[str]) -> np.ndarray:
        return np.array([[v[i] for i in ids] for v in vecs[name]], dtype=float)

    rows = {}
    for name in vecs:
        ids = _common_ids(vecs[name])
        m = matrix(name, ids)
        lo, hi = np.percentile(hierarchical_bootstrap(m, n_boot=n_boot), [100 * alpha / 2, 100 * (1 - alpha / 2)])
        per_source = [nll_by_source(rows_of_seed) for rows_of_seed in raw[name]]
        by_source = {src: {"mean_nll": float(np.mean([p[src]["mean_nll"] for p in per_source if src in p])),
                           "n_rationales": per_source[0].get(src, {}).get("n_rationales", 0)}
                     for src in sorted({s for p in per_source for s in p})}
        rows[name] = {"mean_nll": float(m.mean()), "ci95": [float(lo), float(hi)], "n": len(ids),
                      "seeds": len(vecs[name]), "per_seed": m.mean(1).tolist(), "by_source": by_source}
    paired: dict[str, dict[str, Any]] = {}
    for target in [t for t in _targets(reference, also) if t in vecs]:
        family = {}
        for name in vecs:
            if name in ("base", target):
                continue
            ids = _common_ids(vecs[name] + vecs[target])
            family[name] = paired_metric_difference(matrix(name, ids), matrix(target, ids), seeds[name],
                                                    seeds[target], alpha=alpha, n_boot=n_boot)
        decide_family(family, alpha)
        paired[target] = {m: r.as_dict() for m, r in family.items()}
    return {"set": rset.name, "rows": rows, "paired": paired, "reference": reference}


def nll_markdown(nll: dict[str, Any]) -> str:
    """The held-out rationale NLL section of ``compare.md``."""
    targets = list(nll["paired"])
    head = ["Method", "mean NLL [95% CI]", *[f"Δ vs {t} [95% CI] (Holm p, verdict)" for t in targets]]
    lines = [f"### Held-out rationale NLL on `{nll['set']}` (lower is better)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in nll["rows"].items():
        cells = [name + (f" (×{row['seeds']} seeds)" if row["seeds"] > 1 else ""),
                 f"{row['mean_nll']:.4f} [{row['ci95'][0]:.4f}, {row['ci95'][1]:.4f}]"]
        for t in targets:
            r = nll["paired"][t].get(name)
            cells.append("—" if r is None or r["delta"] is None else
                         f"{r['delta']:+.4f} [{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}] ({_p(r['p_holm'])}, "
                         f"{r['verdict']})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Mean over questions (and seeds) of each question's mean token NLL of its held-out teacher "
              "rationales. Δ CI: bootstrap over seeds and questions; p: Wilcoxon signed-rank on each question's "
              "difference of seed means, Holm over the methods compared with one target; verdict better/worse "
              "needs Holm p < 0.05 and a CI excluding 0."]
    lines += _nll_by_source_lines(nll)
    return "\n".join(lines) + "\n"


MIN_SOURCE_RATIONALES = 10  # a per-source mean over fewer rationales is noise, not a teacher's style


def _nll_by_source_lines(nll: dict[str, Any]) -> list[str]:
    """Per-source means (teacher/perspective of the held-out rationales): whether a row's change comes from one
    teacher's style or from all of them. Sources with fewer than MIN_SOURCE_RATIONALES rationales are left out."""
    first = next(iter(nll["rows"].values()), {})
    sources = [s for s, v in (first.get("by_source") or {}).items() if s and v["n_rationales"] >= MIN_SOURCE_RATIONALES]
    if len(sources) < 2:
        return []
    head = ["Method", *[f"{s} (n={first['by_source'][s]['n_rationales']})" for s in sources]]
    out = ["", "Mean NLL by held-out source (mean over seeds; sources with at least "
           f"{MIN_SOURCE_RATIONALES} rationales):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in nll["rows"].items():
        bs = row.get("by_source") or {}
        out.append("| " + " | ".join([name, *[f"{bs[s]['mean_nll']:.4f}" if s in bs else "—" for s in sources]]) + " |")
    return out


def uniform_injected_share(cfg: Config, dataset_dir: Path) -> float | None:
    """The weight share an unweighted method gives injected paths: over the questions that have any, the mean
    of (injected paths / paths) among the paths ``cfg.method`` selects. None without injected paths."""
    from cotdistill.curate import load_path_dataset
    from cotdistill.methods.registry import get_method

    method = get_method(cfg.method, cfg)
    shares = []
    for row in load_path_dataset(dataset_dir)["train"]:
        paths = method.select_paths(row)
        n_inj = sum(1 for p in paths if p.get("injected"))
        if paths and n_inj:
            shares.append(n_inj / len(paths))
    return float(np.mean(shares)) if shares else None


def build_probe(cfg: Config, shared: Path, rows: list[str], table: dict[str, Any]) -> dict[str, Any]:
    """The teacher-compatibility probe (issue 14), per row and seed: the weight share that went to injected
    paths over training (α; MIND's kept set too), the share an unweighted method gives them, the row's
    held-out NLL and accuracy per seed, and where a weighted row's α went per source (teacher or perspective,
    with its training CE where logged). Writes ``injected_share.png`` (trajectories) into ``shared``."""
    from cotdistill.analysis.dynamics import injected_share, load_dynamics, plot_injected_share, weight_by_source

    out: dict[str, Any] = {"rows": {}}
    series: dict[str, dict] = {}
    uniforms = []
    for row in rows:
        rcfg = cfg.for_row(row)
        uni = uniform_injected_share(rcfg, shared / "dataset")
        entry: dict[str, Any] = {"method": rcfg.method, "uniform_share": uni, "seeds": {}}
        finished = table["rows"].get(row, {}).get("seed_labels")
        # only finished cells: a running cell's partial dynamics log would read as a result (and has no NLL)
        for seed in [s for s in cfg.compare.seeds if finished is None or str(s) in finished]:
            dyn = shared / f"{row}-s{seed}" / "dynamics.jsonl"
            recs = load_dynamics(dyn) if dyn.is_file() else []
            alpha, kept = injected_share(recs, "alpha"), injected_share(recs, "kept")
            cell = {"alpha": None if alpha is None else {k: v for k, v in alpha.items() if k not in ("steps", "share")},
                    "kept": None if kept is None else {k: v for k, v in kept.items() if k not in ("steps", "share")}}
            if alpha is not None:
                series[f"{row} s{seed}"] = alpha
                cell["by_source"] = weight_by_source(recs, "alpha")
            entry["seeds"][str(seed)] = cell
        if uni is not None and alpha is None:
            uniforms.append(uni)
        by_source = _mean_over_seeds([c["by_source"] for c in entry["seeds"].values() if c.get("by_source")])
        if by_source:
            entry["by_source"] = by_source
        out["rows"][row] = entry
    if series:
        out["plot"] = str(plot_injected_share(series, shared / "injected_share.png",
                                              uniform=float(np.mean(uniforms)) if uniforms else None).name)
    return out


def probe_markdown(probe: dict[str, Any], table: dict[str, Any]) -> str:
    """The probe section of ``compare.md``: weight share on injected paths, NLL and accuracy per row and seed."""
    benches = table["benchmarks"]
    nll = table.get("rationale_nll") or {}
    head = ["Method", "seed", "weight on injected (mean; first → last quarter)", "MIND kept set on injected",
            "held-out NLL", *[f"{b} acc" for b in benches]]
    lines = ["### Teacher-compatibility probe: weight on injected paths", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, e in probe["rows"].items():
        seed_labels = table["rows"][row].get("seed_labels") or list(e["seeds"])
        for i, (seed, cell) in enumerate(e["seeds"].items()):
            a, k = cell["alpha"], cell["kept"]
            share = (f"{a['mean']:.3f} ({a['first_quarter']:.3f} → {a['last_quarter']:.3f})" if a else
                     f"{e['uniform_share']:.3f} (uniform)" if e["uniform_share"] is not None else "—")
            kept = f"{k['mean']:.3f} ({k['first_quarter']:.3f} → {k['last_quarter']:.3f})" if k else "—"
            j = seed_labels.index(seed) if seed in seed_labels else i
            nll_seeds = nll.get("rows", {}).get(row, {}).get("per_seed") or []
            nll_v = nll_seeds[j] if j < len(nll_seeds) else None
            accs = [table["rows"][row]["benchmarks"][b]["per_seed"] for b in benches]
            lines.append("| " + " | ".join([row, seed, share, kept, "—" if nll_v is None else f"{nll_v:.4f}",
                                              *[f"{100 * a[j]:.1f}" if j < len(a) else "—" for a in accs]]) + " |")
    lines += ["", "Weight on injected = Σ α of the injected paths / Σ α of all paths of a question, averaged over "
              "the steps whose question has injected paths (methods without a weighting: the share of injected "
              "paths among the paths they train on). Uniform weighting of the injected questions gives the "
              "uniform share; a weighting that distrusts the injected paths falls below it."]
    if probe.get("plot"):
        lines += ["", f"![weight share on injected paths over training]({probe['plot']})"]
    lines += _by_source_markdown(probe)
    return "\n".join(lines) + "\n"


def _mean_over_seeds(cells: list[dict[str, dict]]) -> dict[str, dict]:
    """Seed mean of :func:`cotdistill.analysis.dynamics.weight_by_source` results: per source ``share`` and
    ``ce`` (over the seeds that log it; None if none), and ``seeds`` (how many seeds had the source)."""
    from cotdistill.analysis.dynamics import is_injected_label

    out: dict[str, dict] = {}
    for src in sorted({k for c in cells for k in c}, key=lambda k: (is_injected_label(k), k)):  # injected last
        vals = [c[src] for c in cells if src in c]
        ces = [v["ce"] for v in vals if v.get("ce") is not None]
        out[src] = {"share": float(np.mean([v["share"] for v in vals])), "seeds": len(vals),
                    "ce": float(np.mean(ces)) if ces else None}
    return out


def _by_source_markdown(probe: dict[str, Any]) -> list[str]:
    """Per weighted row, the seed mean of each source's α share (and training CE where logged)."""
    rows = {row: e["by_source"] for row, e in probe["rows"].items() if e.get("by_source")}
    if not rows:
        return []
    sources = list(dict.fromkeys(src for per in rows.values() for src in per))
    lines = ["", "Where each weighted row's α went, per source (mean over seeds of the source's share of a "
             "question's α over the steps where it has a path; training CE of its paths in brackets where the "
             "method logs it):", "", "| Method | " + " | ".join(sources) + " |", "|" + "---|" * (len(sources) + 1)]
    for row, per in rows.items():
        cells = ["—" if src not in per else f"{per[src]['share']:.3f}"
                 + (f" ({per[src]['ce']:.3f})" if per[src]["ce"] is not None else "") for src in sources]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def _cell_finished(mc: Config, eval_dir: Path, nll: bool) -> bool:
    """Whether a cell's evaluation (and held-out NLL) finished, read from its ``stages.json``."""
    try:
        state = json.loads((mc.run_dir() / "stages.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    need = ["eval_student"] + (["nll_student"] if nll else [])
    return all((state.get(s) or {}).get("complete") for s in need) and eval_dir.is_dir()


def export_results(shared: Path, cells: dict[str, list[Path]], out: Path) -> Path:
    """Copy what a reader needs to check a comparison (no checkpoints) into ``out``: ``compare.{md,json}``, the
    data card, and per cell (and the base student) the per-question evaluation JSONL (prompts dropped: the data
    card and benchmark give them), summaries, held-out NLL JSONL and the training provenance (config dropped:
    ``compare.json`` holds it). Refuses a non-empty ``out`` that is not an earlier export of this comparison."""
    import shutil

    from cotdistill.utils.io import read_jsonl

    marker = out / "EXPORTED_FROM"
    if out.exists() and any(out.iterdir()) and not (marker.is_file() and marker.read_text().strip() == str(shared)):
        raise CotdistillError(f"{out}: --results: not empty and not an export of {shared}; choose another folder")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def copy_eval(src: Path, dst: Path) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.glob("*.jsonl")):
            rows = [{k: v for k, v in r.items() if k != "prompt"} for r in read_jsonl(f)]
            (dst / f.name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        for f in sorted(src.glob("*summary.json")):
            shutil.copy2(f, dst / f.name)

    for name in ("compare.md", "compare.json", "injected_share.png"):
        if (shared / name).is_file():
            shutil.copy2(shared / name, tmp / name)
    for name in ("data_card.md", "data_card.json"):
        if (shared / "dataset" / name).is_file():
            shutil.copy2(shared / "dataset" / name, tmp / name)
    copy_eval(shared / "eval" / "base", tmp / "base" / "eval")
    if (shared / "nll" / "base").is_dir():
        copy_eval(shared / "nll" / "base", tmp / "base" / "nll")
    for row, dirs in cells.items():
        for d in dirs:
            cell = d.parent.parent  # <run>/<row>-s<seed>
            copy_eval(d, tmp / cell.name / "eval")
            if (cell / "nll" / d.name).is_dir():
                copy_eval(cell / "nll" / d.name, tmp / cell.name / "nll")
            prov = cell / "student" / "cotdistill_train.json"
            if prov.is_file():
                rec = {k: v for k, v in json.loads(prov.read_text()).items() if k not in ("config", "data_card")}
                atomic_write_json(tmp / cell.name / "cotdistill_train.json", rec)
            if (cell / "dynamics.jsonl").is_file():
                shutil.copy2(cell / "dynamics.jsonl", tmp / cell.name / "dynamics.jsonl")
    (tmp / "EXPORTED_FROM").write_text(str(shared) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def run_compare(cfg: Config, *, dry_run: bool = False, echo: Callable[[str], None] = print,
                methods: list[str] | None = None, table_only: bool = False,
                results_dir: str | Path | None = None) -> dict[str, Any] | None:
    """Run the shared stages once, then every (method, seed) cell; write ``compare.{md,json}``.

    ``table_only`` trains and evaluates nothing: it tabulates the cells that have finished and lists every other
    cell as not run (a comparison done in parts across sessions can be read at any point; no cell is hidden).

    ``methods`` (a subset of ``compare.methods``) runs only those cells and tabulates only them: start one
    process per subset to use several devices, then run once more without it for the full table (finished
    cells are skipped). Start the second process after the first has finished the shared stages.

    Under a multi-process launch (``accelerate launch`` / ``torchrun``) every rank calls this: rank 0 runs
    the shared stages, the evaluations and writes the table; all ranks train each cell together (see
    :mod:`cotdistill.pipeline`). The other ranks return None.
    """
    from cotdistill.pipeline import run_pipeline, student_tag
    from cotdistill.utils.dist import is_main

    say = echo if is_main() else (lambda s: None)  # the pipeline itself decides what other ranks print

    note = check_tuning(cfg)
    if note:
        say(note)
    chosen = list(cfg.compare.methods)
    if methods is not None:
        unknown = [m for m in methods if m not in chosen]
        if unknown or not methods:
            raise CotdistillError(
                f"--methods: {', '.join(unknown) or '(empty)'} not in compare.methods ({', '.join(chosen)})"
            )
        chosen = [m for m in chosen if m in methods]
    from cotdistill.methods.registry import missing_roles

    problem = next((p for row in chosen if (p := missing_roles(cfg.for_row(row)))), None)
    if problem:  # before the shared stages: a row that cannot train must not cost hours of evaluation first
        raise CotdistillError(f"config: compare.methods: {problem}")
    shared = cfg.run_dir()
    if not table_only:
        say(f"== shared stages in {shared}")
        run_pipeline(cfg, dry_run=dry_run, echo=echo, only=SHARED_STAGES)
    cells: dict[str, list[Path]] = {}
    not_run: list[str] = []
    for method in cell_order(chosen):
        for seed in cfg.compare.seeds:
            mc = method_config(cfg, method, seed)
            if table_only:
                eval_dir = mc.run_dir() / "eval" / student_tag(mc)
                if _cell_finished(mc, eval_dir, cfg.eval.rationale_nll is not None):
                    cells.setdefault(method, []).append(eval_dir)
                else:
                    not_run.append(f"{method} seed {seed}")
                continue
            if method == "edit" and edit_continues_std_cot(cfg) and not dry_run:
                start = std_cot_student(cfg, seed)
                if not (start / "adapter_config.json").exists() and not (start / "config.json").exists():
                    raise CotdistillError(
                        f"{start}: EDIT continues the Std-CoT cell of seed {seed}, which has not finished: "
                        "run the comparison with std_cot first"
                    )
            say(f"== {method}, seed {seed} in {mc.run_dir()}")
            run_pipeline(mc, dry_run=dry_run, echo=echo, only=METHOD_STAGES, shared_dir=shared)
            cells.setdefault(method, []).append(mc.run_dir() / "eval" / student_tag(mc))
    if dry_run or not is_main():
        return None
    rows_not_run = [m for m in chosen if m not in cells]
    chosen = [m for m in chosen if m in cells]  # table_only: rows with no finished seed are listed as not run
    if not chosen:
        raise CotdistillError(f"{shared}: no comparison cell has finished yet (not run: {', '.join(not_run)})")
    reference = cfg.compare.reference if cfg.compare.reference in chosen else None
    also = [m for m in cfg.compare.also_vs if m in chosen]
    table = build_table(shared, {m: cells[m] for m in chosen}, list(cfg.eval.benchmarks), reference=reference,
                        also=also)
    table["not_run"] = not_run
    table["rows_not_run"] = rows_not_run
    if not_run:
        table.setdefault("notes", []).append("not run yet (not in this table): " + ", ".join(not_run))
    table["rows_method"] = {m: cfg.compare.method_of(m) for m in chosen}
    nll_cfg = cfg.eval.rationale_nll
    if nll_cfg is not None:
        from cotdistill.curate.heldout import parse_set

        rset = parse_set(nll_cfg.set, nll_cfg.options, nll_cfg.max_per_question)
        nll_cells = {m: [d.parent.parent / "nll" / d.name for d in cells[m]] for m in chosen}
        table["rationale_nll"] = build_nll_table(shared, nll_cells, rset, reference=reference, also=also)
    table["provenance"] = {"config": json.loads(json.dumps(cfg.model_dump(mode="json"))), "seeds": cfg.compare.seeds}
    if cfg.curate.inject is not None:
        table["probe"] = build_probe(cfg, shared, chosen, table)
    atomic_write_json(shared / "compare.json", table)
    md = table_markdown(table) + ("\n" + nll_markdown(table["rationale_nll"]) if "rationale_nll" in table else "")
    md += "\n" + probe_markdown(table["probe"], table) if "probe" in table else ""
    atomic_write_text(shared / "compare.md", md)
    echo(md)
    if results_dir is not None:
        echo(f"per-question results for readers: {export_results(shared, {m: cells[m] for m in chosen}, Path(results_dir))}")
    return table
