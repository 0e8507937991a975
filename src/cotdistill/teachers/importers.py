"""Importers: public teacher-rationale sets (``shared/data/teacher_rationales_*``) → rationale-store records.

Each importer reads the unmodified upstream files, maps every question to the benchmark registry's
question id (by normalised question text; ambiguous texts are resolved with the file's gold label),
fills ``gold``/``kind``/``choices`` from the registry, and scores the teacher's answer with the data
stage's checker. Keys are stable hashes of (format, question id, teacher, perspective, sample index), so
importing twice adds nothing.

Formats (see each folder's README for files, splits and contamination notes):

- ``mcc-kd``: SVAMP train, GPT-3.5-Turbo, 10 raw rationales per question → perspectives ``sample0..9``.
- ``eit``: GPT-4o (file tag "ChatGPT"), Gemini-1.5-Flash, LLaMA-3-70B; granularity levels → perspectives
  ``level1..6``. Options: ``datasets`` (svamp, gsm8k, math, strategyqa; default the three math sets),
  ``teachers`` (gpt-4o, gemini-1.5-flash, llama-3-70b, human), ``levels`` (ints).
- ``sbs``: Distilling Step-by-Step, PaLM-540B, SVAMP train (800) and CSQA train (9,741), one rationale per
  question → perspective ``standard``. The raw continuation runs on into a hallucinated next exemplar; as
  upstream, the rationale is the text before the first ``Q:`` (the untouched string is kept in
  ``raw_original``). Option ``datasets`` (svamp, csqa).
- ``mentor-kd``: StrategyQA train, gpt-3.5-turbo-instruct, 3 answer-correct rationales per question →
  perspectives ``sample0..2``. The test-split file (teacher outputs on test questions) is never imported.
- ``store``: records of another rationale store folder.

Path roles (:mod:`cotdistill.pathset.roles`; the data card repeats :data:`IMPORT_ROLE_NOTES`):
``mcc-kd``, ``sbs`` and ``mentor-kd`` rationales are the teachers' plain CoT (``standard``); EIT's granularity
levels are prompt styles (``perspective:level<k>``), so no EIT path is standard; EIT's human solutions are
``teacher:human``; ``store`` keeps each record's role.

Rows whose question is not found in the registry are skipped and counted (``unmatched``), except MATH-train
problems (not in the registry by design), which get the id ``math_train/<hash>`` and the file's gold answer.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cotdistill import __version__
from cotdistill.errors import CotdistillError
from cotdistill.pathset.roles import STANDARD, TEACHER_PREFIX, perspective_role
from cotdistill.teachers.store import RationaleStore, record_key
from cotdistill.utils.io import stable_hash

FOLDERS = {
    "mcc-kd": "teacher_rationales_mcc_kd",
    "eit": "teacher_rationales_eit_cot_distill",
    "sbs": "teacher_rationales_distilling_step_by_step",
    "mentor-kd": "teacher_rationales_mentor_kd",
}
FORMATS = (*FOLDERS, "store")

#: Which imported path is the standard one, and why (copied into the data card of every dataset using the format).
IMPORT_ROLE_NOTES = {
    "mcc-kd": "standard: GPT-3.5-Turbo's sampled chain-of-thought answers (MCC-KD samples the plain CoT prompt "
              "10 times per question; every sample is a standard path, perspective sample0..9)",
    "eit": "perspective:level<k>: each file is one granularity-level prompt (a style instruction), so no EIT path "
           "is standard; human solutions are teacher:human",
    "sbs": "standard: PaLM-540B's few-shot chain of thought, one per question",
    "mentor-kd": "standard: gpt-3.5-turbo-instruct's sampled chain-of-thought answers (3 per question)",
    "store": "each record keeps the role it was written with (records without one: perspective 'standard' is "
             "standard, any other perspective is perspective:<id>)",
}

EIT_TEACHERS = {"ChatGPT": "gpt-4o", "chatgpt": "gpt-4o", "gemini": "gemini-1.5-flash", "llama": "llama-3-70b"}
EIT_DEFAULT_TEACHERS = ("gpt-4o", "gemini-1.5-flash", "llama-3-70b")
EIT_DEFAULT_DATASETS = ("svamp", "gsm8k", "math")


# --------------------------------------------------------------------------- helpers


def _normalize(text: str) -> str:
    try:
        from cotdistill.data.prompts import normalize_question
    except ImportError:  # pragma: no cover - data stage always provides it
        return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())
    return normalize_question(text)


def _read_json(path: Path, where: str) -> Any:
    if not path.is_file():
        raise CotdistillError(f"{path}: {where}: file not found (is the data dir complete?)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CotdistillError(f"{path}: {where}: not UTF-8 text (byte offset {e.start})") from None
    if not text.strip():
        raise CotdistillError(f"{path}: {where}: the file is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:  # JSON Lines
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise CotdistillError(f"{path}: {where}: neither JSON nor JSON Lines ({e.msg})") from None
    if not isinstance(data, list):
        raise CotdistillError(f"{path}: {where}: expected a list of rows, got a JSON {type(data).__name__}")
    return data


def _field(row: Any, name: str, path: Path, i: int) -> Any:
    """``row[name]``, or a one-line error naming the file, row and field (a file of another format, a
    hand-edited row): upstream files are read as they are, so their layout is checked here."""
    if not isinstance(row, dict):
        raise CotdistillError(f"{path}: row {i}: not a JSON object (a file of another format?)")
    if row.get(name) is None:
        raise CotdistillError(f"{path}: row {i}: {name}: missing (a file of another format?)")
    return row[name]


class QuestionIndex:
    """Normalised question text → registry examples of one benchmark spec (loaded once)."""

    def __init__(self, spec: str):
        from cotdistill.data.registry import load_benchmark

        self.spec = spec
        self.by_text: dict[str, list[Any]] = defaultdict(list)
        for ex in load_benchmark(spec):
            self.by_text[_normalize(ex.question)].append(ex)

    def match(self, text: str, gold: str | None = None) -> Any | None:
        """The registry example whose question equals ``text`` (normalised); ``gold`` breaks ties."""
        cands = self.by_text.get(_normalize(text), [])
        if len(cands) > 1 and gold is not None:
            from cotdistill.data.answers import is_correct

            for ex in cands:
                if is_correct(str(gold), ex.answer, ex.kind):
                    return ex
        return cands[0] if cands else None


_INDEX_CACHE: dict[str, QuestionIndex] = {}


def _index(spec: str) -> QuestionIndex:
    if spec not in _INDEX_CACHE:
        _INDEX_CACHE[spec] = QuestionIndex(spec)
    return _INDEX_CACHE[spec]


_OPS: dict[type, Callable] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.USub: operator.neg, ast.UAdd: operator.pos,
}


def safe_arith(expr: str) -> float | None:
    """Value of a plain arithmetic expression like ``(84 / 2)`` (numbers, + - * /, parentheses), else None."""
    try:
        node = ast.parse(expr.replace("x", "*").strip(), mode="eval").body
    except SyntaxError:
        return None

    def ev(n: ast.AST) -> float:
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)):
            return float(n.value)
        if isinstance(n, ast.BinOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.left), ev(n.right))
        if isinstance(n, ast.UnaryOp) and type(n.op) in _OPS:
            return _OPS[type(n.op)](ev(n.operand))
        raise ValueError("not arithmetic")

    try:
        return ev(node)
    except (ValueError, ZeroDivisionError, TypeError):
        return None


def _score_text(text: str, ex: Any) -> tuple[str | None, bool]:
    from cotdistill.data.answers import score

    pred, ok = score(text, ex)
    return pred, bool(ok)


def _example(qid: str, benchmark: str, question: str, answer: str, kind: str, choices=None, meta=None) -> Any:
    from cotdistill.data.types import Example

    return Example(id=qid, benchmark=benchmark, question=question, answer=answer, kind=kind,
                   choices=tuple(choices) if choices else None, meta=meta or {})


class _Builder:
    """Builds import records for one format, numbering repeated (question, teacher, perspective) rows."""

    def __init__(self, fmt: str, root: Path):
        self.fmt = fmt
        self.root = root
        self.seen: Counter = Counter()
        self.unmatched: Counter = Counter()
        self.created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def record(self, ex: Any, *, source: str, teacher: str, perspective: str, role: str, text: str, file: Path,
               row: int, parsed: tuple[str | None, bool | None] | None = None, raw_original: str | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
        from cotdistill.data.answers import EXTRACTOR_VERSION

        sample_idx = self.seen[(ex.id, teacher, perspective)]
        self.seen[(ex.id, teacher, perspective)] += 1
        pred, ok = parsed if parsed is not None else _score_text(text, ex)
        key = record_key(
            question_id=ex.id, backend=f"import:{self.fmt}", teacher_model=teacher, perspective=perspective,
            prompt_version=None, gen_params={}, seed=None, sample_idx=sample_idx,
        )
        rec = {
            "key": key, "question_id": ex.id, "question": ex.question, "gold": ex.answer, "kind": ex.kind,
            "choices": list(ex.choices) if ex.choices else None, "source": source, "teacher": teacher,
            "teacher_model": teacher, "backend": f"import:{self.fmt}", "perspective": perspective,
            "role": role, "sample_idx": sample_idx, "prompt": None, "prompt_version": f"import:{self.fmt}",
            "gen_params": {},
            "raw_response": text, "parsed_answer": pred, "correct": ok, "usage": {}, "status": "ok", "error": None,
            "created_at": self.created_at, "extractor_version": EXTRACTOR_VERSION, "cotdistill_version": __version__,
            "import_source": {"format": self.fmt, "file": str(file.relative_to(self.root)), "row": row},
        }
        if raw_original is not None and raw_original != text:
            rec["raw_original"] = raw_original
        if extra:
            rec.update(extra)
        return rec


# --------------------------------------------------------------------------- formats


def _iter_mcc_kd(root: Path, **_: Any) -> tuple[_Builder, Iterator[dict]]:
    b = _Builder("mcc-kd", root)

    def gen() -> Iterator[dict]:
        f = root / "data" / "SVAMP" / "train.json"
        idx = _index("svamp:all")
        for i, row in enumerate(_read_json(f, "mcc-kd SVAMP train")):
            ex = idx.match(_field(row, "instruction", f, i), row.get("label"))
            if ex is None:
                b.unmatched["svamp"] += 1
                continue
            for k, out in enumerate(row.get("output") or []):
                yield b.record(ex, source="svamp:all", teacher="gpt-3.5-turbo", perspective=f"sample{k}",
                               role=STANDARD,
                               text=out, file=f, row=i)

    return b, gen()


_EIT_SVAMP = re.compile(r"^SVAMP_(ChatGPT|gemini|llama)_level(\d)_ranked\.json$")
_EIT_FILES_OTHER = {
    # file: (dataset, teacher, level, text field)
    "gsm8k_gemini_level1_ranked.json": ("gsm8k", "gemini-1.5-flash", 1, "output"),
    "gsm8k_llama_level1_ranked.json": ("gsm8k", "llama-3-70b", 1, "output"),
    "math_mix_level3.json": ("math", "gpt-4o", 3, "chatgpt_output"),
    "math_gemini_level3_ranked.json": ("math", "gemini-1.5-flash", 3, "gemini_output"),
    "math_llama_level3_ranked.json": ("math", "llama-3-70b", 3, "llama_output"),
    "strategyQA_chatgpt_level_3_ranked.json": ("strategyqa", "gpt-4o", 3, "output"),
    "stqa_gemini_level3_ranked.json": ("strategyqa", "gemini-1.5-flash", 3, "output"),
    "stqa_llama_level3_ranked.json": ("strategyqa", "llama-3-70b", 3, "output"),
}
_EIT_SPEC = {"svamp": "svamp:all", "gsm8k": "gsm8k:train", "strategyqa": "strategyqa"}


def eit_files(root: Path, datasets=EIT_DEFAULT_DATASETS, teachers=EIT_DEFAULT_TEACHERS, levels=None
              ) -> list[tuple[Path, str, str, int, str]]:
    """The EIT files selected by the options: (path, dataset, teacher, level, text field), sorted by name."""
    data = root / "data"
    if not data.is_dir():
        raise CotdistillError(f"{root}: eit: no data/ folder (expected the EIT-NLP/Distilling-CoT-Reasoning layout)")
    out = []
    for f in sorted(data.glob("*.json")):
        m = _EIT_SVAMP.match(f.name)
        if m:
            spec = ("svamp", EIT_TEACHERS[m.group(1)], int(m.group(2)), "output")
        elif f.name == "svamp_human_annotation.json":
            spec = ("svamp", "human", 0, "output")
        elif f.name in _EIT_FILES_OTHER:
            spec = _EIT_FILES_OTHER[f.name]
        else:
            continue
        ds, teacher, level, field = spec
        if ds in datasets and teacher in teachers and (levels is None or level in levels or teacher == "human"):
            out.append((f, ds, teacher, level, field))
    return out


def _as_list(v: Any, name: str, cast=str) -> list:
    if v is None:
        return None
    if isinstance(v, (str, int)):
        v = [x for x in str(v).split(",") if x.strip()]
    try:
        return [cast(x.strip() if isinstance(x, str) else x) for x in v]
    except (TypeError, ValueError):
        raise CotdistillError(f"import options: {name}: expected a list, got {v!r}") from None


def _iter_eit(root: Path, datasets=None, teachers=None, levels=None, **_: Any) -> tuple[_Builder, Iterator[dict]]:
    datasets = _as_list(datasets, "datasets") or list(EIT_DEFAULT_DATASETS)
    teachers = _as_list(teachers, "teachers") or list(EIT_DEFAULT_TEACHERS)
    levels = _as_list(levels, "levels", int)
    bad = set(datasets) - {"svamp", "gsm8k", "math", "strategyqa"}
    if bad:
        raise CotdistillError(f"import options: datasets: unknown {sorted(bad)} (svamp, gsm8k, math, strategyqa)")
    bad = set(teachers) - {*EIT_DEFAULT_TEACHERS, "human"}
    if bad:
        raise CotdistillError(f"import options: teachers: unknown {sorted(bad)} ({', '.join(EIT_DEFAULT_TEACHERS)}, human)")
    b = _Builder("eit", root)
    files = eit_files(root, datasets, teachers, levels)

    def gen() -> Iterator[dict]:
        for f, ds, teacher, level, field in files:
            perspective = "human" if teacher == "human" else f"level{level}"
            for i, row in enumerate(_read_json(f, "eit")):
                text = row.get(field) if isinstance(row, dict) else _field(row, field, f, i)  # no text: counted below
                if not isinstance(text, str):
                    b.unmatched[f"{ds}:no_text"] += 1
                    continue
                text = text.strip()
                if ds == "math":
                    problem = _field(row, "problem", f, i)
                    qid = "math_train/" + stable_hash(_normalize(problem), 12)
                    ex = _example(qid, "math_train", problem, str(_field(row, "output", f, i)), "math",
                                  meta={"level": row.get("level"), "type": row.get("type")})
                    source = "math:train"
                else:
                    source = _EIT_SPEC[ds]
                    ex = _index(source).match(_field(row, "instruction", f, i))
                    if ex is None:
                        b.unmatched[ds] += 1
                        continue
                yield b.record(ex, source=source, teacher=teacher, perspective=perspective,
                               role=f"{TEACHER_PREFIX}{teacher}" if teacher == "human" else perspective_role(perspective),
                               text=text, file=f,
                               row=i, extra={"granularity_level": level or None})

    return b, gen()


_SBS_SVAMP_ANS = re.compile(r"The answer is\s*(.+?)\s*\.?\s*$", re.S)
_SBS_CQA_ANS = re.compile(r"So the answer is\s*\(([a-eA-E])\)")


def _iter_sbs(root: Path, datasets=None, **_: Any) -> tuple[_Builder, Iterator[dict]]:
    datasets = _as_list(datasets, "datasets") or ["svamp", "csqa"]
    bad = set(datasets) - {"svamp", "csqa"}
    if bad:
        raise CotdistillError(f"import options: datasets: unknown {sorted(bad)} (svamp, csqa)")
    b = _Builder("sbs", root)
    base = root / "datasets"

    def chunks(folder: Path, n: int) -> list[str]:
        out: list[str] = []
        for k in range(n):
            f = folder / f"train_CoT_{k}.json"
            if not f.is_file():
                break
            out.extend(_read_json(f, "sbs"))
        return out

    def gen() -> Iterator[dict]:
        from cotdistill.data.answers import is_correct

        if "svamp" in datasets:
            f = base / "svamp" / "svamp_train.json"
            rows = _read_json(f, "sbs svamp train")
            outs = chunks(base / "svamp" / "llm", 10)
            if len(outs) != len(rows):
                raise CotdistillError(f"{f}: sbs: {len(rows)} questions but {len(outs)} rationales in llm/train_CoT_*")
            idx = _index("svamp:all")
            for i, (row, raw) in enumerate(zip(rows, outs)):
                gold_val = safe_arith(str(_field(row, "label", f, i)))
                ex = idx.match(_field(row, "input", f, i), None if gold_val is None else str(gold_val))
                if ex is None:
                    b.unmatched["svamp"] += 1
                    continue
                text = raw.split("Q:")[0].rstrip()
                m = _SBS_SVAMP_ANS.search(text)
                val = safe_arith(m.group(1)) if m else None
                if val is not None:
                    pred = f"{val:g}" if val != int(val) else str(int(val))
                    parsed = (pred, bool(is_correct(pred, ex.answer, ex.kind)))
                else:
                    parsed = None  # let the data checker read it
                yield b.record(ex, source="svamp:all", teacher="palm-540b", perspective="standard",
                               role=STANDARD, text=text,
                               file=f.parent / "llm" / f"train_CoT_{i // 500}.json", row=i, parsed=parsed,
                               raw_original=raw)
        if "csqa" in datasets:
            f = base / "cqa" / "cqa_train.json"
            rows = _read_json(f, "sbs cqa train")
            outs = chunks(base / "cqa" / "llm", 10)
            if len(outs) != len(rows):
                raise CotdistillError(f"{f}: sbs: {len(rows)} questions but {len(outs)} rationales in llm/train_CoT_*")
            idx = _index("csqa:train")
            by_id = {}
            for exs in idx.by_text.values():
                for ex in exs:
                    by_id[str(ex.meta.get("orig_id") or ex.id).split("/")[-1]] = ex
            for i, (row, raw) in enumerate(zip(rows, outs)):
                ex = by_id.get(_field(row, "id", f, i))
                if ex is None:
                    cands = idx.by_text.get(_normalize(_field(row, "question", f, i)), [])
                    choices = _field(row, "choices", f, i)
                    ex = next((c for c in cands if c.choices and set(c.choices) == set(choices)), None)
                if ex is None:
                    b.unmatched["csqa"] += 1
                    continue
                text = raw.split("Q:")[0].rstrip()
                m = _SBS_CQA_ANS.search(text)
                parsed = None
                if m and ex.choices:
                    k = "abcde".index(m.group(1).lower())
                    opt = row["choices"][k] if k < len(row["choices"]) else None
                    letter = chr(ord("A") + list(ex.choices).index(opt)) if opt in ex.choices else None
                    parsed = (letter, bool(letter is not None and is_correct(letter, ex.answer, ex.kind)))
                yield b.record(ex, source="csqa:train", teacher="palm-540b", perspective="standard",
                               role=STANDARD, text=text,
                               file=base / "cqa" / "llm" / f"train_CoT_{i // 1000}.json", row=i, parsed=parsed,
                               raw_original=raw)

    return b, gen()


def _iter_mentor_kd(root: Path, **_: Any) -> tuple[_Builder, Iterator[dict]]:
    b = _Builder("mentor-kd", root)

    def gen() -> Iterator[dict]:
        from cotdistill.data.answers import extract_answer, is_correct

        f = root / "data" / "main" / "strategy_qa_3_train.json"
        idx = _index("strategyqa")
        per_q: Counter = Counter()
        for i, row in enumerate(_read_json(f, "mentor-kd StrategyQA train")):
            ex = idx.match(_field(row, "input", f, i), str(row.get("answer", "")).lower() or None)
            if ex is None:
                b.unmatched["strategyqa"] += 1
                continue
            k = per_q[ex.id]
            per_q[ex.id] += 1
            text = str(_field(row, "chain", f, i)).strip()
            if row.get("initial_correct") is True:
                # upstream checked every kept chain against the gold label; the chains state the verdict in
                # words ("there is no doubt that ... did"), which a rule extractor misreads, so trust the file
                pred = "yes" if str(row.get("answer")).strip().lower() in ("yes", "true") else "no"
            else:
                pred = extract_answer(text, ex.kind)
            ok = bool(pred is not None and is_correct(pred, ex.answer, ex.kind))
            yield b.record(ex, source="strategyqa", teacher="gpt-3.5-turbo-instruct", perspective=f"sample{k}",
                           role=STANDARD,
                           text=text, file=f, row=i, parsed=(pred, ok))

    return b, gen()


def _iter_store(root: Path, **_: Any) -> tuple[_Builder, Iterator[dict]]:
    b = _Builder("store", root)
    src = RationaleStore(root)
    if not src.path.is_file():
        raise CotdistillError(f"{root}: store: no records.jsonl here")
    return b, src.iter_records("ok")


_ITERS = {"mcc-kd": _iter_mcc_kd, "eit": _iter_eit, "sbs": _iter_sbs, "mentor-kd": _iter_mentor_kd,
          "store": _iter_store}


def import_option_names(fmt: str) -> list[str]:
    """The options importer ``fmt`` understands (its keyword parameters); anything else is a typo."""
    import inspect

    params = inspect.signature(_ITERS[fmt]).parameters.values()
    return [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "root"]


def check_import_options(fmt: str, options: dict, where: str = "import options") -> None:
    """Refuse options importer ``fmt`` does not know (a typo would silently change which records are imported)."""
    if fmt not in _ITERS:
        return
    known = import_option_names(fmt)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise CotdistillError(f"{where}: unknown option(s) {unknown} for format {fmt} "
                              f"(known: {', '.join(known) or 'none'})")


def default_path(fmt: str) -> Path:
    """The set's folder in the data dir (``data_dir()/teacher_rationales_*``)."""
    from cotdistill.utils.paths import data_dir

    return data_dir() / FOLDERS[fmt]


