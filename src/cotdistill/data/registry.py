"""Benchmark registry: one loader per benchmark, reading the local data dir or (online only) the Hugging Face Hub.

``load_benchmark(spec)`` returns :class:`~cotdistill.data.types.Example` records in file order. Where the files come
from: ``cotdistill.utils.paths.data_dir()`` (``$COTDISTILL_DATA_DIR`` or ``../shared/data``, layout as that folder's
README). When no data dir exists at all, the loader calls ``datasets.load_dataset`` on the Hub id listed in
:func:`benchmark_info`. When a data dir exists but a file is missing, that is an error naming the path (never a
silent download).

Specs
-----
=================  ======  =====  ===========================================================================
spec               kind    size   source
=================  ======  =====  ===========================================================================
``gsm8k``          number  1,319  ``gsm8k/test.jsonl``; gold = text after ``####``, commas stripped
``gsm8k:train``    number  7,473  ``gsm8k/train.jsonl``
``gsm8k:dev``      number    200  tuning split: 200 of ``gsm8k:train``
``svamp``          number    300  held-out SVAMP (= ``svamp:test300``), see the split policy below
``svamp:train``    number    700  the MCC-KD train questions
``svamp:all``      number  1,000  ``svamp/SVAMP.json``
``svamp:dev``      number    100  tuning split: 100 of ``svamp:train`` (see "Dev splits" below)
``math500``        math      500  ``math500/test.jsonl`` (``answer`` field)
``csqa``           choice  1,221  ``commonsenseqa/dev_rand_split.jsonl`` (the official dev set; test is unlabelled)
``csqa:train``     choice  9,741  ``commonsenseqa/train_rand_split.jsonl``
``strategyqa``     yesno   2,290  ``strategyqa/train.json`` + ``dev.json``: all labelled questions (the official
                                  test set has hidden labels, so CoT papers evaluate on these); answer yes/no
``gpqa_diamond``   choice    198  ``gpqa_diamond/gpqa_diamond.csv`` you provide (never shipped: see that folder's
                                  README); options shuffled per question, seeded by (seed, question id)
``jsonl:PATH``     any        -   your file: one JSON object a line with ``question``, ``answer`` (optional ``id``,
                                  ``choices``, ``kind``)
=================  ======  =====  ===========================================================================

SVAMP split policy
------------------
SVAMP has 1,000 problems and no official split; every public rationale set carves its own (measured on normalised
question text, Body + " " + Question):

* MCC-KD (``teacher_rationales_mcc_kd/data/SVAMP``): train 700 / dev 150 / test 150, disjoint, covering all 1,000.
* EIT (``teacher_rationales_eit_cot_distill/data/SVAMP_*``): the same 700 questions in every file, but a DIFFERENT 700:
  487 are MCC-KD train questions and 213 are in MCC-KD dev+test.
* Distilling step-by-step (``datasets/svamp/svamp_train.json``, 800): 236 of them are in MCC-KD dev+test.

We fix ONE split: **eval = ``svamp:test300`` = MCC-KD dev + test (the 300 questions not in MCC-KD's 700 train)**,
**``svamp:train`` = MCC-KD's 700 train**. It is the only published split whose full multi-rationale teacher set
(10 GPT-3.5 rationales per question) is entirely usable for training, and it is also Mentor-KD's split. The 300 ids
live in :mod:`cotdistill.data.svamp_split` (ids only), so the Hub path gets the same split. Rationale sets drawn
from other splits (EIT: 213 questions, DSS: 236 questions) include eval questions: the curation contamination
guard (``curate.eval_guard``, normalised text) must drop them. ``svamp:dev150`` / ``svamp:test150`` expose the
two MCC-KD halves. SVAMP ids are the ``ID`` field (``chal-1`` ... ``chal-1000``).

Dev splits
----------
Budgets and hyperparameters are chosen on a dev split, never on a question that later scores a table.
``svamp:dev`` / ``gsm8k:dev`` are fixed slices of the training side (so disjoint from every test question): the
100 / 200 questions of ``svamp:train`` / ``gsm8k:train`` with the smallest ``sha256("cotdistill-dev/" + id)``,
in file order. The hash rule needs no stored list and gives the same slice on the Hub path. Curation always
guards the benchmarks a run evaluates (``eval.benchmarks``), so a run tuned on a dev split never trains on it;
a comparison whose budget was tuned on dev lists the dev split in ``curate.eval_guard`` to train on the same data.

``limit`` keeps the first N records in file order (deterministic). On the Hub path the order is the Hub's, which
matches the local files for GSM8K, MATH500, CSQA and SVAMP (sorted by id) but not for StrategyQA.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotdistill.data.answers import format_number, to_number
from cotdistill.data.svamp_split import MCC_DEV150, MCC_TEST150, TEST300
from cotdistill.data.types import Example
from cotdistill.errors import CotdistillError
from cotdistill.utils.io import iter_text_lines
from cotdistill.utils.paths import DATA_ENV, data_dir

LETTERS = "ABCDEFGHIJ"
GPQA_CSV = "gpqa_diamond/gpqa_diamond.csv"


@dataclass(frozen=True)
class BenchmarkInfo:
    """What a benchmark spec is: answer kind, role (``id`` in-distribution / ``ood``), whether it is an
    evaluation split, its expected size, and where it is read from (data-dir path) or downloaded (Hub id)."""

    name: str
    kind: str
    role: str
    is_eval: bool
    size: int | None
    local: str
    hub: str
    description: str


_INFOS: dict[str, BenchmarkInfo] = {
    i.name: i
    for i in [
        BenchmarkInfo("gsm8k", "number", "id", True, 1319, "gsm8k/test.jsonl", "openai/gsm8k main test",
                      "GSM8K test"),
        BenchmarkInfo("gsm8k:train", "number", "id", False, 7473, "gsm8k/train.jsonl", "openai/gsm8k main train",
                      "GSM8K train"),
        BenchmarkInfo("svamp", "number", "id", True, 300, "svamp/SVAMP.json", "ChilleD/SVAMP train+test",
                      "SVAMP held-out 300 (MCC-KD dev+test)"),
        BenchmarkInfo("svamp:train", "number", "id", False, 700, "svamp/SVAMP.json", "ChilleD/SVAMP train+test",
                      "SVAMP MCC-KD train 700"),
        BenchmarkInfo("svamp:all", "number", "id", True, 1000, "svamp/SVAMP.json", "ChilleD/SVAMP train+test",
                      "all 1,000 SVAMP problems (do not train on SVAMP when evaluating on this)"),
        BenchmarkInfo("svamp:dev", "number", "id", True, 100, "svamp/SVAMP.json", "ChilleD/SVAMP train+test",
                      "SVAMP tuning split: 100 of the MCC-KD train 700 (hash rule)"),
        BenchmarkInfo("gsm8k:dev", "number", "id", True, 200, "gsm8k/train.jsonl", "openai/gsm8k main train",
                      "GSM8K tuning split: 200 of GSM8K train (hash rule)"),
        BenchmarkInfo("svamp:dev150", "number", "id", True, 150, "svamp/SVAMP.json", "ChilleD/SVAMP train+test",
                      "SVAMP MCC-KD dev 150"),
        BenchmarkInfo("svamp:test150", "number", "id", True, 150, "svamp/SVAMP.json", "ChilleD/SVAMP train+test",
                      "SVAMP MCC-KD test 150"),
        BenchmarkInfo("math500", "math", "id", True, 500, "math500/test.jsonl", "HuggingFaceH4/MATH-500 test",
                      "MATH500"),
        BenchmarkInfo("csqa", "choice", "ood", True, 1221, "commonsenseqa/dev_rand_split.jsonl",
                      "tau/commonsense_qa validation", "CommonsenseQA dev (A-E)"),
        BenchmarkInfo("csqa:train", "choice", "ood", False, 9741, "commonsenseqa/train_rand_split.jsonl",
                      "tau/commonsense_qa train", "CommonsenseQA train (A-E)"),
        BenchmarkInfo("strategyqa", "yesno", "ood", True, 2290, "strategyqa/train.json+strategyqa/dev.json",
                      "ChilleD/StrategyQA train+test", "StrategyQA, all 2,290 labelled questions"),
        BenchmarkInfo("gpqa_diamond", "choice", "ood", True, 198, GPQA_CSV, "Idavidrein/gpqa gpqa_diamond train",
                      "GPQA Diamond (A-D, shuffled per question; gated, not shipped)"),
    ]
}

_ALIASES = {
    "gsm8k:test": "gsm8k",
    "svamp:test300": "svamp",
    "svamp:test": "svamp",
    "math500:test": "math500",
    "math-500": "math500",
    "csqa:dev": "csqa",
    "commonsenseqa": "csqa",
    "strategyqa:all": "strategyqa",
    "gpqa": "gpqa_diamond",
    "gpqa-diamond": "gpqa_diamond",
    "gpqa_d": "gpqa_diamond",
}


def list_benchmarks() -> list[str]:
    """All built-in benchmark specs (``jsonl:PATH`` is accepted too)."""
    return list(_INFOS)


def canonical_name(spec: str) -> str:
    """The registry name for ``spec`` (aliases resolved, lowercase); ``jsonl:PATH`` is returned as given."""
    s = spec.strip()
    if s.lower().startswith("jsonl:"):
        return "jsonl:" + s[6:]
    s = s.lower()
    s = _ALIASES.get(s, s)
    if s not in _INFOS:
        raise CotdistillError(
            f"benchmark {spec!r}: unknown; known: {', '.join(list_benchmarks())}, jsonl:PATH"
        )
    return s


def benchmark_info(name: str) -> BenchmarkInfo:
    """Metadata for a spec. ``jsonl:PATH`` gets kind ``mixed`` (inferred per line) and role ``id``."""
    n = canonical_name(name)
    if n.startswith("jsonl:"):
        return BenchmarkInfo(n, "mixed", "id", True, None, n[6:], "", "user JSONL file")
    return _INFOS[n]


# --------------------------------------------------------------------------- file / Hub access


def _file(root: Path, rel: str, bench: str) -> Path:
    p = root / rel
    if not p.is_file():
        raise CotdistillError(f"{p}: file not found (needed by benchmark {bench}; data dir from {DATA_ENV} or ../shared/data)")
    return p


def _read_jsonl(path: Path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise CotdistillError(f"{path}:{i}: invalid JSON ({e.msg})") from None
    return out


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CotdistillError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None


def _hub(path: str, name: str | None, split: str) -> list[dict]:
    """Rows of a Hub dataset split (online use only; tests never reach this)."""
    try:
        import datasets

        ds = datasets.load_dataset(path, name, split=split)
    except Exception as e:  # noqa: BLE001 - any network/auth failure becomes one user-facing line
        where = f"{path}" + (f" ({name})" if name else "") + f" split {split}"
        raise CotdistillError(
            f"hub dataset {where}: could not load ({type(e).__name__}: {e}); "
            f"set {DATA_ENV} to a local data folder instead"
        ) from None
    return [dict(r) for r in ds]


# --------------------------------------------------------------------------- loaders


def _gsm8k_gold(solution: str) -> str:
    if "####" not in solution:
        raise CotdistillError("gsm8k: answer: no '####' line in a reference solution")
    return solution.split("####")[-1].strip().replace(",", "")


def _load_gsm8k(name: str, root: Path | None) -> list[Example]:
    split = "train" if name == "gsm8k:train" else "test"
    rows = _read_jsonl(_file(root, f"gsm8k/{split}.jsonl", name)) if root else _hub("openai/gsm8k", "main", split)
    return [
        Example(f"gsm8k-{split}-{i}", name, r["question"], _gsm8k_gold(r["answer"]), "number",
                meta={"solution": r["answer"]})
        for i, r in enumerate(rows)
    ]


def _svamp_num(sid: str) -> int:
    return int(str(sid).rsplit("-", 1)[-1])


def _load_svamp(name: str, root: Path | None) -> list[Example]:
    if root:
        rows = _read_json(_file(root, "svamp/SVAMP.json", name))
    else:
        rows = _hub("ChilleD/SVAMP", None, "train") + _hub("ChilleD/SVAMP", None, "test")
        if rows and "ID" not in rows[0]:
            raise CotdistillError("hub dataset ChilleD/SVAMP: ID: missing; use a local svamp/SVAMP.json")
        rows.sort(key=lambda r: _svamp_num(r["ID"]))
    keep: Callable[[int], bool] = {
        "svamp": lambda n: n in TEST300,
        "svamp:train": lambda n: n not in TEST300,
        "svamp:all": lambda n: True,
        "svamp:dev150": lambda n: n in set(MCC_DEV150),
        "svamp:test150": lambda n: n in set(MCC_TEST150),
    }[name]
    out = []
    for r in rows:
        if not keep(_svamp_num(r["ID"])):
            continue
        q = f"{str(r['Body']).strip()} {str(r['Question']).strip()}"
        out.append(Example(str(r["ID"]), name, q, format_number(r["Answer"]), "number",
                           meta={"equation": r.get("Equation"), "type": r.get("Type")}))
    return out


def _load_math500(name: str, root: Path | None) -> list[Example]:
    rows = _read_jsonl(_file(root, "math500/test.jsonl", name)) if root else _hub("HuggingFaceH4/MATH-500", None, "test")
    return [
        Example(str(r.get("unique_id") or f"math500-{i}"), name, r["problem"], str(r["answer"]).strip(), "math",
                meta={"subject": r.get("subject"), "level": r.get("level")})
        for i, r in enumerate(rows)
    ]


def _load_csqa(name: str, root: Path | None) -> list[Example]:
    split = "train" if name == "csqa:train" else "dev"
    if root:
        rows = _read_jsonl(_file(root, f"commonsenseqa/{split}_rand_split.jsonl", name))
        norm = [
            (r["id"], r["question"]["stem"], [(c["label"], c["text"]) for c in r["question"]["choices"]],
             r["answerKey"], r["question"].get("question_concept"))
            for r in rows
        ]
    else:
        rows = _hub("tau/commonsense_qa", None, "train" if split == "train" else "validation")
        norm = [
            (r["id"], r["question"], list(zip(r["choices"]["label"], r["choices"]["text"])), r["answerKey"],
             r.get("question_concept"))
            for r in rows
        ]
    out = []
    for qid, stem, ch, key, concept in norm:
        ch = sorted(ch)
        out.append(Example(str(qid), name, stem.strip(), str(key).strip().upper(), "choice",
                           tuple(t for _, t in ch), meta={"concept": concept}))
    return out


def _yesno(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    s = str(v).strip().lower()
    if s in ("true", "yes", "1"):
        return "yes"
    if s in ("false", "no", "0"):
        return "no"
    raise CotdistillError(f"strategyqa: answer: not a boolean ({v!r})")


def _load_strategyqa(name: str, root: Path | None) -> list[Example]:
    if root:
        rows = [(r, "train") for r in _read_json(_file(root, "strategyqa/train.json", name))]
        rows += [(r, "dev") for r in _read_json(_file(root, "strategyqa/dev.json", name))]
    else:
        # wics/strategy-qa is a loading script, which datasets>=4 no longer runs; ChilleD's parquet copy holds the
        # same 2,290 labelled questions as a train/test split (Fine-tune-CoT's split).
        rows = [(r, "train") for r in _hub("ChilleD/StrategyQA", None, "train")]
        rows += [(r, "test") for r in _hub("ChilleD/StrategyQA", None, "test")]
    return [
        Example(str(r["qid"]), name, r["question"].strip(), _yesno(r["answer"]), "yesno",
                meta={"split": sp, "term": r.get("term")})
        for r, sp in rows
    ]


def _shuffle_rng(seed: int, qid: str) -> random.Random:
    # Seeded by a stable hash of (seed, id): independent of PYTHONHASHSEED and of the question order.
    h = hashlib.sha256(f"{seed}:{qid}".encode()).hexdigest()
    return random.Random(int(h[:16], 16))


def gpqa_example(row: dict, idx: int, seed: int = 0, name: str = "gpqa_diamond") -> Example:
    """One GPQA row (official CSV columns) -> Example with options shuffled by an RNG seeded by (seed, id).

    ``meta.permutation[i]`` is the original option index shown at letter i (0 = the correct answer,
    1..3 = Incorrect Answer 1..3).
    """
    qid = str(row.get("Record ID") or f"gpqa_diamond-{idx}").strip()
    try:
        opts = [str(row["Correct Answer"]).strip()] + [str(row[f"Incorrect Answer {k}"]).strip() for k in (1, 2, 3)]
        question = str(row["Question"]).strip()
    except KeyError as e:
        raise CotdistillError(f"{GPQA_CSV}: {e.args[0]}: missing column") from None
    perm = list(range(4))
    _shuffle_rng(seed, qid).shuffle(perm)
    return Example(qid, name, question, LETTERS[perm.index(0)], "choice", tuple(opts[j] for j in perm),
                   meta={"permutation": perm, "shuffle_seed": seed, "domain": row.get("High-level domain"),
                         "subdomain": row.get("Subdomain")})


def _load_gpqa(name: str, root: Path | None, seed: int = 0) -> list[Example]:
    how = ("obtain it from https://github.com/idavidrein/gpqa (dataset.zip, password in its README) or the gated "
           "Hub dataset Idavidrein/gpqa (accept its terms, set HF_TOKEN), then place gpqa_diamond.csv there; "
           "never commit it (see gpqa_diamond/README.md)")
    if root:
        p = root / GPQA_CSV
        if not p.is_file():
            raise CotdistillError(f"{p}: file not found: GPQA Diamond is not shipped; {how}")
        with open(p, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        try:
            rows = _hub("Idavidrein/gpqa", "gpqa_diamond", "train")
        except CotdistillError as e:
            raise CotdistillError(f"{e} -- GPQA is gated: {how}") from None
    return [gpqa_example(r, i, seed, name) for i, r in enumerate(rows)]


def _infer_kind(answer: str, choices) -> str:
    if choices:
        return "choice"
    if answer.strip().lower() in ("yes", "no", "true", "false"):
        return "yesno"
    if to_number(answer) is not None:
        return "number"
    return "math"


MAX_BENCHMARK_LINE_BYTES = 1 << 20  # one question per line: 1 MiB is far past any model's context


class _NonFinite(str):
    """``NaN`` / ``Infinity`` / ``-Infinity`` as parsed by ``json.loads(parse_constant=...)``, so that the row
    check can name the field holding it."""


def _is_scalar(v: Any, *, text_only: bool = False) -> bool:
    """Text, or (unless ``text_only``) a finite number or a bool: what a question, answer or option can be."""
    if isinstance(v, _NonFinite):
        return False
    if isinstance(v, str):
        return True
    if text_only:
        return False
    if isinstance(v, float):
        return math.isfinite(v)  # 1e400 parses as inf
    return isinstance(v, (int, bool))


def _row_type_error(r: dict) -> str | None:
    """``field: problem`` for a row whose values are not what the field holds (a list as the gold answer, an
    object as the question, ``1e400``...): their Python text form would otherwise be used silently."""
    def what(v: Any) -> str:
        if isinstance(v, (float, _NonFinite)):
            return f"{v} is not a finite number"
        return f"a {'JSON object' if isinstance(v, dict) else type(v).__name__}"

    if not _is_scalar(r["question"], text_only=True):
        return f"question: {what(r['question'])}, not text"
    if not _is_scalar(r["answer"]):
        return f"answer: {what(r['answer'])}, not text or a number"
    if r.get("id") is not None and (not _is_scalar(r["id"]) or isinstance(r["id"], (bool, float))):
        return f"id: {str(r['id'])[:40]!r} is not text or an integer"
    if r.get("kind") is not None and (not isinstance(r["kind"], str) or isinstance(r["kind"], _NonFinite)):
        return f"kind: {what(r['kind'])}, not text"
    choices = r.get("choices")
    if isinstance(choices, list):
        for j, c in enumerate(choices):
            if not _is_scalar(c) or isinstance(c, bool):
                return f"choices[{j}]: {what(c)}, not text or a number"
    return None


def load_jsonl_benchmark(path: str | Path, name: str | None = None) -> list[Example]:
    """A user benchmark: JSON lines with ``question`` and ``answer`` (optional ``id``, ``choices``, ``kind``).

    Kind, when absent, is inferred: choices -> choice, yes/no/true/false -> yesno, a number -> number, else math.
    For choice questions the answer may be a letter or the exact text of one option. Every row is checked at
    load: the question is text, the answer text or a finite number (no ``NaN``/``Infinity``/``1e400``, lists or
    objects), options are text or numbers, and no line is longer than :data:`MAX_BENCHMARK_LINE_BYTES`; an error
    names the file, the line and the field.
    """
    p = Path(path).expanduser()
    name = name or f"jsonl:{path}"
    if p.is_dir():
        raise CotdistillError(f"{p}: is a directory, not a JSONL file (benchmark {name})")
    if not p.is_file():
        raise CotdistillError(f"{p}: file not found (benchmark {name})")
    out = []
    for ln, line, _ in iter_text_lines(p, MAX_BENCHMARK_LINE_BYTES):
        if not line.strip():
            continue
        try:
            r = json.loads(line, parse_constant=_NonFinite)
        except json.JSONDecodeError as e:
            raise CotdistillError(f"{p}:{ln}: invalid JSON ({e.msg})") from None
        if not isinstance(r, dict):
            raise CotdistillError(f"{p}:{ln}: not a JSON object")
        for field in ("question", "answer"):
            if r.get(field) is None or str(r.get(field)).strip() == "":
                raise CotdistillError(f"{p}:{ln}: {field}: missing")
        bad = _row_type_error(r)
        if bad:
            raise CotdistillError(f"{p}:{ln}: {bad}")
        choices = r.get("choices")
        if choices is not None and (not isinstance(choices, list) or not 2 <= len(choices) <= len(LETTERS)):
            raise CotdistillError(f"{p}:{ln}: choices: must be a list of 2-{len(LETTERS)} option texts")
        answer = str(r["answer"]).strip()
        kind = r.get("kind") or _infer_kind(answer, choices)
        if kind not in ("number", "math", "choice", "yesno"):
            raise CotdistillError(f"{p}:{ln}: kind: {kind!r} is not one of number, math, choice, yesno")
        if kind == "choice":
            if not choices:
                raise CotdistillError(f"{p}:{ln}: choices: required for kind choice")
            letters = LETTERS[: len(choices)]
            if answer.upper().strip("() ") in letters and len(answer.strip("() ")) == 1:
                answer = answer.upper().strip("() ")
            else:
                idx = [i for i, c in enumerate(choices) if str(c).strip().lower() == answer.lower()]
                if not idx:
                    raise CotdistillError(f"{p}:{ln}: answer: {answer!r} is neither a letter {letters[0]}-"
                                          f"{letters[-1]} nor an option text")
                answer = LETTERS[idx[0]]
        elif kind == "yesno":
            try:
                answer = _yesno(answer)
            except CotdistillError:
                raise CotdistillError(f"{p}:{ln}: answer: {answer!r} is not yes/no/true/false") from None
        elif kind == "number":
            if to_number(answer) is None:
                raise CotdistillError(f"{p}:{ln}: answer: {answer!r} is not a number")
            answer = answer.replace(",", "")
        qid = str(r["id"]) if r.get("id") is not None else f"{p.stem}-{ln}"
        out.append(Example(qid, name, str(r["question"]).strip(), answer, kind,
                           tuple(str(c) for c in choices) if choices else None))
    if not out:
        raise CotdistillError(f"{p}: no questions (the file is empty; benchmark {name})")
    return out


#: dev split -> (the training-side benchmark it is carved from, size)
DEV_SPLITS: dict[str, tuple[str, int]] = {"svamp:dev": ("svamp:train", 100), "gsm8k:dev": ("gsm8k:train", 200)}


def is_dev_split(spec: str) -> bool:
    """Whether ``spec`` names a tuning (dev) split, the only kind a budget search may score on."""
    try:
        return canonical_name(spec) in DEV_SPLITS
    except CotdistillError:
        return False


def _load_dev(name: str, root: Path | None) -> list[Example]:
    parent, n = DEV_SPLITS[name]
    exs = _LOADERS[parent](parent, root)
    chosen = set(sorted((e.id for e in exs), key=lambda i: hashlib.sha256(f"cotdistill-dev/{i}".encode()).hexdigest())[:n])
    return [Example(e.id, name, e.question, e.answer, e.kind, e.choices, e.meta) for e in exs if e.id in chosen]


_LOADERS: dict[str, Callable[[str, Path | None], list[Example]]] = {
    "svamp:dev": _load_dev,
    "gsm8k:dev": _load_dev,
    "gsm8k": _load_gsm8k,
    "gsm8k:train": _load_gsm8k,
    "svamp": _load_svamp,
    "svamp:train": _load_svamp,
    "svamp:all": _load_svamp,
    "svamp:dev150": _load_svamp,
    "svamp:test150": _load_svamp,
    "math500": _load_math500,
    "csqa": _load_csqa,
    "csqa:train": _load_csqa,
    "strategyqa": _load_strategyqa,
}


def load_benchmark(spec: str, *, limit: int | None = None, gpqa_shuffle_seed: int = 0) -> list[Example]:
    """Load a benchmark as a list of Examples, in file order.

    Args:
        spec: a name from :func:`list_benchmarks` (aliases like ``svamp:test300``, ``csqa:dev`` accepted) or
            ``jsonl:PATH``.
        limit: keep the first N records (deterministic); None = all.
        gpqa_shuffle_seed: seed of the per-question option shuffle for ``gpqa_diamond`` (``eval.gpqa_shuffle_seed``).

    Raises:
        CotdistillError: unknown spec, missing file (named), malformed user file (``PATH:LINE: field: problem``).
    """
    if limit is not None and limit < 1:
        raise CotdistillError(f"limit: must be >= 1 (got {limit})")
    name = canonical_name(spec)
    if name.startswith("jsonl:"):
        exs = load_jsonl_benchmark(name[6:], name)
    else:
        root = data_dir(required=False)
        if name == "gpqa_diamond":
            exs = _load_gpqa(name, root, gpqa_shuffle_seed)
        else:
            exs = _LOADERS[name](name, root)
    return exs[:limit] if limit is not None else exs
