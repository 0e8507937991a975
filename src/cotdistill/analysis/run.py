"""`cotdistill analyze RUN_DIR`: every analysis the run folder has inputs for.

- dynamics plots and summary (``dynamics.jsonl``), always when present;
- forgetting: accuracy table base vs others from ``eval/<tag>/summary.json``, and linear CKA between
  the base and each other model on base's teacher-forced responses (``hidden_mean`` features only);
- latent space (METHODS.md §6): features of each model's responses to the same prompts
  (``eval/<tag>/<bench>.jsonl``), one DPMM per model (degeneration) and one on all models pooled
  (labels = model tag), t-SNE figures.

Everything lands in ``RUN_DIR/analysis/`` (``metrics.json`` + PNGs); features are cached under
``analysis/features/`` so an interrupted run resumes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from cotdistill.config import AnalysisConfig
from cotdistill.errors import CotdistillError
from cotdistill.utils.io import atomic_write_json, read_jsonl


def parse_models(spec: str | None) -> dict[str, dict[str, str | None]]:
    """Parse ``--models base=SPEC,distilled=SPEC@ADAPTER`` into ``{tag: {"model", "adapter"}}``.

    ``tag`` alone (no ``=``) selects that eval tag and keeps the model from its provenance.
    """
    out: dict[str, dict[str, str | None]] = {}
    if not spec:
        return out
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        tag, _, model = part.partition("=")
        tag, model = tag.strip(), model.strip()
        if not tag:
            raise CotdistillError(f"--models: {part!r}: expected TAG=SPEC")
        adapter = None
        if "@" in model:
            model, adapter = model.split("@", 1)
        out[tag] = {"model": model or None, "adapter": adapter or None}
    return out


def _load_config(run_dir: Path):
    from cotdistill.config import Config, load_config

    p = run_dir / "config.yaml"
    return load_config(p) if p.exists() else Config()


def _eval_records(path: Path) -> list[dict]:
    recs = []
    for i, r in enumerate(read_jsonl(path), 1):
        for key in ("id", "prompt", "output"):
            if key not in r:
                raise CotdistillError(f"{path}:{i}: {key}: missing (eval records need id, prompt, output)")
        recs.append(r)
    return recs


def _provenance(summ: dict[str, dict], bench: str) -> dict:
    s = summ.get(bench) or next(iter(summ.values()), {})
    return dict(s.get("provenance") or {})


def _choose_benchmark(run_dir: Path, tags: list[str], summaries: dict, requested: str | None, ood: list[str]) -> str | None:
    from cotdistill.analysis.forgetting import benchmark_role

    from cotdistill.evaluate.runner import bench_file_stem

    def has(tag: str, b: str) -> bool:
        return (run_dir / "eval" / tag / f"{bench_file_stem(b)}.jsonl").exists()

    if requested:
        missing = [t for t in tags if not has(t, requested)]
        if missing:
            raise CotdistillError(
                f"{run_dir / 'eval' / missing[0] / (bench_file_stem(requested) + '.jsonl')}: not found (--benchmark)"
            )
        return requested
    order: list[str] = []
    for t in tags:
        order += [b for b in summaries.get(t, {}) if b not in order]
        stems = {bench_file_stem(b) for b in order}
        order += [p.stem for p in sorted((run_dir / "eval" / t).glob("*.jsonl")) if p.stem not in stems | set(order)]
    common = [b for b in order if all(has(t, b) for t in tags)]
    if not common:
        return None
    ids = [b for b in common if benchmark_role(b, ood) == "id"]
    return (ids or common)[0]


def analyze_run(
    run_dir: str | Path,
    cfg: AnalysisConfig | None = None,
    *,
    models: dict[str, dict[str, str | None]] | str | None = None,
    n_questions: int | None = None,
    features: str | None = None,
    benchmark: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    echo=print,
) -> dict[str, Any]:
    """Run every analysis the run folder supports; write ``analysis/metrics.json`` and figures.

    Args:
        run_dir: the run folder (``config.yaml``, ``dynamics.jsonl``, ``eval/<tag>/...``).
        cfg: analysis settings; default: the run's ``config.yaml`` ``analysis`` section.
        models: eval tags to compare, optionally overriding their model spec/adapter
            (``parse_models`` format); default: every tag under ``eval/``.
        n_questions: responses per model (default ``analysis.n_questions``).
        features: ``hidden_mean`` or ``sbert`` (default ``analysis.features``).
        benchmark: which eval benchmark's responses to use (default: the first ID one all models have).
        batch_size: forward batch size for ``hidden_mean``.

    Returns the metrics dict written to ``metrics.json``.
    """
    import cotdistill
    from cotdistill.analysis import dynamics as dyn
    from cotdistill.analysis.forgetting import accuracy_table, load_eval_summaries, pick_base

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CotdistillError(f"{run_dir}: run folder not found")
    full_cfg = _load_config(run_dir)
    cfg = cfg or full_cfg.analysis
    if features is not None:
        cfg = cfg.model_copy(update={"features": features})
    if cfg.features not in ("hidden_mean", "sbert"):
        raise CotdistillError(f"--features: {cfg.features!r}: expected hidden_mean or sbert")
    n_q = n_questions or cfg.n_questions
    if isinstance(models, str):
        models = parse_models(models)
    out_dir = run_dir / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result: dict[str, Any] = {
        "provenance": {
            "cotdistill_version": cotdistill.__version__,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run_dir": str(run_dir),
            "analysis_config": cfg.model_dump(mode="json"),
            "features": cfg.features,
            "sbert_model": cfg.sbert_model if cfg.features == "sbert" else None,
        },
        "figures": {},
    }

    # ---- training dynamics
    dpath = run_dir / "dynamics.jsonl"
    records = dyn.load_dynamics(dpath) if dpath.exists() else []
    if records:
        figs = dyn.plot_dynamics(records, out_dir)
        result["dynamics"] = dyn.summarize_dynamics(records)
        result["figures"].update({k: p.name for k, p in figs.items()})
        echo(f"[analyze] dynamics: {len(records)} steps, {len(figs)} figure(s)")
    else:
        result["dynamics"] = {"status": "not run", "reason": f"no {dpath.name}"}

    # ---- evaluation summaries -> accuracy table
    summaries = load_eval_summaries(run_dir / "eval")
    tags = list(summaries)
    if models:
        unknown = [t for t in models if not (run_dir / "eval" / t).is_dir()]
        if unknown:
            raise CotdistillError(f"{run_dir / 'eval' / unknown[0]}: no evaluation for --models tag {unknown[0]!r}")
        tags = list(models)
    base = pick_base(tags)
    if summaries:
        table = accuracy_table({t: summaries[t] for t in tags if t in summaries}, cfg.ood_benchmarks, base)
        result["forgetting"] = {"accuracy": table}
    else:
        result["forgetting"] = {"status": "not run", "reason": "no eval/<tag>/summary.json"}

    # ---- latent space
    bench = _choose_benchmark(run_dir, tags, summaries, benchmark, cfg.ood_benchmarks) if tags else None
    if bench is None:
        result["latent"] = {"status": "not run", "reason": "no eval/<tag>/<benchmark>.jsonl shared by the models"}
    else:
        result["latent"] = _latent(run_dir, out_dir, tags, base, bench, summaries, models or {}, cfg, n_q,
                                   batch_size, progress, echo, result)
    result["provenance"]["seconds"] = round(time.time() - t0, 1)
    atomic_write_json(out_dir / "metrics.json", result)
    echo(f"[analyze] wrote {out_dir / 'metrics.json'}")
    return result


def _latent(run_dir, out_dir, tags, base, bench, summaries, overrides, cfg, n_q, batch_size, progress, echo,
            result) -> dict[str, Any]:
    from cotdistill.analysis import latent as lat
    from cotdistill.analysis.dpmm import analyze_features, plot_tsne
    from cotdistill.analysis.forgetting import linear_cka

    from cotdistill.evaluate.runner import bench_file_stem

    recs = {t: _eval_records(run_dir / "eval" / t / f"{bench_file_stem(bench)}.jsonl") for t in tags}
    by_id = {t: {str(r["id"]): r for r in rs} for t, rs in recs.items()}
    ids = [i for i in dict.fromkeys(str(r["id"]) for r in recs[tags[0]])  # unique, file order; last record wins
           if all(i in by_id[t] for t in tags)][:n_q]
    if len(ids) < 3:
        return {"status": "not run", "reason": f"only {len(ids)} shared responses on {bench} (need 3)"}
    cache = out_dir / "features"
    model_prov: dict[str, dict] = {}
    prev = ((load_metrics(run_dir) or {}).get("latent") or {}).get("models") or {}
    specs: dict[str, tuple[str | None, str | None]] = {}
    for t in tags:
        prov = _provenance(summaries.get(t, {}), bench)
        ov = overrides.get(t) or {}
        spec = ov.get("model") or prov.get("model")
        adapter = ov.get("adapter") if ov.get("model") else prov.get("adapter")
        specs[t] = (spec, adapter)
        model_prov[t] = {"model": spec, "adapter": adapter, "eval_provenance": prov}
        old = prev.get(t) or {}
        if old.get("loader") and (old.get("model"), old.get("adapter")) == (spec, adapter):
            model_prov[t]["loader"] = old["loader"]  # features cached: keep the loader provenance of that run

    feats: dict[str, np.ndarray] = {}
    cka: dict[str, Any] = {}
    texts = {t: [by_id[t][i]["output"] or "" for i in ids] for t in tags}
    prompts = {t: [by_id[t][i]["prompt"] for i in ids] for t in tags}
    if cfg.features == "sbert":
        for t in tags:
            key = {"kind": "sbert", "model": cfg.sbert_model, "texts": texts[t]}
            feats[t] = lat.cached_features(cache, key, lambda t=t: lat.extract_sbert(texts[t], cfg.sbert_model,
                                                                                    progress=progress))
        cka_status = {"status": "not run", "reason": "CKA needs --features hidden_mean"}
    else:
        base_feats = None
        for t in [base] + [x for x in tags if x != base]:
            spec, adapter = specs[t]
            if not spec:
                raise CotdistillError(
                    f"{run_dir / 'eval' / t / 'summary.json'}: provenance.model: missing; pass --models {t}=SPEC"
                )
            loaded: dict[str, Any] = {}

            def model():
                if not loaded:
                    echo(f"[analyze] loading {t}: {spec}" + (f" + adapter {adapter}" if adapter else ""))
                    m, tok, prov = lat.load_model(spec, adapter)
                    loaded.update(m=m, tok=tok)
                    model_prov[t]["loader"] = prov
                return loaded["m"], loaded["tok"]

            def own(t=t):
                m, tok = model()
                return lat.extract_hidden_mean(m, tok, prompts[t], texts[t], batch_size=batch_size,
                                               progress=progress, desc=f"{t} hidden states")

            key = {"kind": "hidden_mean", "model": spec, "adapter": adapter, "prompts": prompts[t], "texts": texts[t]}
            feats[t] = lat.cached_features(cache, key, own)
            if t == base:
                base_feats = feats[t]
            else:
                def on_base(t=t):
                    m, tok = model()
                    return lat.extract_hidden_mean(m, tok, prompts[base], texts[base], batch_size=batch_size,
                                                   progress=progress, desc=f"{t} on {base} responses")

                key_b = {"kind": "hidden_mean", "model": spec, "adapter": adapter, "prompts": prompts[base],
                         "texts": texts[base]}
                other = lat.cached_features(cache, key_b, on_base)
                cka[t] = linear_cka(base_feats, other)
            loaded.clear()  # free the model before loading the next one
        cka_status = {"base": base, "inputs": f"{base} responses to {bench}", "values": cka} if cka else {
            "status": "not run", "reason": "needs a base and at least one other model"}
    result.setdefault("forgetting", {})
    if isinstance(result["forgetting"], dict) and result["forgetting"].get("status") == "not run":
        result["forgetting"] = {}
    result["forgetting"]["cka"] = cka_status

    per_model: dict[str, Any] = {}
    for t in tags:
        labels = None
        if all("correct" in by_id[t][i] for i in ids):
            labels = ["correct" if by_id[t][i]["correct"] else "wrong" for i in ids]
        res = analyze_features(feats[t], labels, cfg)
        name = f"latent_tsne_{t}"
        plot_tsne(res, out_dir / f"{name}.png", f"{t}: {bench}, {len(ids)} responses ({cfg.features})")
        result["figures"][name] = f"{name}.png"
        res.metrics["labels"] = "correctness" if labels else None
        per_model[t] = res.metrics
        echo(f"[analyze] {t}: {res.metrics['effective_clusters']} effective clusters, "
             f"exp(H)={res.metrics['exp_entropy']:.2f}")
    latent: dict[str, Any] = {"benchmark": bench, "n_questions": len(ids), "features": cfg.features,
                              "models": model_prov, "per_model": per_model}
    dims = {feats[t].shape[1] for t in tags}
    if len(tags) >= 2 and len(dims) == 1:
        pooled = np.concatenate([feats[t] for t in tags])
        labels = [t for t in tags for _ in ids]
        res = analyze_features(pooled, labels, cfg)
        plot_tsne(res, out_dir / "latent_tsne_pooled.png", f"all models pooled: {bench} ({cfg.features})")
        result["figures"]["latent_tsne_pooled"] = "latent_tsne_pooled.png"
        res.metrics["labels"] = "model"
        latent["pooled"] = res.metrics
    if len(tags) >= 2:
        _plot_degeneration(per_model, out_dir / "latent_degeneration.png")
        result["figures"]["latent_degeneration"] = "latent_degeneration.png"
    return latent


def _plot_degeneration(per_model: dict[str, dict], path: Path) -> None:
    from cotdistill.analysis.plotting import new_figure, save_figure

    tags = list(per_model)
    fig, (a, b) = new_figure(1, 2, width=9, height=3.4)
    a.bar(tags, [per_model[t]["effective_clusters"] for t in tags], color="#4C72B0")
    a.set_title("effective DPMM clusters", fontsize=10)
    b.bar(tags, [per_model[t]["exp_effective_entropy"] for t in tags], color="#DD8452")
    b.set_title("exp(entropy) of the effective weights", fontsize=10)
    for ax in (a, b):
        ax.tick_params(labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Degeneration: fewer clusters / lower entropy = collapse", fontsize=10)
    save_figure(fig, path)


def load_metrics(run_dir: str | Path) -> dict | None:
    """``analysis/metrics.json`` of a run, or None when the analysis has not run."""
    p = Path(run_dir) / "analysis" / "metrics.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CotdistillError(f"{p}: not valid JSON ({e.msg})") from None
