"""One self-contained HTML page for a run folder: no network, no JavaScript.

Figures are embedded as base64 PNG, CSS is inline. Every section reads its own input and shows a
"not run" notice when that input is missing, so a partial run still gets a report.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.utils.io import atomic_write_text

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --soft:#f6f8fa; --acc:#0969da;
        --good:#1a7f37; --bad:#cf222e; }
* { box-sizing: border-box; }
body { font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; }
header { background: #24292f; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 22px; }
header .meta { color: #c9d1d9; font-size: 13px; }
nav { padding: 8px 32px; border-bottom: 1px solid var(--line); background: var(--soft); font-size: 13px; }
nav a { color: var(--acc); margin-right: 14px; text-decoration: none; }
main { max-width: 1180px; margin: 0 auto; padding: 8px 32px 48px; }
section { margin: 28px 0; }
h2 { font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 6px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 5px 9px; text-align: left; vertical-align: top; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.ci { color: var(--muted); font-size: 12px; }
.up { color: var(--good); font-weight: 600; } .down { color: var(--bad); font-weight: 600; }
.role { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
.notrun { border-left: 4px solid #d4a72c; background: #fff8c5; padding: 8px 12px; color: #4d2d00; }
figure { margin: 12px 0 20px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
pre { background: var(--soft); border: 1px solid var(--line); padding: 10px; overflow-x: auto; font-size: 12.5px; }
details summary { cursor: pointer; color: var(--acc); }
.note { color: var(--muted); font-size: 13px; }
code { font-size: 12.5px; word-break: break-all; }
td.wrap { word-break: break-all; max-width: 420px; }
"""

SECTIONS = [("config", "Configuration"), ("data", "Data card"), ("training", "Training curves"),
            ("weights", "Weight dynamics"), ("eval", "Evaluation"), ("latent", "Latent space"),
            ("forgetting", "Forgetting"), ("provenance", "Provenance")]


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CotdistillError(f"{path}: not valid JSON ({e.msg})") from None


def _img(path: Path, caption: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(caption or path.stem)}" src="data:image/png;base64,{data}">{cap}</figure>'


def _not_run(what: str, reason: str) -> str:
    return f'<p class="notrun"><b>Not run:</b> {_e(what)} — {_e(reason)}</p>'


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}"
    return str(v)


def _value(v: Any, depth: int = 0) -> str:
    """A JSON value as HTML: dicts as nested key/value tables (two levels), lists inline, scalars escaped."""
    if isinstance(v, dict):
        if depth >= 3 or not v:
            return f"<code>{_e(json.dumps(v, ensure_ascii=False))}</code>"
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_value(x, depth + 1)}</td></tr>" for k, x in v.items())
        return f"<table>{rows}</table>"
    if isinstance(v, list):
        if all(not isinstance(x, (dict, list)) for x in v) and len(v) <= 40:
            return _e(", ".join(_fmt(x) for x in v))
        return f"<code>{_e(json.dumps(v, ensure_ascii=False)[:2000])}</code>"
    return _e(_fmt(v))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


# ----------------------------------------------------------------------------- sections


def _config_section(run_dir: Path) -> tuple[str, dict]:
    p = run_dir / "config.yaml"
    if not p.exists():
        return _not_run("configuration", "no config.yaml in the run folder"), {}
    import yaml

    text = p.read_text(encoding="utf-8")
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        cfg = {}
    cfg = cfg if isinstance(cfg, dict) else {}
    train = cfg.get("train") or {}
    run = cfg.get("run") or {}
    key = {"run": run.get("name"), "method": cfg.get("method"), "student": train.get("model"),
           "finetune": train.get("finetune"), "lr": train.get("lr"), "epochs": train.get("epochs"),
           "teachers": ", ".join(t.get("name", "?") for t in cfg.get("teachers") or []) or None,
           "eval benchmarks": ", ".join((cfg.get("eval") or {}).get("benchmarks") or []) or None}
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in key.items() if v is not None)
    body = (f"<table>{rows}</table><details><summary>Full resolved config.yaml</summary>"
            f"<pre>{_e(text)}</pre></details>")
    return body, cfg


def _data_section(run_dir: Path) -> str:
    p = run_dir / "dataset" / "data_card.json"
    if not p.exists():
        return _not_run("data card", "no dataset/data_card.json (curation has not run)")
    card = _read_json(p)
    if not isinstance(card, dict):
        return f"<pre>{_e(json.dumps(card, indent=2))}</pre>"
    return _value(card)


