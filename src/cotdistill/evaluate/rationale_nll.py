"""Held-out rationale NLL: how likely the student finds clean teacher rationales of questions it never trained on.

Accuracy of a 135M student sits near the floor, so methods are rarely separable by it. This metric has power
where accuracy has none: the student's teacher-forced mean token negative log-likelihood of correct teacher
rationales (rationale + the shared answer line + end of turn, exactly the training target of METHODS.md §0.1)
given the evaluation prompt, on questions of an evaluation split that curation keeps out of training.

A *set* is ``SOURCE:QUESTIONS``: the rationales an importer reads from a public set (``eit``, ``mcc-kd``,
``sbs``, ``mentor-kd``; importer options from the config) restricted to the questions of a benchmark spec,
re-scored (wrong rationales dropped) and cleaned like curation does, at most ``max_per_question`` per question
(round-robin over teachers). Example: ``eit:svamp`` = EIT's GPT-4o/Gemini/LLaMA rationales of the SVAMP test
questions that EIT's split trains on (213 questions, which curation drops from training).

Per question the value is the mean over its rationales of each rationale's token-mean NLL; the summary is the
mean over questions with a bootstrap CI; comparisons pair questions (:mod:`cotdistill.evaluate.stats`).

Files in the output folder: ``rationale_nll-<set>.jsonl`` (one line per question: ``id``, ``nll``,
``n_rationales``, ``n_tokens``, per-rationale ``nll_each``) and ``rationale_nll-<set>.summary.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from cotdistill.curate.heldout import RationaleSet, load_rationale_set, parse_set, set_file_stem  # noqa: F401
from cotdistill.errors import CotdistillError
from cotdistill.utils.io import atomic_write_json, read_jsonl, stable_hash

log = logging.getLogger(__name__)


def rationale_nll(model, tokenizer, items: list[dict], *, instruction: str, answer_suffix: str = "The answer is: {a}",
                  max_seq_len: int = 2048, batch_size: int = 8, user_prefix: str = "") -> list[dict[str, Any]]:
    """Teacher-forced NLL of every item's rationales under ``model``.

    The sequences are the training collation's (:class:`~cotdistill.pathset.collate.PathCollator`: chat template,
    ``instruction``, rationale ⊕ answer line ⊕ end of turn, labels on the completion only), so the number is the
    training loss of a path the student never saw.

    Returns:
        one dict per item: ``id``, ``nll`` (mean over its rationales of the token-mean NLL), ``nll_each`` [R],
        ``sources`` [R] (``teacher/perspective`` of each rationale, "" when the item does not name it),
        ``n_rationales``, ``n_tokens`` (completion tokens scored), ``truncated`` (rationales cut to fit).
    """
    import torch

    from cotdistill.methods.losses import sequence_ce
    from cotdistill.pathset.collate import IGNORE_INDEX, PathCollator

    col = PathCollator(tokenizer, max_seq_len=max_seq_len, student_instruction=instruction or "",
                       answer_suffix=answer_suffix, label_vocab=["x"], user_prefix=user_prefix, pad_paths=False)
    flat = [(i, {**it, "paths": [{"label": "x", "text": r["text"]}]}) for i, it in enumerate(items)
            for r in it["rationales"]]
    device = next(model.parameters()).device
    each: dict[int, list[float]] = defaultdict(list)
    tokens: dict[int, int] = defaultdict(int)
    cut: dict[int, int] = defaultdict(int)
    model.eval()
    with torch.no_grad():
        for s in range(0, len(flat), batch_size):
            part = flat[s:s + batch_size]
            batch = col([row for _, row in part])
            ids, attn = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            logits = model(input_ids=ids, attention_mask=attn, use_cache=False).logits
            ce = sequence_ce(logits.float(), batch["labels"].to(device))  # [n] token-mean NLL of the completion
            n_tok = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(-1)
            for (i, _), v, n, t in zip(part, ce.tolist(), n_tok.tolist(), batch["truncated"].tolist()):
                each[i].append(float(v))
                tokens[i] += int(n)
                cut[i] += int(t)
    out = []
    for i, it in enumerate(items):
        vals = each[i]
        sources = [source_label(r) for r in it["rationales"]]
        out.append({"id": it["question_id"], "nll": sum(vals) / len(vals), "nll_each": vals, "sources": sources,
                    "n_rationales": len(vals), "n_tokens": tokens[i], "truncated": cut[i]})
    return out


def source_label(rationale: dict) -> str:
    """``teacher/perspective`` of a held-out rationale ("" when it names neither)."""
    parts = [str(rationale[k]) for k in ("teacher", "perspective") if rationale.get(k)]
    return "/".join(parts)


def nll_by_source(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean token-mean NLL per rationale source over :func:`rationale_nll` rows:
    ``{source: {"mean_nll", "n_rationales"}}``, sorted by source. Shows whether a change in the set's mean comes
    from one teacher's style or from all of them."""
    acc: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        each = r.get("nll_each") or []
        for src, v in zip(r.get("sources") or [""] * len(each), each):
            acc[src].append(float(v))
    return {s: {"mean_nll": sum(v) / len(v), "n_rationales": len(v)} for s, v in sorted(acc.items())}


