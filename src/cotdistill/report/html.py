"""One self-contained HTML page for a run folder: no network, no JavaScript.

Figures are embedded as base64 PNG, CSS is inline. Every section reads its own input and shows a
"not run" notice when that input is missing, so a partial run still gets a report.
"""

from __future__ import annotations

import base64
import html
import json
import re
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
.card { border: 1px solid var(--line); border-radius: 6px; background: var(--soft); padding: 12px 18px; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 4px 0 10px; }
.facts dt { font-weight: 600; } .facts dd { margin: 0; }
.card table { background: var(--bg); }
.verdict { font-size: 16px; margin: 6px 0 2px; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.row > div > h3 { margin-top: 6px; }
tr.total th, tr.total td { border-top: 2px solid var(--muted); }
tr.sub th { font-weight: 400; padding-left: 22px; color: var(--muted); }
ul.warn { margin: 4px 0; padding-left: 20px; color: #4d2d00; }
"""

SECTIONS = [("summary", "Summary"), ("config", "Configuration"), ("data", "Data card"), ("training", "Training curves"),
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
    max_steps = train.get("max_steps")
    steps_set = isinstance(max_steps, (int, float)) and max_steps > 0
    key = {"run": run.get("name"), "method": cfg.get("method"), "student": train.get("model"),
           "finetune": train.get("finetune"), "lr": train.get("lr"),
           "max_steps": max_steps if steps_set else None,
           # max_steps > 0 overrides epochs in the trainer: say so rather than show a number that did not apply
           "epochs": (f"{_fmt(train.get('epochs'))} (overridden by max_steps)" if steps_set and
                      train.get("epochs") is not None else train.get("epochs")),
           "teachers": ", ".join(t.get("name", "?") for t in cfg.get("teachers") or []) or None,
           "imported data": _imports_text(cfg),
           "eval benchmarks": ", ".join((cfg.get("eval") or {}).get("benchmarks") or []) or None}
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in key.items() if v is not None)
    body = (f"<table>{rows}</table><details><summary>Full resolved config.yaml</summary>"
            f"<pre>{_e(text)}</pre></details>")
    return body, cfg


def _imports_text(cfg: dict) -> str | None:
    """``data.imports`` in one line, e.g. ``eit (svamp; teachers gpt-4o, llama-3-70b; levels 2, 4)``."""
    parts = []
    for imp in ((cfg.get("data") or {}).get("imports")) or []:
        if not isinstance(imp, dict):
            continue
        opts = imp.get("options") or {}
        bits = [f"{k} {', '.join(str(x) for x in v) if isinstance(v, list) else v}" for k, v in opts.items()
                if v not in (None, [], {})]
        if imp.get("path"):
            bits.insert(0, str(imp["path"]))
        parts.append(f"{imp.get('format', '?')}" + (f" ({'; '.join(bits)})" if bits else ""))
    return "; ".join(parts) or None


def _load_card(run_dir: Path) -> dict | None:
    p = run_dir / "dataset" / "data_card.json"
    if not p.exists():
        return None
    card = _read_json(p)
    return card if isinstance(card, dict) else {"data_card": card}


def _load_train(run_dir: Path) -> dict | None:
    """``student/cotdistill_train.json`` (what training actually did), or None before training."""
    p = run_dir / "student" / "cotdistill_train.json"
    if not p.exists():
        return None
    info = _read_json(p)
    return info if isinstance(info, dict) else None


def _int(v: Any) -> str:
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else _e(_fmt(v))


def _rate(correct: Any, records: Any, rate: Any = None) -> str:
    if rate is None and isinstance(correct, (int, float)) and isinstance(records, (int, float)) and records:
        rate = correct / records
    return _pct(rate) if isinstance(rate, (int, float)) else "–"


def _teacher_table(card: dict) -> str:
    """Per teacher (and perspective) rows: records, correct %, kept paths, plus a total row."""
    rows = card.get("by_teacher_perspective")
    if not isinstance(rows, list) or not rows:
        bt = card.get("by_teacher")
        if not isinstance(bt, dict) or not bt:
            return ""
        rows = [dict(v, teacher=k) for k, v in bt.items() if isinstance(v, dict)]
    rows = [r for r in rows if isinstance(r, dict)]
    with_persp = any(r.get("perspective") is not None for r in rows)
    head = "<tr><th>teacher</th>" + ("<th>perspective</th>" if with_persp else "") + (
        "<th>records</th><th>correct %</th><th>kept paths</th></tr>")
    body = ""
    tot = {"records": 0, "correct": 0, "kept_paths": 0}
    for r in rows:
        body += (f"<tr><th>{_e(r.get('teacher', '–'))}</th>"
                 + (f"<td>{_e(r.get('perspective') or '–')}</td>" if with_persp else "")
                 + f"<td class='num'>{_int(r.get('records'))}</td>"
                 f"<td class='num'>{_rate(r.get('correct'), r.get('records'), r.get('correct_rate'))}</td>"
                 f"<td class='num'>{_int(r.get('kept_paths'))}</td></tr>")
        for k in tot:
            tot[k] = tot[k] + r[k] if isinstance(tot[k], int) and isinstance(r.get(k), int) else None
    if len(rows) > 1:
        body += (f"<tr class='total'><th>total</th>" + ("<td></td>" if with_persp else "")
                 + f"<td class='num'>{_int(tot['records'])}</td>"
                 f"<td class='num'>{_rate(tot['correct'], tot['records'])}</td>"
                 f"<td class='num'>{_int(tot['kept_paths'])}</td></tr>")
    return f"<table>{head}{body}</table>"


def _funnel(start_label: str, start: Any, drops: dict, end_label: str, end: Any) -> str:
    """A count funnel: start, minus each drop reason (largest first, shown as −n), equals what was kept."""
    rows = f"<tr><th>{_e(start_label)}</th><td class='num'>{_int(start)}</td></tr>"
    for reason, n in sorted(drops.items(), key=lambda kv: -(kv[1] if isinstance(kv[1], (int, float)) else 0)):
        if n:
            rows += (f"<tr class='sub'><th>{_e(str(reason).replace('_', ' '))}</th>"
                     f"<td class='num'>−{_int(n)}</td></tr>")
    rows += f"<tr class='total'><th>{_e(end_label)}</th><td class='num'>{_int(end)}</td></tr>"
    return f"<table>{rows}</table>"


_CARD_SHOWN = {"questions", "records", "paths_dropped", "splits", "by_teacher_perspective", "by_teacher",
               "warnings"}


def _data_section(card: dict | None) -> str:
    if card is None:
        return _not_run("data card", "no dataset/data_card.json (curation has not run)")
    if not (_CARD_SHOWN & set(card)):
        return _value(card)  # a card of another layout: show it whole
    out = ""
    warnings = card.get("warnings") or []
    if warnings:
        out += "<ul class='warn'>" + "".join(f"<li>{_e(w)}</li>" for w in warnings) + "</ul>"
    splits = card.get("splits") or {}
    if splits:
        out += "<p>" + "; ".join(
            f"<b>{_e(name)}</b>: {_int(v.get('questions'))} questions, {_int(v.get('paths'))} paths"
            for name, v in splits.items() if isinstance(v, dict))
        ppq = card.get("paths_per_question") or {}
        if ppq:
            out += " (paths per question: " + ", ".join(f"{_e(k)} × {_int(v)}" for k, v in ppq.items()) + ")"
        out += f" · labels by <b>{_e(card.get('label_scheme', '–'))}</b></p>"
    teach = _teacher_table(card)
    funnels = ""
    q = card.get("questions") or {}
    if isinstance(q, dict) and q:
        drops = dict(q.get("dropped") or {})
        if q.get("merged_duplicate_ids"):
            drops["merged duplicate ids"] = q["merged_duplicate_ids"]
        funnels += "<div><h3>Questions</h3>" + _funnel("in store", q.get("in_store"), drops, "kept",
                                                        q.get("kept")) + "</div>"
    rec = card.get("records") or {}
    pd = card.get("paths_dropped") or {}
    if isinstance(pd, dict) and pd:
        kept = sum(v.get("paths", 0) for v in splits.values() if isinstance(v, dict)) if splits else None
        funnels += "<div><h3>Paths</h3>" + _funnel("records read", rec.get("read"), pd, "kept", kept) + "</div>"
    if teach or funnels:
        out += "<div class='row'>" + (f"<div><h3>By teacher</h3>{teach}</div>" if teach else "") + funnels + "</div>"
        out += ("<p class='note'>Correct % = share of the teacher's records whose final answer matches the gold "
                "answer; kept paths = its paths in the curated training set.</p>")
    rest = {k: v for k, v in card.items() if k not in _CARD_SHOWN | {"paths_per_question", "label_scheme"}}
    if rest:
        out += f"<details><summary>Everything else in data_card.json</summary>{_value(rest)}</details>"
    return out


_ANSWER_LINE = re.compile(r"^\s*the answer is\s*:?\s*\S", re.IGNORECASE)


def answer_format_rate(jsonl: Path) -> tuple[float, int] | None:
    """(share of outputs in the answer format, n) of an eval JSONL.

    An output is in the format when it ended by itself (not cut at the token budget: ``finish_reason`` is not
    ``length``/``over_context``), its last non-empty line is "The answer is: …", and the scorer extracted an answer
    from it (``extracted`` not None, where the record has the field). A base model that loops "The answer is: The
    answer is: …" until the budget is therefore not counted.
    """
    from cotdistill.utils.io import read_jsonl

    if not jsonl.is_file():
        return None
    recs = [r for r in read_jsonl(jsonl) if "output" in r]
    if not recs:
        return None

    def formatted(r: dict) -> bool:
        if r.get("finish_reason") in ("length", "over_context"):
            return False
        if "extracted" in r and r["extracted"] is None:
            return False
        last = ([ln for ln in str(r.get("output") or "").splitlines() if ln.strip()] or [""])[-1]
        return bool(_ANSWER_LINE.match(last))

    return sum(map(formatted, recs)) / len(recs), len(recs)


def _paired_nll(run_dir: Path, student: str) -> dict | None:
    """Base vs student held-out rationale NLL on the same questions: means, paired Δ with 95% CI, Wilcoxon p."""
    import numpy as np

    from cotdistill.evaluate.stats import paired_metric_difference
    from cotdistill.utils.io import read_jsonl

    base_dir, stu_dir = run_dir / "nll" / "base", run_dir / "nll" / student
    for summ in sorted(base_dir.glob("rationale_nll-*.summary.json")) if base_dir.is_dir() else []:
        jb, js = summ.with_name(summ.name.replace(".summary.json", ".jsonl")), stu_dir / summ.name.replace(
            ".summary.json", ".jsonl")
        if not js.is_file():
            continue
        b = {str(r["id"]): float(r["nll"]) for r in read_jsonl(jb)}
        s = {str(r["id"]): float(r["nll"]) for r in read_jsonl(js)}
        ids = sorted(set(b) & set(s))
        if len(ids) < 2:
            continue
        bv, sv = np.array([[b[i] for i in ids]]), np.array([[s[i] for i in ids]])
        d = paired_metric_difference(sv, bv).as_dict()
        return {"set": _read_json(summ).get("set"), "n": len(ids), "base": float(bv.mean()),
                "student": float(sv.mean()), "delta": d["delta"], "ci95": d["ci95"], "p": d.get("p_combined"),
                "excludes_zero": d["ci95"][1] < 0 or d["ci95"][0] > 0}
    return None


def _did_it_work(run_dir: Path, cfg: dict, summaries: dict) -> str:
    """The summary card's lead: held-out rationale NLL of base vs student (paired CI) and the answer-format rate,
    the signals that move at a scale where accuracy cannot (a 135M student near the floor)."""
    student = cfg.get("method") or ""
    items = []
    nll = _paired_nll(run_dir, student) if student else None
    if nll is not None:
        lo, hi = nll["ci95"]
        verdict = ("lower: the student models held-out teacher reasoning better than the base" if hi < 0 else
                   "higher: the student models it worse than the base" if lo > 0 else
                   "the paired CI includes 0: no change this sample can show")
        items.append(f"<li><b>Held-out rationale NLL</b> on <code>{_e(nll['set'])}</code> ({nll['n']} questions no "
                     f"method trained on): base {nll['base']:.3f} → student {nll['student']:.3f}, paired Δ "
                     f"<b>{nll['delta']:+.3f}</b> [{lo:+.3f}, {hi:+.3f}]"
                     + (f", Wilcoxon p={_fmt(nll['p'])}" if nll.get("p") is not None else "") + f" — {verdict}.</li>")
    for bench in sorted({b for per in summaries.values() for b in per}):
        stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in bench)
        rates = {t: answer_format_rate(run_dir / "eval" / t / f"{stem}.jsonl") for t in ("base", student)}
        if all(rates.values()):
            items.append(f"<li><b>Answer format</b> on {_e(bench)}: base {_pct(rates['base'][0])}% → student "
                         f"{_pct(rates[student][0])}% of outputs stop by themselves on an answer line the scorer can read "
                         f"(n={rates[student][1]}).</li>")
    if not items:
        return ""
    return "<h3>Did distillation work?</h3><ul class='lead'>" + "".join(items) + "</ul>"


def _summary_section(cfg: dict, card: dict | None, train: dict | None, summaries: dict,
                     run_dir: Path | None = None) -> str:
    """The answer to "did it work?": held-out NLL and answer format first, then what was trained on what, and
    base vs distilled accuracy."""
    tcfg = cfg.get("train") or {}
    facts: list[tuple[str, str]] = []
    method = cfg.get("method") or (train or {}).get("method")
    if method:
        facts.append(("Method", f"<b>{_e(method)}</b>"))
    student = tcfg.get("model") or ((train or {}).get("base_model") or {}).get("model")
    if student:
        ft = tcfg.get("finetune") or (train or {}).get("finetune")
        facts.append(("Student", _e(student) + (f" ({_e(ft)})" if ft else "")))
    if card:
        bt, bp = card.get("by_teacher"), card.get("by_perspective")
        if isinstance(bt, dict) and bt:
            txt = f"{len(bt)} teacher{'s' if len(bt) != 1 else ''}: {_e(', '.join(bt))}"
            if isinstance(bp, dict) and bp:
                txt += f" × {len(bp)} perspective{'s' if len(bp) != 1 else ''}: {_e(', '.join(bp))}"
        else:
            labels = card.get("labels")
            labels = list(labels) if isinstance(labels, (list, dict)) else []
            txt = f"{len(labels)} labels: {_e(', '.join(map(str, labels)))}" if labels else "–"
        facts.append(("Teachers / labels", txt))
        tr = (card.get("splits") or {}).get("train")
        if isinstance(tr, dict):
            facts.append(("Training data", f"{_int(tr.get('questions'))} questions, {_int(tr.get('paths'))} "
                                           "reasoning paths"))
    elif cfg.get("teachers"):
        facts.append(("Teachers", _e(", ".join(t.get("name", "?") for t in cfg["teachers"]))))
    if train is not None:
        bits = [f"<b>{_int(train.get('global_step'))}</b> optimizer steps"]
        if train.get("epoch") is not None:
            ep = _fmt(float(train["epoch"]), 2)
            bits.append(f"{ep} epoch{'' if ep == '1' else 's'}")
        if train.get("train_seconds") is not None:
            bits.append(f"{_fmt(float(train['train_seconds']), 0)} s")
        if train.get("train_loss") is not None:
            bits.append(f"mean train loss {_fmt(float(train['train_loss']), 3)}")
        facts.append(("Training run", ", ".join(bits)))
    else:
        facts.append(("Training run", "not run (no student/cotdistill_train.json)"))
    lead = _did_it_work(run_dir, cfg, summaries) if run_dir is not None else ""
    out = "<div class='card'>" + lead + "<dl class='facts'>" + "".join(
        f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
    out += _headline_table(cfg, summaries, run_dir) + "</div>"
    return out


def _paired_reading(run_dir: Path | None, base: str, tag: str, bench: str) -> str:
    """Exact McNemar p of base vs ``tag`` on the questions both answered (per-sample JSONLs), else a note that
    only separate intervals exist (which are no test)."""
    from cotdistill.evaluate.stats import mcnemar_exact_p
    from cotdistill.utils.io import read_jsonl

    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in bench)
    files = [run_dir / "eval" / t / f"{stem}.jsonl" for t in (base, tag)] if run_dir is not None else []
    if not files or not all(f.is_file() for f in files):
        return "no per-sample outputs: no paired test"
    a, b = ({str(r["id"]): bool(r["correct"]) for r in read_jsonl(f) if "id" in r} for f in files)
    ids = set(a) & set(b)
    only_tag, only_base = sum(b[i] and not a[i] for i in ids), sum(a[i] and not b[i] for i in ids)
    return f"paired McNemar p={_fmt(mcnemar_exact_p(only_tag, only_base))} ({only_tag}:{only_base} flips)"


def _headline_table(cfg: dict, summaries: dict, run_dir: Path | None = None) -> str:
    """Per benchmark: base and every other evaluated model, accuracy with 95% CI and delta in points."""
    if not summaries:
        return _not_run("evaluation", "no eval/<model>/summary.json")
    from cotdistill.analysis.forgetting import accuracy_table

    table = accuracy_table(summaries, ((cfg.get("analysis") or {}).get("ood_benchmarks")) or None)
    base = table["base"]
    others = [t for t in table["models"] if t != base]
    head = (f"<tr><th>benchmark</th><th>{_e(base)} <span class='role'>base</span></th>"
            + "".join(f"<th>{_e(t)} <span class='role'>distilled</span></th><th>Δ points</th>" for t in others)
            + "</tr>")

    def cell(r: dict | None) -> str:
        if not r or r.get("accuracy") is None:
            return "<td class='num'>–</td>"
        ci = r.get("ci95") or [None, None]
        cis = f" <span class='ci'>[{_pct(ci[0])}, {_pct(ci[1])}]</span>" if ci[0] is not None else ""
        return f"<td class='num'>{_pct(r['accuracy'])}%{cis}</td>"

    rows = ""
    for b in table["benchmarks"]:
        name = b["name"]
        rb = table["models"][base].get(name)
        n = (rb or {}).get("n")
        rows += (f"<tr><th>{_e(name)} <span class='role'>{'ID' if b['role'] == 'id' else 'OOD'}</span>"
                 + (f" <span class='ci'>n={_e(n)}</span>" if n else "") + f"</th>{cell(rb)}")
        for t in others:
            r = table["models"][t].get(name)
            rows += cell(r)
            d = (r or {}).get("delta")
            if d is None:
                rows += "<td class='num'>–</td>"
                continue
            cls = "up" if d > 0 else "down" if d < 0 else ""
            rows += (f"<td class='num'><span class='{cls}'>{'+' if d >= 0 else ''}{100 * d:.1f}</span>"
                     f"<br><span class='ci'>{_e(_paired_reading(run_dir, base, t, name))}</span></td>")
        rows += "</tr>"
    note = ("<p class='note'>Accuracy with 95% CI in brackets; Δ = distilled − base in percentage points, with "
            "the exact McNemar test of the two on the same questions (flips: questions only the distilled / only "
            "the base student got right). Separate intervals are not a test of the difference.</p>")
    return f"<table>{head}{rows}</table>{note}"


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


def _compare_section(run_dir: Path) -> str | None:
    """The ``cotdistill compare`` table of this run folder (``compare.json``), or None when there is none."""
    path = run_dir / "compare.json"
    if not path.exists():
        return None
    table = _read_json(path)
    if not isinstance(table, dict) or not isinstance(table.get("rows"), dict):
        return _not_run("comparison", f"{path.name} has no table rows")
    benches = [b for b in table.get("benchmarks") or [] if isinstance(b, str)]
    roles = table.get("roles") or {}
    head = "<tr><th>method</th>" + "".join(
        f"<th>{_e(b)}<br><span class='role'>{_e(str(roles.get(b, '')).upper())}</span></th>" for b in benches) + "</tr>"
    rows = ""
    for name, row in table["rows"].items():
        seeds = row.get("seeds") or 1
        rows += f"<tr><th>{_e(name)}" + (f" <span class='ci'>×{_e(seeds)} seeds</span>" if seeds > 1 else "") + "</th>"
        for b in benches:
            c = (row.get("benchmarks") or {}).get(b) or {}
            ci = c.get("ci95") or [None, None]
            cis = (f"<br><span class='ci'>[{_pct(ci[0])}, {_pct(ci[1])}] {_e(c.get('ci_method') or '')} "
                   f"n={_e(c.get('n'))}</span>") if ci[0] is not None else ""
            rows += f"<td class='num'>{_pct(c.get('accuracy'))}{cis}</td>"
        rows += "</tr>"
    out = f"<h3>Accuracy (mean over seeds, %)</h3><table>{head}{rows}</table>"
    paired = table.get("paired")
    if not isinstance(paired, dict) or not paired:
        out += _not_run("paired differences", "this compare.json has none (written before they existed)")
    else:
        prow = ""
        for target, per_bench in paired.items():
            for b, family in (per_bench or {}).items():
                for name, r in (family or {}).items():
                    d, ci = r.get("delta"), r.get("ci95") or [None, None]
                    delta = "–" if d is None else f"{'+' if d >= 0 else ''}{100 * d:.1f}"
                    cis = "" if ci[0] is None else f" <span class='ci'>[{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]</span>"
                    seeds = ", ".join(
                        f"s{_e(x.get('seed'))}: {_fmt(x.get('p'))} ({_e(x.get('a_only'))}:{_e(x.get('b_only'))})"
                        for x in r.get("per_seed") or []) or "–"
                    v = r.get("verdict") or "–"
                    cls = "up" if v == "better" else "down" if v == "worse" else ""
                    prow += (f"<tr><td>{_e(b)}</td><th>{_e(name)}</th><td>{_e(target)}</td>"
                             f"<td class='num'>{delta}{cis}</td><td>{seeds}</td>"
                             f"<td class='num'>{_fmt(r.get('p_holm'))}</td><td class='{cls}'>{_e(v)}</td></tr>")
        out += ("<h3>Paired differences</h3><table><tr><th>benchmark</th><th>method A</th><th>vs B</th>"
                "<th>Δ points [95% CI]</th><th>McNemar p per seed (A-only:B-only)</th><th>p all seeds (Holm)</th>"
                f"<th>verdict</th></tr>{prow}</table>")
        desc = (table.get("statistics") or {}).get("description")
        if desc:
            out += f"<p class='note'>{_e(desc)}</p>"
    notes = [n for n in table.get("notes") or [] if isinstance(n, str)]
    if notes:
        out += "<ul class='warn'>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>"
    if isinstance(table.get("rationale_nll"), dict):
        out += _compare_nll_html(table["rationale_nll"])
    if isinstance(table.get("probe"), dict):
        out += _compare_probe_html(table["probe"], run_dir)
    return out


def _compare_nll_html(nll: dict) -> str:
    """The comparison's held-out rationale NLL: per row mean [CI], and the paired Δ to each target."""
    targets = [t for t in (nll.get("paired") or {}) if isinstance(t, str)]
    head = ("<tr><th>method</th><th>mean NLL [95% CI]</th>"
            + "".join(f"<th>Δ vs {_e(t)} [95% CI] (Holm p, verdict)</th>" for t in targets) + "</tr>")
    rows = ""
    for name, r in (nll.get("rows") or {}).items():
        ci = r.get("ci95") or [None, None]
        cells = (f"<td class='num'>{_fmt(r.get('mean_nll'), 4)} "
                 f"<span class='ci'>[{_fmt(ci[0], 4)}, {_fmt(ci[1], 4)}]</span></td>")
        for t in targets:
            d = ((nll["paired"].get(t) or {}).get(name)) or {}
            if d.get("delta") is None:
                cells += "<td>–</td>"
                continue
            dci = d.get("ci95") or [None, None]
            v = d.get("verdict") or "–"
            cls = "up" if v == "better" else "down" if v == "worse" else ""
            cells += (f"<td class='num {cls}'>{d['delta']:+.4f} <span class='ci'>[{_fmt(dci[0], 4)}, {_fmt(dci[1], 4)}]"
                      f"</span> ({_fmt(d.get('p_holm'))}, {_e(v)})</td>")
        rows += f"<tr><th>{_e(name)}</th>{cells}</tr>"
    return (f"<h3>Held-out rationale NLL on <code>{_e(nll.get('set'))}</code> (lower is better)</h3>"
            f"<table>{head}{rows}</table><p class='note'>Mean token NLL of held-out teacher rationales of evaluation "
            "questions no method trains on; Δ CI: bootstrap over seeds and questions; p: Wilcoxon signed-rank, "
            "Holm over the methods compared with one target.</p>")


def _compare_probe_html(probe: dict, run_dir: Path) -> str:
    """The teacher-compatibility probe: weight share on injected paths per row and seed, its trajectory plot,
    and where each weighted row's α went per source."""
    rows = ""
    for name, e in (probe.get("rows") or {}).items():
        for seed, cell in (e.get("seeds") or {}).items():
            a, k = cell.get("alpha"), cell.get("kept")
            share = (f"{_fmt(a.get('mean'))} ({_fmt(a.get('first_quarter'))} → {_fmt(a.get('last_quarter'))})" if a
                     else f"{_fmt(e.get('uniform_share'))} (uniform)" if e.get("uniform_share") is not None else "–")
            kept = (f"{_fmt(k.get('mean'))} ({_fmt(k.get('first_quarter'))} → {_fmt(k.get('last_quarter'))})"
                    if k else "–")
            rows += (f"<tr><th>{_e(name)}</th><td>{_e(seed)}</td><td class='num'>{share}</td>"
                     f"<td class='num'>{kept}</td></tr>")
    out = ("<h3>Teacher-compatibility probe: weight on injected paths</h3><table><tr><th>method</th><th>seed</th>"
           "<th>weight on injected (mean; first → last quarter)</th><th>MIND kept set on injected</th></tr>"
           f"{rows}</table>")
    plot = probe.get("plot")
    if isinstance(plot, str) and (run_dir / plot).is_file():
        out += _img(run_dir / plot, "weight share on injected paths over training (10-step mean)")
    per_row = {name: e["by_source"] for name, e in (probe.get("rows") or {}).items() if e.get("by_source")}
    if per_row:
        sources = list(dict.fromkeys(src for per in per_row.values() for src in per))
        body = ""
        for name, per in per_row.items():
            cells = "".join(
                "<td>–</td>" if src not in per else f"<td class='num'>{per[src]['share']:.3f}"
                + (f" <span class='ci'>CE {_fmt(per[src]['ce'])}</span>" if per[src].get("ce") is not None else "")
                + "</td>" for src in sources)
            body += f"<tr><th>{_e(name)}</th>{cells}</tr>"
        out += ("<h3>Where the weight went, per source</h3><table><tr><th>method</th>"
                + "".join(f"<th>{_e(s)}</th>" for s in sources) + f"</tr>{body}</table><p class='note'>Mean over "
                "seeds of a source's share of a question's α over the steps where it has a path; CE: the training "
                "cross-entropy of its paths where the method logs it.</p>")
    return out


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
    card = _load_card(run_dir)
    bodies = {
        "summary": _summary_section(cfg, card, _load_train(run_dir), summaries, run_dir),
        "config": cfg_html,
        "data": _data_section(card),
        "training": training,
        "weights": weights,
        "eval": eval_html,
        "latent": _latent_section(run_dir, metrics),
        "forgetting": _forgetting_section(metrics, summaries, cfg),
        "provenance": _provenance_section(summaries, metrics),
    }
    sections = list(SECTIONS)
    compare_html = _compare_section(run_dir)
    if compare_html is not None:  # a `cotdistill compare` run folder: its table after the evaluation
        bodies["compare"] = compare_html
        sections.insert([k for k, _ in sections].index("eval") + 1, ("compare", "Comparison"))
    title = ((cfg.get("report") or {}).get("title")) or f"cotdistill run: {(cfg.get('run') or {}).get('name') or run_dir.name}"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    nav = "".join(f'<a href="#{k}">{_e(n)}</a>' for k, n in sections)
    secs = "".join(f'<section id="{k}"><h2>{_e(n)}</h2>{bodies[k]}</section>' for k, n in sections)
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