def _dynamics(run_dir: Path, tmp: Path) -> tuple[dict[str, Path], dict | None]:
    """Dynamics figures: those of ``analysis/`` when present, else drawn now into ``tmp``."""
    dpath = run_dir / "dynamics.jsonl"
    if not dpath.exists():
        return {}, None
    from cotdistill.analysis import dynamics as dyn

    records = dyn.load_dynamics(dpath)
    if not records:
        return {}, None
    summary = dyn.summarize_dynamics(records)
    figs = {p.stem: p for p in sorted((run_dir / "analysis").glob("dynamics_*.png"))}
    if not figs:
        figs = {k: v for k, v in dyn.plot_dynamics(records, tmp).items()}
    return figs, summary


def _training_section(figs: dict[str, Path], summary: dict | None) -> str:
    if summary is None:
        return _not_run("training curves", "no dynamics.jsonl (training has not run)")
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td class='num'>{_fmt(v['first'], 4)}</td><td class='num'>{_fmt(v['last'], 4)}</td>"
        f"<td class='num'>{_fmt(v['min'], 4)}</td></tr>" for k, v in summary["scalars"].items())
    out = f"<p>{summary['n_steps']} optimizer steps.</p>"
    if rows:
        out += f"<table><tr><th>series</th><th>first</th><th>last</th><th>min</th></tr>{rows}</table>"
    if "dynamics_scalars" in figs:
        out += _img(figs["dynamics_scalars"], "Loss, learning rate and every scalar method signal per step.")
    return out


def _weights_section(figs: dict[str, Path], summary: dict | None) -> str:
    if summary is None:
        return _not_run("weight dynamics", "no dynamics.jsonl (training has not run)")
    per = summary.get("per_label") or {}
    if not per:
        return _not_run("weight dynamics", "this method logs no per-path signals")
    out = ""
    for name, means in per.items():
        out += f"<h3>{_e(name)}</h3>"
        cells = "".join(f"<tr><th>{_e(k)}</th><td class='num'>{_fmt(v, 4)}</td></tr>" for k, v in means.items())
        out += f"<table><tr><th>path label</th><th>mean over last 10% of steps</th></tr>{cells}</table>"
        fig = figs.get("dynamics_" + _slug(name))
        if fig is not None:
            out += _img(fig, f"{name}: heat map (labels × steps) and one line per label.")
    return out


def _slug(name: str) -> str:
    from cotdistill.analysis.dynamics import _slug as s

    return s(name)


def _eval_section(run_dir: Path, cfg: dict) -> tuple[str, dict]:
    from cotdistill.analysis.forgetting import accuracy_table, load_eval_summaries

    summaries = load_eval_summaries(run_dir / "eval")
    if not summaries:
        return _not_run("evaluation", "no eval/<model>/summary.json"), {}
    ood = ((cfg.get("analysis") or {}).get("ood_benchmarks")) or None
    table = accuracy_table(summaries, ood)
    benches = table["benchmarks"]
    head1 = "<tr><th>model</th>" + "".join(
        f"<th>{_e(b['name'])}<br><span class='role'>{'ID' if b['role'] == 'id' else 'OOD'}</span></th>"
        for b in benches) + "<th>ID avg</th><th>OOD avg</th></tr>"
    rows = ""
    for tag, row in table["models"].items():
        cells = ""
        for b in benches:
            r = row.get(b["name"])
            if r is None or r.get("accuracy") is None:
                cells += "<td class='num'>–</td>"
                continue
            ci = r.get("ci95") or [None, None]
            cis = f"<br><span class='ci'>[{_pct(ci[0])}, {_pct(ci[1])}] n={_e(r.get('n'))}</span>" if ci[0] is not None else ""
            d = r.get("delta")
            ds = ""
            if d is not None:
                ds = f" <span class='{'up' if d > 0 else 'down' if d < 0 else ''}'>({'+' if d >= 0 else ''}{100 * d:.1f})</span>"
            cells += f"<td class='num'>{_pct(r['accuracy'])}{ds}{cis}</td>"
        avg = table["averages"][tag]
        base_avg = table["averages"].get(table["base"], {})
        for role in ("id", "ood"):
            v = avg.get(role)
            ds = ""
            if tag != table["base"] and v is not None and base_avg.get(role) is not None:
                d = v - base_avg[role]
                ds = f" <span class='{'up' if d > 0 else 'down' if d < 0 else ''}'>({'+' if d >= 0 else ''}{100 * d:.1f})</span>"
            cells += f"<td class='num'>{_pct(v)}{ds}</td>"
        name = f"{_e(tag)}" + (" <span class='role'>base</span>" if tag == table["base"] else "")
        rows += f"<tr><th>{name}</th>{cells}</tr>"
    note = (f"<p class='note'>Accuracy in %, 95% CI in brackets; (±x) = difference to <b>{_e(table['base'])}</b> "
            "in points. ID = in-distribution, OOD = out-of-distribution benchmarks.</p>")
    return f"<table>{head1}{rows}</table>{note}", summaries


