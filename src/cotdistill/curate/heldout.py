"""Held-out rationale sets: clean teacher rationales of evaluation questions that no method trains on.

Built from a public rationale set (an importer) restricted to a benchmark's questions, re-scored and cleaned like
curation's paths. Curation guards the set's questions (they never enter training) and names the set and its size
in the data card; :mod:`cotdistill.evaluate.rationale_nll` scores students on it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.utils.io import stable_hash

SOURCES = ("eit", "mcc-kd", "sbs", "mentor-kd")


@dataclass(frozen=True)
class RationaleSet:
    """A held-out rationale set: importer ``source`` (with ``options``) × the questions of ``questions``."""

    source: str
    questions: str
    options: dict[str, Any] = field(default_factory=dict)
    max_per_question: int = 3

    @property
    def name(self) -> str:
        """``source:questions`` (folder-safe in file names via :func:`set_file_stem`)."""
        return f"{self.source}:{self.questions}"

    def key(self) -> str:
        """Hash of everything that decides the set's content."""
        return stable_hash({"source": self.source, "questions": self.questions, "options": self.options,
                            "max_per_question": self.max_per_question})


def parse_set(spec: str, options: dict[str, Any] | None = None, max_per_question: int = 3) -> RationaleSet:
    """``"eit:svamp"`` → :class:`RationaleSet`; a one-line error names a bad spec."""
    source, sep, questions = str(spec).partition(":")
    if not sep or source not in SOURCES or not questions:
        raise CotdistillError(f"rationale_nll: {spec!r}: expected SOURCE:QUESTIONS with SOURCE one of "
                              f"{', '.join(SOURCES)} and QUESTIONS a benchmark spec (e.g. eit:svamp)")
    from cotdistill.data.registry import canonical_name

    try:
        canonical_name(questions)
    except CotdistillError:
        raise CotdistillError(f"rationale_nll: {spec!r}: {questions!r} is not a benchmark spec") from None
    options = dict(options or {})
    family = canonical_name(questions).split(":", 1)[0]
    if source == "eit" and "datasets" not in options and family in ("svamp", "gsm8k", "math500"):
        options["datasets"] = ["math" if family == "math500" else family]  # import only the files it needs
    return RationaleSet(source, questions, options, int(max_per_question))


def set_file_stem(rset: RationaleSet) -> str:
    """``rationale_nll-eit-svamp``: the file-name stem of a set's results."""
    return "rationale_nll-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in rset.name)


def load_rationale_set(rset: RationaleSet) -> list[dict[str, Any]]:
    """The set's items, one per question with >= 1 correct rationale, in the benchmark's order:
    ``{question_id, question, gold, kind, choices, rationales: [{teacher, perspective, text}]}``.

    The importer's records are cached once per set under ``cache_dir()/rationale_sets/<key>`` (a rationale store).
    """
    from cotdistill.curate.text import clean_rationale
    from cotdistill.data.answers import score
    from cotdistill.data.registry import load_benchmark
    from cotdistill.data.types import Example
    from cotdistill.teachers.importers import import_rationales
    from cotdistill.teachers.store import RationaleStore
    from cotdistill.utils.paths import cache_dir

    store = RationaleStore(cache_dir() / "rationale_sets" / rset.key())
    if not store.path.is_file():
        import_rationales(rset.source, None, store, where="rationale_nll", **rset.options)
    bench = load_benchmark(rset.questions)
    order = {e.id: i for i, e in enumerate(bench)}
    by_q: dict[str, list[dict]] = defaultdict(list)
    meta: dict[str, Any] = {}
    for rec in store.iter_records(status="ok"):
        qid = str(rec["question_id"])
        if qid not in order:
            continue
        ex = bench[order[qid]]
        ok = score(rec.get("raw_response") or "", Example(ex.id, ex.benchmark, ex.question, ex.answer, ex.kind,
                                                           ex.choices))[1]
        text = clean_rationale(rec.get("raw_response") or "")
        if ok and text:
            by_q[qid].append({"teacher": str(rec["teacher"]), "perspective": str(rec["perspective"]), "text": text,
                              "_order": (str(rec["teacher"]), str(rec["perspective"]), int(rec.get("sample_idx") or 0))})
            meta[qid] = ex
    items = []
    for qid in sorted(by_q, key=order.__getitem__):
        rats = sorted(by_q[qid], key=lambda r: r["_order"])
        by_teacher: dict[str, list[dict]] = defaultdict(list)
        for r in rats:
            by_teacher[r["teacher"]].append(r)
        picked: list[dict] = []
        while len(picked) < rset.max_per_question and any(by_teacher.values()):
            for t in sorted(by_teacher):  # round-robin over teachers
                if by_teacher[t] and len(picked) < rset.max_per_question:
                    picked.append(by_teacher[t].pop(0))
        ex = meta[qid]
        items.append({"question_id": qid, "question": ex.question, "gold": ex.answer, "kind": ex.kind,
                      "choices": list(ex.choices) if ex.choices else None,
                      "rationales": [{k: v for k, v in r.items() if k != "_order"} for r in picked]})
    if not items:
        raise CotdistillError(f"rationale_nll: {rset.name}: no correct {rset.source} rationale of a {rset.questions} "
                              "question (check the importer options and the question spec)")
    return items