# what a store folder may hold besides records.jsonl (written by synthesis; dot-files are locks)
_STORE_SIDE_FILES = {"synthesis_summary.json", "torn"}


def _check_store_folder(store: RationaleStore) -> None:
    """Refuse to start a store inside a folder that holds something else (a curated dataset, an
    evaluation, a run): records.jsonl would be mixed into a finished result."""
    if not store.dir.exists() or store.path.exists():
        return
    if store.dir.is_file():
        raise CotdistillError(f"{store.dir}: --store: is a file, not a rationale store folder")
    other = sorted(p.name for p in store.dir.iterdir()
                   if not p.name.startswith(".") and p.name not in _STORE_SIDE_FILES)
    if other:
        raise CotdistillError(
            f"{store.dir}: --store: not a rationale store (no records.jsonl, but holds {', '.join(other[:3])}"
            f"{', ...' if len(other) > 3 else ''}); choose an empty or new folder"
        )


def import_rationales(
    format: str, path: str | Path | None, store: RationaleStore | str | Path, *, batch: int = 2000,
    where: str | None = None, **options: Any
) -> dict[str, Any]:
    """Import a public rationale set into ``store``; records whose key is already there are skipped.

    ``where`` names the source setting in errors (e.g. ``config.yaml: data.imports[0].path``).
    Returns ``{"format", "path", "read", "added", "skipped_existing", "unmatched", "by_teacher",
    "by_perspective", "correct"}``.
    """
    if format not in _ITERS:
        raise CotdistillError(f"import: format: unknown '{format}' (known: {', '.join(FORMATS)})")
    if path is None:
        if format == "store":
            raise CotdistillError("import: path: the 'store' format needs the folder of the store to copy")
        root = default_path(format)
    else:
        root = Path(path).expanduser()
    if not root.exists():
        raise CotdistillError(f"{where}: {root}: folder not found" if where
                              else f"{root}: import {format}: folder not found")
    check_import_options(format, options, f"{where.removesuffix('.path')}.options" if where else "import: --option")
    store = store if isinstance(store, RationaleStore) else RationaleStore(store)
    _check_store_folder(store)
    builder, records = _ITERS[format](root, **options)
    existing = store.done_keys()
    read = added = 0
    by_teacher: Counter = Counter()
    by_persp: Counter = Counter()
    correct = 0
    buf: list[dict] = []
    for rec in records:
        read += 1
        if rec["key"] in existing:
            continue
        existing.add(rec["key"])
        buf.append(rec)
        by_teacher[rec["teacher"]] += 1
        by_persp[rec["perspective"]] += 1
        correct += rec.get("correct") is True
        if len(buf) >= batch:
            added += store.append(buf)
            buf = []
    added += store.append(buf)
    return {
        "format": format, "path": str(root), "read": read, "added": added, "skipped_existing": read - added,
        "unmatched": dict(builder.unmatched), "by_teacher": dict(by_teacher), "by_perspective": dict(by_persp),
        "correct": correct,
    }
