"""Training dynamics from ``dynamics.jsonl`` (one line per optimizer step, INTERFACES.md):
``{"step", "epoch", "loss", "lr", "signals": {name: float | {label: float}}}``.

Scalar signals (loss terms, metric values) are drawn as lines over steps; per-label dict signals
(path weights such as MIND's ``alpha``) as a heat map (labels × steps) plus one line per label.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cotdistill.utils.io import read_jsonl


def load_dynamics(path: str | Path) -> list[dict]:
    """Records of a dynamics file, sorted by step (a repeated step after a resume: the last one wins)."""
    by_step: dict[int, dict] = {}
    for i, rec in enumerate(read_jsonl(path)):
        step = rec.get("step", i)
        by_step[int(step)] = rec
    return [by_step[s] for s in sorted(by_step)]


def split_signals(records: list[dict]) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, dict]]:
    """Series from dynamics records.

    Returns ``(scalars, per_label)``: ``scalars[name] = (steps [T], values [T])`` for ``loss``, ``lr`` and
    every numeric signal; ``per_label[name] = {"steps": [T], "labels": [L], "values": [L, T]}`` (NaN where a
    label is missing at a step) for every dict signal.
    """
    scal: dict[str, tuple[list, list]] = {}
    dicts: dict[str, dict[int, dict]] = {}
    for i, rec in enumerate(records):
        step = int(rec.get("step", i))
        for name in ("loss", "lr"):
            if _num(rec.get(name)):
                scal.setdefault(name, ([], []))
                scal[name][0].append(step)
                scal[name][1].append(float(rec[name]))
        for name, val in (rec.get("signals") or {}).items():
            if _num(val):
                scal.setdefault(name, ([], []))
                scal[name][0].append(step)
                scal[name][1].append(float(val))
            elif isinstance(val, dict):
                dicts.setdefault(name, {})[step] = {str(k): float(v) for k, v in val.items() if _num(v)}
    scalars = {k: (np.asarray(s), np.asarray(v)) for k, (s, v) in scal.items()}
    per_label: dict[str, dict] = {}
    for name, by_step in dicts.items():
        steps = sorted(by_step)
        labels: list[str] = []
        for s in steps:
            labels += [k for k in by_step[s] if k not in labels]
        vals = np.full((len(labels), len(steps)), np.nan)
        for j, s in enumerate(steps):
            for i, lab in enumerate(labels):
                if lab in by_step[s]:
                    vals[i, j] = by_step[s][lab]
        per_label[name] = {"steps": np.asarray(steps), "labels": labels, "values": vals}
    return scalars, per_label


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def summarize_dynamics(records: list[dict]) -> dict[str, Any]:
    """JSON summary: step count, first/last/min of each scalar, last-10%-mean of each per-label signal."""
    scalars, per_label = split_signals(records)
    out: dict[str, Any] = {"n_steps": len(records), "scalars": {}, "per_label": {}}
    for name, (_, v) in scalars.items():
        out["scalars"][name] = {"first": float(v[0]), "last": float(v[-1]), "min": float(v.min())}
    for name, d in per_label.items():
        tail = max(1, int(np.ceil(0.1 * d["values"].shape[1])))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a label absent from the tail: None below
            means = np.nanmean(d["values"][:, -tail:], axis=1)
        out["per_label"][name] = {lab: (None if np.isnan(m) else float(m)) for lab, m in zip(d["labels"], means)}
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "signal"


def plot_dynamics(records: list[dict], out_dir: str | Path) -> dict[str, Path]:
    """Write the dynamics figures as PNG into ``out_dir``; returns ``{figure name: path}``.

    - ``dynamics_scalars.png``: one small panel per scalar series (loss, lr, loss terms, metrics).
    - ``dynamics_<signal>.png`` per dict signal: heat map labels × steps (top) and one line per label.
    """
    from cotdistill.analysis.plotting import new_figure, save_figure

    out_dir = Path(out_dir)
    scalars, per_label = split_signals(records)
    figs: dict[str, Path] = {}
    if scalars:
        names = ["loss"] * ("loss" in scalars) + [n for n in scalars if n != "loss"]
        ncols = min(3, len(names))
        nrows = int(np.ceil(len(names) / ncols))
        fig, axes = new_figure(nrows, ncols, width=4.2 * ncols, height=2.8 * nrows)
        axes = axes if isinstance(axes, list) else [axes]
        for ax, name in zip(axes, names):
            steps, vals = scalars[name]
            ax.plot(steps, vals, lw=1.2, marker="." if len(steps) < 40 else None)
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        figs["dynamics_scalars"] = save_figure(fig, out_dir / "dynamics_scalars.png")
    for name, d in per_label.items():
        vals, steps, labels = d["values"], d["steps"], d["labels"]
        fig, (ax_h, ax_l) = new_figure(2, 1, width=9, height=3.2 + 0.25 * len(labels) + 3)
        im = ax_h.imshow(vals, aspect="auto", interpolation="nearest", cmap="viridis",
                         extent=(steps[0] - 0.5, steps[-1] + 0.5, len(labels) - 0.5, -0.5))
        ax_h.set_yticks(range(len(labels)))
        ax_h.set_yticklabels(labels, fontsize=8)
        ax_h.set_xlabel("step", fontsize=8)
        ax_h.set_title(f"{name} per path label (heat map)", fontsize=10)
        fig.colorbar(im, ax=ax_h, shrink=0.9)
        from cotdistill.analysis.dpmm import _palette

        colors = _palette(len(labels))
        for i, lab in enumerate(labels):
            ax_l.plot(steps, vals[i], lw=1.2, color=colors[i], label=lab)
        ax_l.set_xlabel("step", fontsize=8)
        ax_l.set_title(f"{name} per path label", fontsize=10)
        ax_l.grid(alpha=0.3)
        if len(labels) <= 20:
            ax_l.legend(fontsize=7, ncol=min(4, len(labels)), frameon=False)
        figs[f"dynamics_{_slug(name)}"] = save_figure(fig, out_dir / f"dynamics_{_slug(name)}.png")
    return figs


INJECTED_PREFIX = "injected-"


def is_injected_label(label: str) -> bool:
    """A path label of a ``curate.inject`` path (``injected-<kind>`` or ``injected-<kind>/injected-<kind>``)."""
    return str(label).startswith(INJECTED_PREFIX)


def injected_share(records: list[dict], signal: str = "alpha") -> dict[str, Any] | None:
    """Share of a per-label weight signal that went to injected paths, step by step.

    At each step whose labels include an injected one: Σ_injected w / Σ_all w of the per-label values of
    ``signal`` (MIND's ``alpha`` or ``kept``, COMPACT's ``alpha``; with one question per step these are the
    paths' own values). Steps without an injected path say nothing about it and are skipped.

    Returns ``{"steps": [T], "share": [T], "mean": float, "first_quarter": float, "last_quarter": float,
    "by_kind": {kind: mean share}}`` or None when the signal never names an injected label.
    """
    steps, shares = [], []
    by_kind: dict[str, list[float]] = {}
    for i, rec in enumerate(records):
        vals = (rec.get("signals") or {}).get(signal)
        if not isinstance(vals, dict) or not any(is_injected_label(k) for k in vals):
            continue
        total = sum(float(v) for v in vals.values() if _num(v))
        if total <= 0:
            continue
        inj = {k: float(v) for k, v in vals.items() if is_injected_label(k) and _num(v)}
        steps.append(int(rec.get("step", i)))
        shares.append(sum(inj.values()) / total)
        for k, v in inj.items():
            by_kind.setdefault(k.split("/")[0].removeprefix(INJECTED_PREFIX), []).append(v / total)
    if not shares:
        return None
    q = max(1, len(shares) // 4)
    return {"steps": steps, "share": shares, "mean": float(np.mean(shares)),
            "first_quarter": float(np.mean(shares[:q])), "last_quarter": float(np.mean(shares[-q:])),
            "by_kind": {k: float(np.mean(v)) for k, v in sorted(by_kind.items())}}


def weight_by_source(records: list[dict], signal: str = "alpha", level: str = "auto") -> dict[str, dict] | None:
    """Where a per-label weight went, per source: the teacher (``level="teacher"``, the label's part before ``/``)
    or the whole label (``"label"``: one teacher's perspectives); ``"auto"`` takes teachers when the log names
    at least two, else labels.

    At each step: a source's share = Σ of its labels' ``signal`` / Σ over all labels (one question per step:
    that question's paths); a source's value is the mean over the steps where it has a path. Beside it, the mean
    of the step's per-label training CE (the ``ce`` signal, MIND's) of the source, where the log has it.

    Returns ``{source: {"share": float, "steps": int, "ce": float | None}}`` (sources sorted, injected ones
    last), or None when ``signal`` never holds per-label values.
    """
    steps = [rec.get("signals") or {} for rec in records]
    labels = {k for sig in steps if isinstance(sig.get(signal), dict) for k in sig[signal]}
    if not labels:
        return None
    if level == "auto":
        level = "teacher" if len({k.split("/")[0] for k in labels if not is_injected_label(k)}) >= 2 else "label"

    def source(label: str) -> str:
        return label.split("/")[0] if level == "teacher" else label

    shares: dict[str, list[float]] = {}
    ces: dict[str, list[float]] = {}
    for sig in steps:
        vals = sig.get(signal)
        if not isinstance(vals, dict):
            continue
        total = sum(float(v) for v in vals.values() if _num(v))
        if total <= 0:
            continue
        per: dict[str, float] = {}
        for k, v in vals.items():
            if _num(v):
                per[source(k)] = per.get(source(k), 0.0) + float(v) / total
        for src, v in per.items():
            shares.setdefault(src, []).append(v)
        ce = sig.get("ce")
        if isinstance(ce, dict):
            by_src: dict[str, list[float]] = {}
            for k, v in ce.items():
                if _num(v):
                    by_src.setdefault(source(k), []).append(float(v))
            for src, v in by_src.items():
                ces.setdefault(src, []).append(float(np.mean(v)))
    order = sorted(shares, key=lambda k: (is_injected_label(k), k))
    return {k: {"share": float(np.mean(shares[k])), "steps": len(shares[k]),
                "ce": float(np.mean(ces[k])) if k in ces else None} for k in order}


def plot_injected_share(series: dict[str, dict], out_path: str | Path, uniform: float | None = None) -> Path:
    """One line per run (name → :func:`injected_share` result, smoothed over 10 steps) of the weight share on
    injected paths over training; ``uniform``: the share an unweighted method gives them (dashed)."""
    from cotdistill.analysis.plotting import new_figure, save_figure

    fig, ax = new_figure(width=7.5, height=4.0)
    for name, s in series.items():
        y = np.convolve(s["share"], np.ones(10) / 10, mode="valid") if len(s["share"]) >= 10 else np.array(s["share"])
        ax.plot(s["steps"][len(s["steps"]) - len(y):], y, label=name, lw=1.2)
    if uniform is not None:
        ax.axhline(uniform, color="grey", ls="--", lw=1, label=f"uniform ({uniform:.2f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weight share on injected paths")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Weight on known-incompatible paths over training (10-step mean)")
    return save_figure(fig, out_path)