_LATENT_COLS = [("effective_clusters", "effective clusters"), ("exp_entropy", "exp(H)"), ("weight_entropy", "H"),
                ("exp_effective_entropy", "exp(H) effective"),
                ("nmi", "NMI"), ("ari", "ARI"), ("silhouette_labels", "silhouette (labels)"),
                ("silhouette_clusters", "silhouette (clusters)"), ("n", "n")]


def _latent_section(run_dir: Path, metrics: dict | None) -> str:
    if metrics is None:
        return _not_run("latent-space analysis", "no analysis/metrics.json (run `cotdistill analyze`)")
    lat = metrics.get("latent") or {}
    if lat.get("status") == "not run" or not lat.get("per_model"):
        return _not_run("latent-space analysis", lat.get("reason", "no shared model responses"))
    head = "<tr><th>model</th><th>labels</th>" + "".join(f"<th>{_e(n)}</th>" for _, n in _LATENT_COLS) + "</tr>"
    rows = ""
    entries = list(lat["per_model"].items()) + ([("all models pooled", lat["pooled"])] if lat.get("pooled") else [])
    for tag, m in entries:
        rows += f"<tr><th>{_e(tag)}</th><td>{_e(m.get('labels') or '–')}</td>" + "".join(
            f"<td class='num'>{_fmt(m.get(k))}</td>" for k, _ in _LATENT_COLS) + "</tr>"
    out = (f"<p>{_e(lat.get('n_questions'))} responses per model to <b>{_e(lat.get('benchmark'))}</b>, features "
           f"<code>{_e(lat.get('features'))}</code>; L2-normalised, PCA, Dirichlet-process mixture. Per model: "
           "fewer effective clusters / lower entropy = collapse of the reasoning distribution. Pooled: labels = "
           f"model, NMI/ARI measure how well clusters separate the models.</p><table>{head}{rows}</table>")
    adir = run_dir / "analysis"
    figs = metrics.get("figures") or {}
    order = ["latent_tsne_pooled", "latent_degeneration"] + sorted(
        k for k in figs if k.startswith("latent_tsne_") and k != "latent_tsne_pooled")
    captions = {"latent_tsne_pooled": "t-SNE of all models' responses, coloured by model and by DPMM cluster.",
                "latent_degeneration": "Effective clusters and exp(entropy) per model."}
    for k in order:
        if k in figs and (adir / figs[k]).exists():
            tag = k[len("latent_tsne_"):]
            out += _img(adir / figs[k], captions.get(k, f"t-SNE of {tag}'s responses, coloured by correctness and "
                                                        "by DPMM cluster."))
    return out


def _forgetting_section(metrics: dict | None, summaries: dict, cfg: dict) -> str:
    out = ""
    if summaries:
        from cotdistill.analysis.forgetting import accuracy_table

        table = accuracy_table(summaries, ((cfg.get("analysis") or {}).get("ood_benchmarks")) or None)
        base = table["base"]
        ood = [b["name"] for b in table["benchmarks"] if b["role"] == "ood"]
        if ood and len(table["models"]) > 1:
            rows = ""
            for tag, row in table["models"].items():
                if tag == base:
                    continue
                for b in ood:
                    r, rb = row.get(b), table["models"][base].get(b)
                    if r and rb:
                        d = r.get("delta")
                        cls = "up" if d and d > 0 else "down" if d and d < 0 else ""
                        rows += (f"<tr><th>{_e(tag)}</th><td>{_e(b)}</td><td class='num'>{_pct(rb['accuracy'])}</td>"
                                 f"<td class='num'>{_pct(r['accuracy'])}</td><td class='num {cls}'>"
                                 f"{'' if d is None else ('+' if d >= 0 else '') + f'{100 * d:.1f}'}</td></tr>")
            out += (f"<h3>OOD accuracy vs {_e(base)}</h3><table><tr><th>model</th><th>benchmark</th>"
                    f"<th>{_e(base)} %</th><th>model %</th><th>Δ points</th></tr>{rows}</table>")
        else:
            out += _not_run("OOD accuracy comparison", "needs a base and another model evaluated on an OOD benchmark")
    else:
        out += _not_run("OOD accuracy comparison", "no evaluation summaries")
    cka = ((metrics or {}).get("forgetting") or {}).get("cka") or {}
    if cka.get("values"):
        rows = "".join(f"<tr><th>{_e(t)}</th><td class='num'>{float(v):.4f}</td></tr>" for t, v in cka["values"].items())
        out += (f"<h3>Linear CKA vs {_e(cka.get('base'))}</h3><p class='note'>Last-layer mean-pooled states on "
                f"identical teacher-forced inputs ({_e(cka.get('inputs'))}). 1 = representation structure "
                f"preserved.</p><table><tr><th>model</th><th>CKA</th></tr>{rows}</table>")
    else:
        out += _not_run("linear CKA", cka.get("reason", "no analysis/metrics.json (run `cotdistill analyze`)"))
    return out


