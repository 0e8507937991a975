"""The data card: what went into a curated path dataset and what was left out, as JSON and Markdown."""

from __future__ import annotations

from typing import Any


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def render_markdown(card: dict) -> str:
    """A human-readable ``data_card.md`` from the ``data_card.json`` dict."""
    q = card["questions"]
    lines = [
        f"# Path dataset: {card['provenance'].get('run_name', '')}".rstrip(),
        "",
        f"Curated by cotdistill {card['provenance']['cotdistill_version']} at {card['provenance']['created_at']} "
        f"from `{card['provenance']['store_dir']}` (config hash `{card['provenance']['config_hash']}`, "
        f"extractor `{card['provenance']['extractor_version']}`). Fingerprint `{card['fingerprint']}`.",
        "",
        "## Splits",
        "",
        _table(["split", "questions", "paths"], [[s, v["questions"], v["paths"]] for s, v in card["splits"].items()]),
        "",
        f"Path label: **{card['label_scheme']}**; labels: {', '.join(card['labels']) or '—'}.",
        "",
        "## Questions",
        "",
        _table(
            ["stage", "count"],
            [["in store (after teacher/perspective selection)", q["in_store"]], ["kept", q["kept"]]]
            + [[f"dropped: {k}", v] for k, v in q["dropped"].items()],
        ),
        "",
        "## Records and paths per teacher and perspective",
        "",
        _table(
            ["teacher", "perspective", "records", "correct", "correct %", "kept paths"],
            [
                [r["teacher"], r["perspective"], r["records"], r["correct"], _pct(r["correct_rate"]), r["kept_paths"]]
                for r in card["by_teacher_perspective"]
            ],
        ),
        "",
        _table(
            ["teacher", "model(s)", "records", "correct %", "kept paths"],
            [
                [t, ", ".join(v["models"]), v["records"], _pct(v["correct_rate"]), v["kept_paths"]]
                for t, v in card["by_teacher"].items()
            ],
        ),
        "",
        "## Paths dropped",
        "",
        _table(["reason", "paths"], [[k, v] for k, v in card["paths_dropped"].items()]),
        "",
        "## Paths per question",
        "",
        _table(["paths", "questions"], [[k, v] for k, v in card["paths_per_question"].items()]),
        "",
    ]
    if card.get("roles"):
        r = card["roles"]
        lines += [
            "## Path roles",
            "",
            "Each method trains on the roles its paper defines (`cotdistill.pathset.roles`).",
            "",
            _table(["role kind", "paths", "questions"], [[k, v["paths"], v["questions"]] for k, v in r["kinds"].items()]),
            "",
            _table(["role", "paths"], [[k, v] for k, v in r["by_role"].items()]),
            "",
            f"`min_correct_paths` counts the {r['min_correct_paths_counts']}; a standard path is "
            f"{'required' if r['require_standard_path'] else 'not required'} per question.",
            "",
        ]
        lines += [f"- **{src}**: {note}" for src, note in r["sources"].items()] + [""]
        if r.get("dual_cot"):
            d = r["dual_cot"]
            lines += [f"Dual CoTs (EDIT): {d['questions_with_twin_pair']} question(s) with a linked pair, "
                      f"{d['questions_with_rejected_only_unlinked']} with unlinked wrong paths only, "
                      f"{d['questions_without_rejected']} without a wrong path.", ""]
    if card.get("heldout_rationale_nll"):
        h = card["heldout_rationale_nll"]
        lines += ["## Held-out rationale NLL set", "",
                  f"`{h['set']}`: {h['questions']} questions, {h['rationales']} correct teacher rationales (at most "
                  f"{h['max_per_question']} per question), none of them a training question.", ""]
    if card.get("injected"):
        j = card["injected"]
        lines += ["## Injected paths (curate.inject)", "",
                  f"{j['questions']} question(s) got known-incompatible paths with a correct answer line "
                  f"(seed {j['seed']}): " + ", ".join(f"{k} {v}" for k, v in j["paths"].items())
                  + (f"; not injected (source too short or judged wrong): "
                     + ", ".join(f"{k} {v}" for k, v in j["not_injected"].items()) if j["not_injected"] else "")
                  + ". Their teacher, perspective and label are `injected-<kind>`.", ""]
    if card.get("difficulty"):
        d = card["difficulty"]
        lines += ["## Difficulty", "", f"criterion `{d['criterion']}`: " + ", ".join(
            f"{k} {v}" for k, v in d["kept"].items()
        ), ""]
    g = card["eval_guard"]
    lines += [
        "## Contamination guard",
        "",
        f"Benchmarks: {', '.join(g['benchmarks']) or 'none'}; action `{g['action']}`; "
        f"questions matching an eval question: {g['contaminated']}.",
        "",
    ]
    return "\n".join(lines)