def run_rationale_nll(model_spec: str, rset: RationaleSet, output_dir: str | os.PathLike, *,
                      adapter: str | None = None, instruction: str | None = None,
                      answer_suffix: str = "The answer is: {a}", max_seq_len: int = 2048, batch_size: int = 8,
                      user_prefix: str = "", dtype: str = "float32", bootstrap_samples: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """Score one model (+ adapter) on a rationale set into ``output_dir``; return the summary.

    A finished result with the same key (model and adapter weights, set, instruction, prompt settings) is
    returned as is; a different one in the same folder is refused (results are never overwritten).
    """
    from cotdistill.data.prompts import DEFAULT_INSTRUCTION
    from cotdistill.evaluate.stats import hierarchical_bootstrap
    from cotdistill.models import describe_model, load_model_and_tokenizer

    out = Path(output_dir)
    stem = set_file_stem(rset)
    instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
    desc = describe_model(model_spec, dtype=dtype, adapter=adapter)
    key = stable_hash({"model": desc.get("model_sha"), "adapter": desc.get("adapter_sha"), "set": rset.key(),
                       "instruction": instruction, "suffix": answer_suffix, "max_seq_len": max_seq_len,
                       "user_prefix": user_prefix, "dtype": dtype})
    summary_path = out / f"{stem}.summary.json"
    if summary_path.is_file():
        old = json.loads(summary_path.read_text(encoding="utf-8"))
        if old.get("key") == key:
            return old
        raise CotdistillError(f"{summary_path}: holds a rationale NLL of other inputs (model, adapter, set or "
                              "prompt); choose another output folder or remove it")
    items = load_rationale_set(rset)
    model, tok, prov = load_model_and_tokenizer(model_spec, dtype=dtype, adapter=adapter)
    rows = rationale_nll(model, tok, items, instruction=instruction, answer_suffix=answer_suffix,
                         max_seq_len=max_seq_len, batch_size=batch_size, user_prefix=user_prefix)
    import numpy as np

    from cotdistill.utils.io import atomic_write_text

    vals = np.array([r["nll"] for r in rows], dtype=float)
    reps = hierarchical_bootstrap(vals[None, :], n_boot=bootstrap_samples, seed=seed)
    lo, hi = (float(x) for x in np.percentile(reps, [2.5, 97.5]))
    summary = {
        "key": key, "set": rset.name, "source": rset.source, "questions": rset.questions, "options": rset.options,
        "max_per_question": rset.max_per_question, "n_questions": len(rows),
        "n_rationales": int(sum(r["n_rationales"] for r in rows)), "n_tokens": int(sum(r["n_tokens"] for r in rows)),
        "truncated_rationales": int(sum(r["truncated"] for r in rows)),
        "mean_nll": float(vals.mean()), "ci95": [lo, hi], "ppl_of_mean": math.exp(float(vals.mean())),
        "by_source": nll_by_source(rows),
        "model": model_spec, "adapter": adapter, "provenance": prov, "instruction": instruction,
        "user_prefix": user_prefix, "dtype": dtype, "max_seq_len": max_seq_len,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{stem}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    atomic_write_json(summary_path, summary)
    return summary


def read_nll_rows(output_dir: str | os.PathLike, rset: RationaleSet) -> list[dict[str, Any]]:
    """The per-question rows of a finished :func:`run_rationale_nll` folder, each with ``sources``.

    Rows written before sources were recorded get them from the set itself (:func:`load_rationale_set` is
    deterministic: ``nll_each`` follows its rationale order).
    """
    path = Path(output_dir) / f"{set_file_stem(rset)}.jsonl"
    if not path.is_file():
        raise CotdistillError(f"{path}: rationale NLL missing (run the comparison again to finish it)")
    rows = list(read_jsonl(path))
    if any("sources" not in r and "nll_each" in r for r in rows):
        try:
            by_id = {str(it["question_id"]): [source_label(r) for r in it["rationales"]]
                     for it in load_rationale_set(rset)}
        except (CotdistillError, OSError) as e:  # the set's files are not here: the table stays, unbroken down
            log.warning("%s: rationale sources unknown (%s); the per-source table leaves these rows out", path, e)
            by_id = {}
        for r in rows:
            if "sources" not in r and "nll_each" in r:
                src = by_id.get(str(r["id"]), [])
                r["sources"] = src if len(src) == len(r["nll_each"]) else [""] * len(r["nll_each"])
    return rows
