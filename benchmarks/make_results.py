"""Render the generated parts of ``benchmarks/RESULTS.md`` from the result files in ``benchmarks/results/``.

    python benchmarks/make_results.py            # rewrite the generated blocks of RESULTS.md
    python benchmarks/make_results.py --check    # exit 1 if RESULTS.md is not what the result files give

The summary table and the per-run details are generated (between ``<!-- BEGIN GENERATED: name -->`` and
``<!-- END GENERATED: name -->``); everything else in RESULTS.md is hand-written and kept as it is. For each
benchmark and label the newest result file is used. Figures are medians over the rounds of that file, with the
range over rounds; a goal is "met" when every round meets it, "median only" when the median does but some round
does not.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
RESULTS_DIR = ROOT / "benchmarks" / "results"


def latest(results_dir: Path) -> dict[tuple[str, str], tuple[Path, dict]]:
    """The newest result file per (benchmark, label): names end in a sortable UTC stamp."""
    out: dict[tuple[str, str], tuple[Path, dict]] = {}
    for p in sorted(results_dir.glob("*.json")):
        d = json.loads(p.read_text(encoding="utf-8"))
        out[(d["benchmark"], d["label"])] = (p, d)  # later (newer) files overwrite earlier ones
    return out


def fmt_x(s: dict | None) -> str:
    """``1.52× (1.41–1.60)`` from a spread dict."""
    if not s or s.get("median") is None:
        return "n/a"
    if s["min"] == s["max"]:
        return f"{s['median']:.2f}×"
    return f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f})"


def goal_met(s: dict | None, goal: float, higher_is_better: bool = True) -> str:
    if not s or s.get("median") is None:
        return "n/a"
    ok = (lambda x: x >= goal) if higher_is_better else (lambda x: x <= goal)
    if all(ok(v) for v in s["values"]):
        return "met"
    return "median only" if ok(s["median"]) else "**not met**"


def _load_range(d: dict) -> str:
    """Range of the 1-minute load average over every process start/end of the run."""
    loads = []
    for rnd in d.get("rounds", []):
        for r in rnd.get("variants", {}).values():
            for key in ("loadavg_start", "loadavg_end"):
                if r.get(key):
                    loads.append(r[key][0])
    return f"{min(loads):.1f}–{max(loads):.1f}" if loads else "?"


def _where(p: Path, d: dict) -> str:
    return f"{d['date_utc'][:16]}Z, {len(d.get('rounds', []))} rounds, load {_load_range(d)}, `{p.name}`"


def summary_rows(res: dict[tuple[str, str], tuple[Path, dict]]) -> list[list[str]]:
    rows: list[list[str]] = []
    for label, what in (("base", "base SmolLM2-135M"), ("student", "distilled student (Std-CoT LoRA)")):
        if ("eval_vs_lmeval", label) not in res:
            continue
        p, d = res[("eval_vs_lmeval", label)]
        s, st = d["summary"], d["settings"]
        n = s["n"]
        same = (f"identical outputs ≥ {s['identical_outputs_min']}/{n}, same answers ≥ {s['same_answers_min']}/{n} "
                "in every round")
        cfg = f"{n} GSM8K, {st['max_new_tokens']} new tokens, batch {st['batch_size']}, {st['dtype']}"
        rows.append([f"evaluation vs lm-eval HF backend, generation only ({what})", fmt_x(s["speedup_generation"]),
                     "≥ 1.5×", goal_met(s["speedup_generation"], 1.5),
                     f"{cfg}; {same}; CPU-time ratio {fmt_x(s.get('speedup_generation_cpu'))}", _where(p, d)])
        rows.append([f"evaluation vs lm-eval, whole call ({what})", fmt_x(s["speedup_call"]), "—", "",
                     "includes lm-eval's task setup and our scoring/files; CPU-time ratio "
                     f"{fmt_x(s.get('speedup_call_cpu'))}", _where(p, d)])
    if ("train_vs_trl", "smollm2") in res:
        p, d = res[("train_vs_trl", "smollm2")]
        s, st = d["summary"], d["settings"]
        cfg = (f"Std-CoT, {st['questions']} q × K={st['k']}, seq {st['max_seq_len']}, "
               f"grad ckpt {st['gradient_checkpointing']}, tokens/s over the whole loop")
        for v in [x for x in st["variants"] if x.startswith("trl")]:
            rows.append([f"training vs TRL SFTTrainer `{v}`", fmt_x(s["speedup"].get(v)), "—", "", cfg, _where(p, d)])
        best = s["speedup"].get("best_trl")
        rows.append(["training vs TRL's fastest variant in each round", fmt_x(best), "≥ 1.2×, every round > 1.0×",
                     goal_met(best, 1.2) + ("" if not best or best["min"] is None or best["min"] > 1.0
                                             else "; a round ≤ 1.0×"),
                     f"CPU-time ratio {fmt_x(s['speedup_cpu'].get('best_trl'))}", _where(p, d)])
    if ("method_overhead", "smollm2") in res:
        p, d = res[("method_overhead", "smollm2")]
        s, st = d["summary"], d["settings"]
        cfg = (f"{st['questions']} q × K={st['k']}, seq {st['max_seq_len']} (compare_cpu settings), "
               "time per token vs Std-CoT, prepare excluded")
        for m, goal in (("mind", True), ("compact", True), ("mcc_kd", False)):
            if m in s["per_token"]:
                rows.append([f"method overhead {m} (SmolLM2-135M)", fmt_x(s["per_token"][m]),
                             "≤ 1.15×" if goal else "—",
                             goal_met(s["per_token"][m], 1.15, higher_is_better=False) if goal else "", cfg,
                             _where(p, d)])
        if "mind_realistic_run" in s:
            share = s["mind_prepare_share"]
            rows.append(["method overhead mind, realistic run incl. prepare", fmt_x(s["mind_realistic_run"]),
                         "≤ 1.15×", goal_met(s["mind_realistic_run"], 1.15, higher_is_better=False),
                         f"one epoch over {st['prepare_questions']} q × K={st['k']}; prepare "
                         f"{s['mind_prepare_seconds_300']['median']:.0f} s = {100 * share['median']:.1f} % "
                         f"({100 * share['min']:.1f}–{100 * share['max']:.1f} %) of the MIND run", _where(p, d)])
    for (kind, label), (p, d) in sorted(res.items()):
        if kind != "synthesis_overhead":
            continue
        o, st = d["summary"]["overhead"], d["settings"]
        pct = ("n/a" if o["median"] is None else
               f"{100 * o['median']:+.1f} % ({100 * o['min']:+.1f} to {100 * o['max']:+.1f} %)")
        met = "n/a" if o["median"] is None else ("met" if o["max"] <= 0.05 else
                                                 ("median only" if o["median"] <= 0.05 else "**not met**"))
        rows.append([f"synthesis client overhead vs raw httpx ({st['requests']} requests, "
                     f"{st['latency_ms']:g} ms server latency)", pct, "≤ +5 %", met,
                     f"concurrency {st['concurrency']}, local scripted server; vs the faster raw client per round",
                     _where(p, d)])
    gpu = [k for k in res if k[0] == "gpu_check"]
    if gpu:
        for k in gpu:
            p, d = res[k]
            rows.append([f"GPU check ({k[1]})", d["summary"].get("headline", "see details"), "—", "", "", _where(p, d)])
    else:
        rows.append(["GPU check (`benchmarks/gpu_check.sh`)", "not run", "—", "", "no accelerator lent yet", ""])
    return rows


def md_table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _round_rows(d: dict, variants: list[str], cell, tail) -> list[list]:
    """One table row per round: the round, ``cell(rnd, variant, result)`` per variant ("failed" where the
    variant's worker failed), then ``tail(rnd)``."""
    return [[rnd["round"]]
            + ["failed" if "error" in rnd["variants"][v] else cell(rnd, v, rnd["variants"][v]) for v in variants]
            + tail(rnd) for rnd in d["rounds"]]


def details(res: dict[tuple[str, str], tuple[Path, dict]]) -> str:
    parts: list[str] = []
    for (kind, label), (p, d) in sorted(res.items()):
        head = [f"### {kind} — {label} — {d['date_utc']}", "", f"Command: `{d['command']}` → `{p.name}`", "",
                "Settings: " + ", ".join(f"{k} {v}" for k, v in d["settings"].items()), "",
                f"Machine: {d['machine']['cpu']}, {d['machine']['cores']} cores, torch threads "
                f"{d['machine']['torch_threads']}; versions: "
                + ", ".join(f"{k} {v}" for k, v in d["machine"]["versions"].items()), ""]
        if kind == "eval_vs_lmeval":
            rows = []
            for rnd in d["rounds"]:
                o, r = rnd["variants"].get("cotdistill", {}), rnd["variants"].get("lm_eval", {})
                ag = rnd.get("agreement_vs_lm_eval", {})
                rows.append([rnd["round"], o.get("loadavg_start", ["?"])[0], o.get("generation_seconds"),
                             r.get("generation_seconds"), rnd.get("speedup_generation"),
                             rnd.get("speedup_generation_cpu"), o.get("eval_seconds"),
                             r.get("eval_seconds"), rnd.get("speedup_call"), rnd.get("speedup_call_cpu"),
                             f"{ag.get('identical_outputs')}/{ag.get('n')}", f"{ag.get('same_answers')}/{ag.get('n')}",
                             f"{o.get('accuracy')} / {r.get('accuracy')}"])
            head.append(md_table(["round", "load at start", "ours gen s", "lm-eval gen s", "speed-up gen",
                                  "speed-up gen (CPU s)", "ours call s", "lm-eval call s", "speed-up call", "speed-up call (CPU s)",
                                  "identical outputs", "same answers", "accuracy ours / lm-eval"], rows))
            s = d["summary"]
            head += ["", "Samples/s, generation only (median, min–max): " + "; ".join(
                f"{v} {x['median']} ({x['min']}–{x['max']})" for v, x in s["samples_per_s"].items()),
                     "Mean new tokens per question: " + "; ".join(
                f"{v} {x['median']}" for v, x in s["mean_new_tokens"].items())]
        elif kind == "train_vs_trl":
            variants = d["settings"]["variants"]
            rows = _round_rows(d, variants,
                               lambda rnd, v, r: f"{r['tokens_per_s_loop']} (load {r['loadavg_start'][0]})",
                               lambda rnd: [rnd["speedup"].get("best_trl"), rnd["speedup"].get("best_trl_variant"),
                                            rnd["speedup_cpu"].get("best_trl")])
            head.append(md_table(["round"] + [f"{v} tokens/s" for v in variants]
                                 + ["ours ÷ fastest TRL", "fastest TRL", "same, CPU time"], rows))
            s = d["summary"]
            head += ["", "Tokens/s (whole loop), median (min–max): " + "; ".join(
                f"{v} {x['median']} ({x['min']}–{x['max']})" for v, x in s["tokens_per_s"].items()),
                     "Speed-up of " + s["ours"] + " per TRL variant: " + "; ".join(
                f"{v} {fmt_x(x)}" for v, x in s["speedup"].items())]
        elif kind == "method_overhead":
            variants = d["settings"]["variants"]

            def overhead_cell(rnd, v, r):
                if "ms_per_token" in r:
                    return f"{r['ms_per_token']} ms ({rnd['per_token'].get(v)}×), prep {r['prepare_seconds']} s"
                return f"prepare {r['prepare_seconds']} s ({r['questions']} q)"

            def realistic(rnd):
                rr = rnd.get("realistic_run", {})
                return [f"{rr.get('mind_vs_std_cot')}× (prepare {rr.get('mind_prepare_share')})" if rr else ""]

            rows = _round_rows(d, variants, overhead_cell, realistic)
            head.append(md_table(["round"] + variants + ["MIND realistic run ÷ Std-CoT"], rows))
            prep_parts = [(rnd["round"], v, rnd["variants"][v]["prepare_parts_seconds"]) for rnd in d["rounds"]
                          for v in variants if rnd["variants"][v].get("prepare_parts_seconds")]
            if prep_parts:
                head += ["", "Where MIND's prepare goes (seconds: `_encode` = sentence encoder over every path, "
                         "`initial_losses` = the no-grad L0 pass, `warmup` = MetaNet warm-up):", "",
                         md_table(["round", "variant", "encoder", "L0 pass", "MetaNet warm-up"],
                                  [[r, v, t.get("_encode"), t.get("initial_losses"), t.get("warmup")]
                                   for r, v, t in prep_parts])]
        elif kind == "profile_eval":
            rows = [[m, r["wall_seconds"], r["cpu_seconds"], f"{100 * r['forward_share']:.1f} %", r["forward_calls"],
                     r["decode_row_steps"], r["new_tokens_kept"], r["row_steps_per_kept_token"]]
                    for m, r in d["modes"].items()]
            head.append(md_table(["mode", "wall s", "CPU s", "time in model forward", "forward calls",
                                  "decode row-steps", "new tokens kept", "row-steps per kept token"], rows))
            for m, r in d["modes"].items():
                head += ["", f"Top functions by own time ({m}):", "", "```",
                         *[ln for ln in r["top_tottime"] if ln.strip()][-16:], "```"]
        elif d.get("summary", {}).get("body_md"):
            head.append(d["summary"]["body_md"])
        else:
            head.append("```json\n" + json.dumps(d.get("summary", {}), indent=1) + "\n```")
        parts.append("\n".join(head))
    return "\n\n".join(parts)


def render(text: str, blocks: dict[str, str]) -> str:
    """Replace each generated block's body in ``text`` (blocks missing from it are appended at the end)."""
    for name, body in blocks.items():
        begin, end = f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"
        new = f"{begin}\n<!-- made by benchmarks/make_results.py from benchmarks/results/*.json; do not edit -->\n\n{body}\n\n{end}"
        pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        text = pat.sub(lambda _m: new, text) if pat.search(text) else text.rstrip() + "\n\n" + new + "\n"
    return text


def build(results_dir: Path, text: str) -> str:
    res = latest(results_dir)
    table = md_table(["benchmark", "result: median (min–max over rounds)", "goal", "goal met", "setting",
                      "when, rounds, load, file"], summary_rows(res))
    return render(text, {"summary": table, "details": details(res)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--md", default=str(RESULTS_MD))
    a = ap.parse_args()
    md = Path(a.md)
    old = md.read_text(encoding="utf-8") if md.exists() else "# Benchmark results\n"
    new = build(Path(a.results_dir), old)
    if a.check:
        sys.exit(0 if new == old else 1)
    md.write_text(new, encoding="utf-8")
    print(f"wrote {md}")


if __name__ == "__main__":
    main()