def _provenance_section(summaries: dict, metrics: dict | None) -> str:
    out = ""
    if summaries:
        # one column per model; a key whose value differs between that model's benchmarks lists each
        cols: dict[str, dict[str, str]] = {}
        keys: list[str] = []
        for tag, benches in summaries.items():
            vals: dict[str, list[str]] = {}
            for s in benches.values():
                for k, v in (s.get("provenance") or {}).items():
                    if k not in keys:
                        keys.append(k)
                    f = _fmt(v)
                    if f not in vals.setdefault(k, []):
                        vals[k].append(f)
            cols[tag] = {k: " / ".join(v) for k, v in vals.items()}
        head = "<tr><th>key</th>" + "".join(f"<th>{_e(t)}</th>" for t in cols) + "</tr>"
        rows = "".join(f"<tr><th>{_e(k)}</th>" + "".join(f"<td class='wrap'>{_e(c.get(k, '–'))}</td>"
                                                        for c in cols.values()) + "</tr>" for k in keys)
        out += f"<h3>Evaluation</h3><table>{head}{rows}</table>"
    if metrics is not None:
        prov = dict(metrics.get("provenance") or {})
        prov.pop("analysis_config", None)
        out += f"<h3>Analysis</h3>{_value(prov)}"
        models = (metrics.get("latent") or {}).get("models")
        if models:
            out += "<h3>Models used for features</h3>" + _value(
                {t: {k: v for k, v in m.items() if k != "eval_provenance"} for t, m in models.items()})
    if not out:
        out = _not_run("provenance", "no evaluation or analysis results yet")
    return out


# ----------------------------------------------------------------------------- page


def render_report(run_dir: str | Path) -> str:
    """The report page for ``run_dir`` as one HTML string (figures inlined)."""
    import cotdistill
    from cotdistill.analysis.run import load_metrics

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CotdistillError(f"{run_dir}: run folder not found")
    cfg_html, cfg = _config_section(run_dir)
    metrics = load_metrics(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        figs, dsum = _dynamics(run_dir, Path(tmp))
        training = _training_section(figs, dsum)
        weights = _weights_section(figs, dsum)
    eval_html, summaries = _eval_section(run_dir, cfg)
    bodies = {
        "config": cfg_html,
        "data": _data_section(run_dir),
        "training": training,
        "weights": weights,
        "eval": eval_html,
        "latent": _latent_section(run_dir, metrics),
        "forgetting": _forgetting_section(metrics, summaries, cfg),
        "provenance": _provenance_section(summaries, metrics),
    }
    title = ((cfg.get("report") or {}).get("title")) or f"cotdistill run: {(cfg.get('run') or {}).get('name') or run_dir.name}"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    nav = "".join(f'<a href="#{k}">{_e(n)}</a>' for k, n in SECTIONS)
    secs = "".join(f'<section id="{k}"><h2>{_e(n)}</h2>{bodies[k]}</section>' for k, n in SECTIONS)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><div class=\"meta\">{_e(str(run_dir))} · generated {stamp} · "
        f"cotdistill {_e(cotdistill.__version__)}</div></header><nav>{nav}</nav><main>{secs}</main></body></html>\n"
    )


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Render the report and write it atomically to ``output`` (default ``RUN_DIR/report.html``)."""
    run_dir = Path(run_dir)
    out = Path(output) if output else run_dir / "report.html"
    atomic_write_text(out, render_report(run_dir))
    return out
