"""Contamination guard: no test question of an evaluation benchmark may enter a training set."""

from __future__ import annotations

from collections.abc import Iterable

from cotdistill.errors import CotdistillError

MAX_LISTED = 10


def eval_question_index(benchmarks: Iterable[str]) -> dict[str, list[str]]:
    """Map normalised question text -> ``["bench:id", ...]`` over the eval splits of ``benchmarks``
    (loaded through the data registry, e.g. ``svamp`` = the held-out eval split)."""
    from cotdistill.data.prompts import normalize_question
    from cotdistill.data.registry import load_benchmark

    index: dict[str, list[str]] = {}
    for spec in benchmarks:
        for ex in load_benchmark(spec):
            index.setdefault(normalize_question(ex.question), []).append(f"{spec}:{ex.id}")
    return index


def find_contaminated(questions: dict[str, str], benchmarks: list[str]) -> dict[str, list[str]]:
    """Question ids (keys of ``questions``, id -> text) whose normalised text is an eval question of
    ``benchmarks``; each mapped to the matching ``bench:id`` entries. Empty when ``benchmarks`` is."""
    if not benchmarks:
        return {}
    from cotdistill.data.prompts import normalize_question

    index = eval_question_index(benchmarks)
    hits: dict[str, list[str]] = {}
    for qid, text in questions.items():
        match = index.get(normalize_question(text))
        if match:
            hits[qid] = match
    return hits


def contamination_error(where: str, hits: dict[str, list[str]]) -> CotdistillError:
    """The one-line refusal: how many, which benchmarks, the first ids (truncated list + count)."""
    ids = sorted(hits)
    benches = sorted({m.split(":", 1)[0] for ms in hits.values() for m in ms})
    shown = ", ".join(f"{q} (= {hits[q][0]})" for q in ids[:MAX_LISTED])
    more = f" (+{len(ids) - MAX_LISTED} more)" if len(ids) > MAX_LISTED else ""
    return CotdistillError(
        f"{where}: curate.eval_guard: {len(ids)} training question(s) are test questions of "
        f"{', '.join(benches)}: {shown}{more}; remove them from the store or set curate.eval_guard_action: drop"
    )
