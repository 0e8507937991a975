"""Rationale store -> path dataset (METHODS.md §0.1, §1.4–1.7; DESIGN.md "Records", "Path dataset").

Steps, in order: select teachers/perspectives; re-score every record from its raw text with the current
extractor (stored ``correct`` is ignored, so a parser change never forces regeneration); drop wrong paths
(``curate.filter.judge = rule``); reduce each response to its rationale body (final-answer line removed);
group by question (ids with the same normalised text and gold are merged); drop near-duplicates; cap the
paths per question; drop questions with fewer than ``min_correct_paths`` paths; contamination guard (run
first, on every question with a correct path); difficulty sampling; dev split; save a ``datasets.DatasetDict`` with a data card.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cotdistill.config import Config
from cotdistill.errors import CotdistillError
from cotdistill.pathset.roles import CHOSEN, REJECTED, STANDARD, count_kinds, role_kind, role_of_record
from cotdistill.utils.io import atomic_write_json, atomic_write_text, stable_hash

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("key", "question_id", "question", "gold", "kind", "teacher", "perspective")
CARD_JSON = "data_card.json"
CARD_MD = "data_card.md"


# --------------------------------------------------------------------------- store access


def _open_store(store_dir: Path) -> tuple[Iterator[dict], dict]:
    """(winning ``ok`` record of every key; store stats) of a rationale store folder."""
    from cotdistill.teachers.store import RECORDS_FILE, RationaleStore

    if not (store_dir / RECORDS_FILE).is_file():
        raise CotdistillError(f"{store_dir}: no rationale store here ({RECORDS_FILE} missing); run synthesize/import")
    store = RationaleStore(store_dir)
    return store.iter_records(status="ok"), dict(store.stats())


def _check_record(rec: dict, where: Path) -> None:
    for f in REQUIRED_FIELDS:
        if rec.get(f) is None:
            raise CotdistillError(f"{where}: record {rec.get('key', '?')}: missing field '{f}'")
        if not isinstance(rec[f], (str, int, float)) or isinstance(rec[f], bool):  # a list/object: damage
            raise CotdistillError(f"{where}: record {rec.get('key', '?')}: field '{f}' is a "
                                  f"{type(rec[f]).__name__}, not text")


# --------------------------------------------------------------------------- helpers


def _score(rec: dict) -> tuple[str | None, bool]:
    from cotdistill.data.answers import score
    from cotdistill.data.types import Example

    ex = Example(
        id=str(rec["question_id"]),
        benchmark=str(rec.get("source") or ""),
        question=rec["question"],
        answer=str(rec["gold"]),
        kind=rec["kind"],
        choices=tuple(rec["choices"]) if rec.get("choices") else None,
    )
    return score(rec.get("raw_response") or "", ex)


def _order_round_robin(paths: list[dict], rng: random.Random) -> list[dict]:
    """Interleave teachers so a cap keeps every teacher represented; within a teacher the order is a
    seeded shuffle, so a cap does not always keep the same (e.g. the tersest) perspectives. The teachers'
    order is shuffled too: a cap below the number of teachers must not always keep the same teachers."""
    by_teacher: dict[str, list[dict]] = defaultdict(list)
    for p in paths:
        by_teacher[p["teacher"]].append(p)
    queues = [by_teacher[t] for t in sorted(by_teacher)]
    for q in queues:
        rng.shuffle(q)
    rng.shuffle(queues)
    out: list[dict] = []
    i = 0
    while any(i < len(q) for q in queues):
        out += [q[i] for q in queues if i < len(q)]
        i += 1
    return out


def _label(scheme: str, teacher: str, perspective: str) -> str:
    if scheme == "perspective":
        return perspective
    if scheme == "teacher":
        return teacher
    return f"{teacher}/{perspective}"


def _rate(correct: int, n: int) -> float | None:
    return correct / n if n else None


# --------------------------------------------------------------------------- main entry


def curate_store(config: Config, store_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Build the path dataset from the rationale store ``store_dir`` into ``out_dir``.

    ``out_dir`` becomes a ``datasets.DatasetDict`` folder (``save_to_disk``; split ``train`` and, with
    ``curate.dev_fraction > 0``, ``dev``) plus ``data_card.json`` / ``data_card.md``. One row per question:
    ``question_id, question, gold, kind, source, choices (option texts or None), difficulty, paths`` where ``paths`` is a list of
    ``{teacher, perspective, label, text, record_key}``; ``text`` has no final-answer line (the collator
    appends the shared suffix). Written atomically; an existing identical dataset is left as is and
    returned, an existing different one is refused. Raises :class:`CotdistillError` on bad input or when
    a training question is an ``curate.eval_guard`` test question (unless ``eval_guard_action = drop``).
    """
    from tqdm.auto import tqdm

    from cotdistill.curate.difficulty import hard_question_ids, sample_by_difficulty
    from cotdistill.curate.guard import contamination_error, find_contaminated
    from cotdistill.curate.text import clean_rationale, dedup_indices, rationale_source
    from cotdistill.data.answers import EXTRACTOR_VERSION, is_correct
    from cotdistill.data.prompts import normalize_question

    cur = config.curate
    store_dir, out_dir = Path(store_dir), Path(out_dir)
    where = store_dir / "records.jsonl"
    if cur.max_paths_per_question is not None and cur.max_paths_per_question < cur.filter.min_correct_paths:
        raise CotdistillError(
            "config: curate.max_paths_per_question: smaller than curate.filter.min_correct_paths "
            f"({cur.max_paths_per_question} < {cur.filter.min_correct_paths}): every question would be dropped"
        )
    records, store_stats = _open_store(store_dir)
    teachers_sel = set(cur.teachers) if cur.teachers is not None else None
    persp_sel = set(cur.perspectives) if cur.perspectives is not None else None
    for field, sel, have in (("teachers", teachers_sel, store_stats.get("by_teacher")),
                             ("perspectives", persp_sel, store_stats.get("by_perspective"))):
        if sel is not None and have is not None and sel - set(have):
            raise CotdistillError(
                f"config: curate.{field}: {sorted(sel - set(have))} not in the store {store_dir} "
                f"(it has: {', '.join(sorted(have))})"
            )
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg)
        log.warning(msg)

    # ---- per-record: select, re-score, filter, clean
    stats: dict[tuple[str, str], Counter] = defaultdict(Counter)
    models: dict[str, set[str]] = defaultdict(set)
    path_drops: Counter = Counter()
    changed_verdicts = 0
    n_read = 0
    questions: dict[str, dict] = {}  # qid -> first record (question metadata)
    backends: set[str] = set()
    paths_by_q: dict[str, list[dict]] = defaultdict(list)
    rejected_by_q: dict[str, list[dict]] = defaultdict(list)  # wrong paths, kept only with curate.keep_rejected
    for rec in tqdm(records, desc="curate: scoring", unit="rec", mininterval=2.0, total=store_stats.get("ok")):
        n_read += 1
        _check_record(rec, where)
        teacher, persp = str(rec["teacher"]), str(rec["perspective"])
        if teachers_sel is not None and teacher not in teachers_sel:
            path_drops["teacher_not_selected"] += 1
            continue
        if persp_sel is not None and persp not in persp_sel:
            path_drops["perspective_not_selected"] += 1
            continue
        qid = str(rec["question_id"])
        try:
            role = role_of_record(rec)
        except ValueError as e:
            raise CotdistillError(f"{where}: record {rec.get('key', '?')}: role: {e}") from None
        backends.add(str(rec.get("backend") or ""))
        questions.setdefault(qid, rec)
        if rec.get("teacher_model"):
            models[teacher].add(str(rec["teacher_model"]))
        pred, ok = _score(rec)
        if rec.get("correct") is not None and bool(rec["correct"]) != ok:
            changed_verdicts += 1
        st = stats[(teacher, persp)]
        st["records"] += 1
        st["correct"] += int(ok)
        if role == REJECTED and ok:
            path_drops["rejected_but_correct"] += 1  # a CCP request that failed to produce a wrong answer
            continue
        if cur.filter.judge == "rule" and not ok:
            path_drops["incorrect"] += 1
            if cur.keep_rejected and pred is not None:
                wrong = clean_rationale(rationale_source(rec, cur.reasoning))
                if wrong:
                    rejected_by_q[qid].append({"teacher": teacher, "perspective": persp, "text": wrong,
                                               "answer": str(pred), "record_key": str(rec["key"]),
                                               "twin": str(rec.get("twin") or "")})
            continue
        text = clean_rationale(rationale_source(rec, cur.reasoning))
        if not text:
            path_drops["empty_rationale"] += 1
            continue
        paths_by_q[qid].append(
            {
                "teacher": teacher,
                "perspective": persp,
                "role": role,
                "twin": str(rec.get("twin") or ""),
                "text": text,
                "record_key": str(rec["key"]),
                "_order": (teacher, persp, int(rec.get("sample_idx") or 0), str(rec["key"])),
            }
        )
    if n_read == 0:
        raise CotdistillError(f"{where}: the store holds no successful records")
    if changed_verdicts:
        warn(f"{changed_verdicts} record(s) changed correctness verdict under extractor {EXTRACTOR_VERSION}")

    # ---- merge question ids that are the same question (same normalised text and gold)
    merged_ids = 0
    canon: dict[str, str] = {}
    for qid in sorted(questions):
        q = questions[qid]
        norm = normalize_question(q["question"])
        target = canon.get(norm)
        if target is None:
            canon[norm] = qid
            continue
        tq = questions[target]
        if tq["kind"] == q["kind"] and is_correct(str(q["gold"]), str(tq["gold"]), tq["kind"]):
            paths_by_q[target].extend(paths_by_q.pop(qid, []))
            rejected_by_q[target].extend(rejected_by_q.pop(qid, []))
            del questions[qid]
            merged_ids += 1
        else:
            warn(f"questions {target} and {qid} have the same text but different gold answers; kept apart")
    q_dropped: Counter = Counter()
    n_questions = len(questions)

    # ---- contamination guard: every question with a correct path, before any per-question filter (a refusal
    # must not depend on which paths a filter happened to keep); the evaluated benchmarks are always guarded
    nll = config.eval.rationale_nll
    nll_set = None
    if nll is not None:
        from cotdistill.curate.heldout import parse_set

        nll_set = parse_set(nll.set, nll.options, nll.max_per_question)
    guarded = list(dict.fromkeys([*cur.eval_guard, *config.eval.benchmarks,
                                  *([nll_set.questions] if nll_set else [])]))
    hits = find_contaminated({q: questions[q]["question"] for q in questions if paths_by_q.get(q)}, guarded)
    if hits and cur.eval_guard_action == "refuse":
        raise contamination_error(str(where), hits)
    for qid in hits:
        path_drops["question_dropped"] += len(paths_by_q.pop(qid, []))
        rejected_by_q.pop(qid, None)
    if hits:
        q_dropped["contaminated"] = len(hits)
        benches = sorted({m.split(":", 1)[0] for ms in hits.values() for m in ms})
        warn(f"dropped {len(hits)} question(s) that are test questions of {', '.join(benches)}")

    # ---- per-question: dedup, cap, min paths — per role group (the standard paths; the multi-path set of
    # perspective/teacher paths), so a cap never trades one group's paths for the other's and every kept
    # question has what each method trains on (pathset/roles.py)
    store_kinds = count_kinds(p for ps in paths_by_q.values() for p in ps)
    has_multi = bool(store_kinds["perspective"] or store_kinds["teacher"])
    require_standard = cur.filter.require_standard
    if require_standard is None:
        require_standard = bool(store_kinds["standard"])
    kept_paths: dict[str, list[dict]] = {}
    for qid in sorted(set(questions) - set(hits)):
        paths = sorted(paths_by_q.get(qid, []), key=lambda p: p["_order"])
        keep = dedup_indices([p["text"] for p in paths], cur.dedup_threshold)
        path_drops["near_duplicate"] += len(paths) - len(keep)
        paths = [paths[i] for i in keep]
        groups = {"standard": [p for p in paths if p["role"] == STANDARD],
                  "multi": [p for p in paths if role_kind(p["role"]) in ("perspective", "teacher")],
                  "chosen": [p for p in paths if p["role"] == CHOSEN]}  # EDIT's AHP twins: never capped/counted
        rng = random.Random(f"{config.run.seed}:{qid}")
        for name, cap in (("standard", cur.max_standard_paths or cur.max_paths_per_question),
                          ("multi", cur.max_paths_per_question)):
            if cap is not None and len(groups[name]) > cap:
                path_drops[f"over_max_{name}_paths"] += len(groups[name]) - cap
                groups[name] = _order_round_robin(groups[name], rng)[:cap]
        paths = sorted(groups["standard"] + groups["multi"] + groups["chosen"], key=lambda p: p["_order"])
        # the paths min_correct_paths counts: the multi-path set, else the standard-style paths (an AHP twin is
        # a hinted standard path)
        counted = groups["multi"] if has_multi else groups["standard"] + groups["chosen"]
        if len(counted) < cur.filter.min_correct_paths or (require_standard and not groups["standard"]):
            if not paths:
                reason = "no_correct_path" if cur.filter.judge == "rule" else "no_path"
            elif require_standard and not groups["standard"]:
                reason = "no_standard_path"
            else:
                reason = "too_few_paths"
            q_dropped[reason] += 1
            path_drops["question_dropped"] += len(paths)
            continue
        kept_paths[qid] = paths

    # ---- difficulty sampling
    qids = sorted(kept_paths)
    hard = hard_question_ids(cur.difficulty, {q: questions[q] for q in qids})
    n_hard_total = len(hard) if hard is not None else None
    qids, difficulty, diff_drop = sample_by_difficulty(qids, hard, cur.difficulty.target_size, config.run.seed)
    for reason, n in diff_drop.items():
        if n:
            q_dropped[reason] = n
    for q in set(kept_paths) - set(qids):
        path_drops["question_dropped"] += len(kept_paths.pop(q))
    if not qids:
        raise CotdistillError(
            f"{where}: no question survived curation ({n_questions} in store; dropped: "
            + ", ".join(f"{k} {v}" for k, v in q_dropped.items())
            + "); check curate.filter and curate.teachers/perspectives"
        )

    # ---- controlled incompatibility (curate.inject): after sampling, so it never changes which questions are kept
    inject_card = None
    if cur.inject is not None:
        from cotdistill.curate.inject import inject_paths

        def passes(qid: str, text: str) -> bool:  # the rule judge on the path as the student will see it
            q = questions[qid]
            return _score({**q, "raw_response": text + "\n" + config.data.answer_suffix.format(a=q["gold"])})[1]

        kept_paths, inject_card = inject_paths(
            kept_paths, fraction=cur.inject.fraction, kinds=list(cur.inject.kinds), seed=cur.inject.seed,
            truncate_fraction=cur.inject.truncate_fraction, check=passes)

    # ---- labels
    all_t = {p["teacher"] for q in qids for p in kept_paths[q]}
    all_p = {p["perspective"] for q in qids for p in kept_paths[q]}
    scheme = cur.label_by
    if scheme == "auto":
        scheme = "perspective" if len(all_t) == 1 else "teacher" if len(all_p) == 1 else "teacher_perspective"

    rows = []
    for qid in qids:
        q = questions[qid]
        extra = {}
        if cur.keep_rejected:
            wrong = sorted(rejected_by_q.get(qid, []), key=lambda p: (p["teacher"], p["perspective"], p["record_key"]))
            extra["rejected_paths"] = [
                {**p, "role": REJECTED, "label": _label(scheme, p["teacher"], p["perspective"])}
                for p in wrong[: cur.max_paths_per_question or len(wrong)]
            ]
        rows.append(
            extra | {
                "question_id": qid,
                "question": q["question"],
                "gold": str(q["gold"]),
                "kind": str(q["kind"]),
                "source": str(q.get("source") or ""),
                "choices": [str(c) for c in q["choices"]] if q.get("choices") else None,
                "difficulty": difficulty[qid],
                "paths": [
                    {
                        "teacher": p["teacher"],
                        "perspective": p["perspective"],
                        "role": p["role"],
                        "twin": p["twin"],
                        "injected": p.get("injected", ""),
                        "label": _label(scheme, p["teacher"], p["perspective"]),
                        "text": p["text"],
                        "record_key": p["record_key"],
                    }
                    for p in kept_paths[qid]
                ],
            }
        )

    # ---- dev split (seeded, by question)
    splits: dict[str, list[dict]] = {"train": rows}
    if cur.dev_fraction > 0 and len(rows) >= 2:
        n_dev = min(len(rows) - 1, max(1, round(cur.dev_fraction * len(rows))))
        dev_ids = set(random.Random(config.run.seed).sample([r["question_id"] for r in rows], n_dev))
        splits = {
            "train": [r for r in rows if r["question_id"] not in dev_ids],
            "dev": [r for r in rows if r["question_id"] in dev_ids],
        }
    elif cur.dev_fraction > 0:
        warn("curate.dev_fraction > 0 but fewer than 2 questions: no dev split")

    fingerprint = stable_hash({"splits": splits, "label_scheme": scheme}, length=24)

    # ---- data card
    kept_count: Counter = Counter((p["teacher"], p["perspective"]) for q in qids for p in kept_paths[q])
    by_tp = []
    for (t, p), st in sorted(stats.items()):
        by_tp.append(
            {
                "teacher": t,
                "perspective": p,
                "records": st["records"],
                "correct": st["correct"],
                "correct_rate": _rate(st["correct"], st["records"]),
                "kept_paths": kept_count[(t, p)],
            }
        )
    by_teacher: dict[str, Any] = {}
    by_persp: dict[str, Any] = {}
    for agg, field in ((by_teacher, "teacher"), (by_persp, "perspective")):
        for r in by_tp:
            a = agg.setdefault(r[field], {"records": 0, "correct": 0, "kept_paths": 0})
            for k in ("records", "correct", "kept_paths"):
                a[k] += r[k]
        for v in agg.values():
            v["correct_rate"] = _rate(v["correct"], v["records"])
    for t, v in by_teacher.items():
        v["models"] = sorted(models.get(t, ()))
    hist = Counter(len(kept_paths[q]) for q in qids)
    roles_card = _roles_card(rows, backends, require_standard, has_multi, cur.keep_rejected)
    try:
        from importlib.metadata import version

        cd_version = version("cotdistill")
    except Exception:  # pragma: no cover
        cd_version = "unknown"
    card = {
        "fingerprint": fingerprint,
        "label_scheme": {"teacher_perspective": "teacher/perspective"}.get(scheme, scheme),
        "labels": sorted({p["label"] for r in rows for p in r["paths"]}),
        "splits": {s: {"questions": len(v), "paths": sum(len(r["paths"]) for r in v)} for s, v in splits.items()},
        "questions": {
            "in_store": n_questions,
            "merged_duplicate_ids": merged_ids,
            "kept": len(qids),
            "dropped": dict(q_dropped),
        },
        "records": {"read": n_read, "verdict_changed_on_rescore": changed_verdicts},
        "paths_dropped": dict(path_drops),
        "paths_per_question": {str(k): hist[k] for k in sorted(hist)},
        "roles": roles_card,
        "by_teacher_perspective": by_tp,
        "by_teacher": by_teacher,
        "by_perspective": by_persp,
        "difficulty": (
            None
            if hard is None
            else {
                "criterion": cur.difficulty.criterion,
                "hard_candidates": n_hard_total,
                "target_size": cur.difficulty.target_size,
                "kept": dict(Counter(difficulty[q] for q in qids)),
            }
        ),
        "eval_guard": {
            "benchmarks": guarded,
            "action": cur.eval_guard_action,
            "contaminated": len(hits),
            "contaminated_ids": sorted(hits)[:100],
        },
        "heldout_rationale_nll": _heldout_card(nll_set, set(qids)),
        "injected": inject_card,
        "warnings": warnings,
        "provenance": {
            "run_name": config.run.name,
            "store_dir": str(store_dir),
            "store_stats": store_stats,
            "config_hash": stable_hash({"curate": cur.model_dump(mode="json"), "seed": config.run.seed}),
            "curate_config": cur.model_dump(mode="json"),
            "seed": config.run.seed,
            "answer_suffix": config.data.answer_suffix,
            "extractor_version": EXTRACTOR_VERSION,
            "cotdistill_version": cd_version,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    return _save(splits, card, out_dir)


def _heldout_card(nll_set: Any, train_ids: set[str]) -> dict[str, Any] | None:
    """The held-out rationale-NLL set of the run (``eval.rationale_nll``): name, size, disjointness from training."""
    if nll_set is None:
        return None
    from cotdistill.curate.heldout import load_rationale_set

    items = load_rationale_set(nll_set)
    overlap = sorted({it["question_id"] for it in items} & train_ids)
    if overlap:  # the guard above drops them; reaching here would be a bug, never a silent leak
        raise CotdistillError(f"eval.rationale_nll: {nll_set.name}: {len(overlap)} question(s) are in training")
    return {"set": nll_set.name, "questions": len(items), "rationales": sum(len(it["rationales"]) for it in items),
            "max_per_question": nll_set.max_per_question, "options": nll_set.options, "disjoint_from_training": True}


def _roles_card(rows: list[dict], backends: set[str], require_standard: bool, has_multi: bool,
                keep_rejected: bool) -> dict[str, Any]:
    """The data card's ``roles`` section: paths and questions per role kind and role, which imported path is
    standard (and why), and the dual-CoT pairs EDIT can use."""
    from cotdistill.pathset.dual import pair_dual_cots_by_twin
    from cotdistill.teachers.importers import IMPORT_ROLE_NOTES

    by_role: Counter = Counter()
    kinds: dict[str, dict[str, int]] = {}
    for r in rows:
        seen = set()
        for p in list(r["paths"]) + list(r.get("rejected_paths") or []):
            by_role[p["role"]] += 1
            k = role_kind(p["role"])
            kinds.setdefault(k, {"paths": 0, "questions": 0})["paths"] += 1
            seen.add(k)
        for k in seen:
            kinds[k]["questions"] += 1
    notes = {b.removeprefix("import:"): IMPORT_ROLE_NOTES[b.removeprefix("import:")]
             for b in sorted(backends) if b.removeprefix("import:") in IMPORT_ROLE_NOTES and b.startswith("import:")}
    if any(b and not b.startswith("import:") for b in backends):
        notes["synthesis"] = ("standard: the standard prompt (data.standard_path: plain, METHODS.md §1.3); "
                              "perspective:<id>: one cognitive perspective each (§1.2); rejected: EDIT's CCP/AHP twins")
    card: dict[str, Any] = {
        "kinds": kinds,
        "by_role": dict(sorted(by_role.items())),
        "min_correct_paths_counts": "perspective/teacher paths" if has_multi else "standard paths",
        "require_standard_path": require_standard,
        "sources": notes,
    }
    if keep_rejected:
        with_twin = sum(1 for r in rows if pair_dual_cots_by_twin(r["paths"], r.get("rejected_paths") or []))
        with_rejected = sum(1 for r in rows if r.get("rejected_paths"))
        card["dual_cot"] = {"questions_with_twin_pair": with_twin,
                            "questions_with_rejected_only_unlinked": with_rejected - with_twin,
                            "questions_without_rejected": len(rows) - with_rejected}
    return card


# --------------------------------------------------------------------------- saving / loading


def _features(with_rejected: bool = False):
    from datasets import Features, Value

    s = Value("string")
    rejected = {"rejected_paths": [{"teacher": s, "perspective": s, "role": s, "text": s, "answer": s,
                                    "record_key": s, "twin": s, "label": s}]}
    return Features(
        (rejected if with_rejected else {}) | {
            "question_id": s,
            "question": s,
            "gold": s,
            "kind": s,
            "source": s,
            "choices": [s],
            "difficulty": s,
            "paths": [{"teacher": s, "perspective": s, "role": s, "twin": s, "injected": s, "label": s, "text": s,
                       "record_key": s}],
        }
    )


def _existing_fingerprint(out_dir: Path) -> str | None:
    try:
        return json.loads((out_dir / CARD_JSON).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError):
        return None


def _save(splits: dict[str, list[dict]], card: dict, out_dir: Path) -> Path:
    from datasets import Dataset, DatasetDict

    if out_dir.exists() and (out_dir.is_file() or any(out_dir.iterdir())):
        if _existing_fingerprint(out_dir) == card["fingerprint"]:
            log.info("%s: identical dataset already there; left as is", out_dir)
            return out_dir
        raise CotdistillError(
            f"{out_dir}: a different dataset (or other files) already exists there; choose another --out or remove it"
        )
    features = _features(any("rejected_paths" in r for rows in splits.values() for r in rows))
    dd = DatasetDict({s: Dataset.from_list(rows, features=features) for s, rows in splits.items()})
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        dd.save_to_disk(str(tmp))
        from cotdistill.curate.card import render_markdown

        atomic_write_json(tmp / CARD_JSON, card)
        atomic_write_text(tmp / CARD_MD, render_markdown(card))
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above); rename needs the name free
        try:
            os.rename(tmp, out_dir)
        except OSError:  # another curate finished first: fine if it wrote the same dataset
            if _existing_fingerprint(out_dir) != card["fingerprint"]:
                raise CotdistillError(f"{out_dir}: a different dataset was written there meanwhile") from None
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def load_path_dataset(dir: str | os.PathLike):
    """Load a curated path dataset (``datasets.DatasetDict`` with ``train`` and maybe ``dev``)."""
    from datasets import DatasetDict, load_from_disk

    p = Path(dir)
    if not (p / "dataset_dict.json").is_file():
        raise CotdistillError(f"{p}: not a curated path dataset (dataset_dict.json missing); run `cotdistill curate`")
    dd = load_from_disk(str(p))
    if not isinstance(dd, DatasetDict) or "train" not in dd:
        raise CotdistillError(f"{p}: path dataset has no 'train' split")
    return dd


def load_data_card(dir: str | os.PathLike) -> dict:
    """The ``data_card.json`` of a curated dataset folder."""
    p = Path(dir) / CARD_JSON
    if not p.is_file():
        raise CotdistillError(f"{p}: data card missing")
    return json.loads(p.read_text(encoding="utf-8"))


def export_compact_json(dir: str | os.PathLike, path: str | os.PathLike, *, split: str = "train",
                        answer_suffix: str = "The answer is: {a}") -> Path:
    """Write a split in the COMPACT authors' format (METHODS.md §1.7):
    ``[{"Question": str, "CoT": [rationale + "\\n" + suffix] * K, "Answer": str}, ...]``."""
    dd = load_path_dataset(dir)
    if split not in dd:
        raise CotdistillError(f"{dir}: split '{split}' not in the dataset ({', '.join(dd)})")
    out = [
        {
            "Question": r["question"],
            "CoT": [p["text"] + "\n" + answer_suffix.format(a=r["gold"]) for p in r["paths"]],
            "Answer": r["gold"],
        }
        for r in dd[split]
    ]
    atomic_write_json(path, out)
    return Path(path)
