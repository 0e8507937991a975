"""Difficulty sampling (METHODS.md §1.6): keep every hard question, add seeded easy ones up to a target.

Criteria (``curate.difficulty.criterion``):

- ``none``: no difficulty label; ``target_size`` (if set) is a plain seeded cap on the question count.
- ``given``: ``hard_ids_file`` lists hard question ids, one a line (``#`` comments allowed).
- ``student_greedy_fail``: hard = the base student fails the question greedily. Curate never runs a later
  stage itself; run ``cotdistill eval`` with the base student on the training questions first (e.g. the
  benchmark ``jsonl:PATH`` or ``svamp:train``) and point ``hard_ids_file`` at the per-sample file
  ``eval/<model>/<bench>.jsonl``: lines with ``id`` and ``correct``; hard = ``correct`` is false.
- ``math_level``: hard = MATH level >= ``min_level``; the level comes from the record (``level`` or
  ``meta.level``, an int or ``"Level 4"``).
"""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

from cotdistill.config import DifficultyConfig
from cotdistill.errors import CotdistillError

log = logging.getLogger(__name__)


def _read_hard_ids(path: str, criterion: str) -> set[str]:
    p = Path(path)
    if not p.is_file():
        raise CotdistillError(f"{p}: curate.difficulty.hard_ids_file: file not found")
    hard: set[str] = set()
    for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CotdistillError(f"{p}:{i}: curate.difficulty.hard_ids_file: invalid JSON ({e.msg})") from None
            if "id" not in row:
                raise CotdistillError(f"{p}:{i}: curate.difficulty.hard_ids_file: line has no 'id'")
            if criterion == "student_greedy_fail":
                if "correct" not in row:
                    raise CotdistillError(f"{p}:{i}: curate.difficulty.hard_ids_file: eval line has no 'correct'")
                if not row["correct"]:
                    hard.add(str(row["id"]))
            else:
                hard.add(str(row["id"]))
        elif criterion == "student_greedy_fail":
            raise CotdistillError(
                f"{p}:{i}: curate.difficulty.hard_ids_file: student_greedy_fail needs eval JSONL lines (id, correct)"
            )
        else:
            hard.add(line)
    return hard


def _level(rec: dict) -> int | None:
    lv = rec.get("level", (rec.get("meta") or {}).get("level"))
    if lv is None:
        return None
    if isinstance(lv, int):
        return lv
    m = re.search(r"\d+", str(lv))
    return int(m.group()) if m else None


def hard_question_ids(cfg: DifficultyConfig, first_record: dict[str, dict]) -> set[str] | None:
    """The hard ones among ``first_record`` (question id -> one of its records); None for criterion none."""
    crit = cfg.criterion
    if crit == "none":
        return None
    if crit in ("given", "student_greedy_fail"):
        if not cfg.hard_ids_file:
            raise CotdistillError(f"config: curate.difficulty.hard_ids_file: required for criterion {crit}")
        listed = _read_hard_ids(cfg.hard_ids_file, crit)
        if crit == "student_greedy_fail":
            # Ids must match the store's question ids; a file about other questions is a mistake.
            seen = _read_all_ids(cfg.hard_ids_file)
            if first_record and not (seen & set(first_record)):
                raise CotdistillError(
                    f"{cfg.hard_ids_file}: curate.difficulty.hard_ids_file: no id matches a store question id"
                )
            missing = len(set(first_record) - seen)
            if missing:
                log.warning("%d question(s) are not in %s; counted as easy", missing, cfg.hard_ids_file)
        hard = listed & set(first_record)
        if listed and not hard:
            log.warning("no id of %s is a curated question id; every question counts as easy", cfg.hard_ids_file)
        return hard
    if crit == "math_level":
        hard = set()
        unknown = 0
        for qid, rec in first_record.items():
            lv = _level(rec)
            if lv is None:
                unknown += 1
            elif lv >= cfg.min_level:
                hard.add(qid)
        if first_record and unknown == len(first_record):
            raise CotdistillError("config: curate.difficulty.criterion: math_level needs records with a 'level'")
        if unknown:
            log.warning("%d question(s) have no MATH level; counted as easy", unknown)
        return hard
    raise CotdistillError(f"config: curate.difficulty.criterion: unknown criterion {crit!r}")


def _read_all_ids(path: str) -> set[str]:
    ids = set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("{"):
            ids.add(str(json.loads(line)["id"]))
    return ids


def sample_by_difficulty(
    qids: list[str], hard: set[str] | None, target_size: int | None, seed: int
) -> tuple[list[str], dict[str, str | None], dict[str, int]]:
    """Choose the questions to keep: all hard, then seeded easy ones up to ``target_size``.

    When the hard questions alone exceed ``target_size`` they are sub-sampled (seeded) with a warning.
    ``hard=None`` (no criterion): a seeded sample of ``target_size`` questions, labelled None.
    Returns (kept ids in input order, id -> "hard"/"easy"/None, dropped counts per reason).
    """
    if hard is None:  # no criterion: target_size (if any) is a plain seeded cap
        kept = list(qids)
        if target_size is not None and len(kept) > target_size:
            keep = set(random.Random(seed).sample(kept, target_size))
            kept = [q for q in qids if q in keep]
        return kept, {q: None for q in kept}, {"subsampled": len(qids) - len(kept)}
    labels = {q: ("hard" if q in hard else "easy") for q in qids}
    hard_l = [q for q in qids if q in hard]
    easy_l = [q for q in qids if q not in hard]
    rng = random.Random(seed)
    if target_size is None:
        keep = set(qids)
    elif len(hard_l) >= target_size:
        if len(hard_l) > target_size:
            log.warning(
                "%d hard questions exceed curate.difficulty.target_size=%d; sub-sampling hard ones",
                len(hard_l), target_size,
            )
        keep = set(rng.sample(hard_l, target_size))
    else:
        keep = set(hard_l) | set(rng.sample(easy_l, min(len(easy_l), target_size - len(hard_l))))
    kept = [q for q in qids if q in keep]
    dropped = {
        "hard_subsampled": sum(1 for q in hard_l if q not in keep),
        "easy_subsampled": sum(1 for q in easy_l if q not in keep),
    }
    return kept, {q: labels[q] for q in kept}, dropped
