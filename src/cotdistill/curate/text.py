"""Rationale text normalisation and near-duplicate detection (METHODS.md §0.1, §1.5).

A curated path keeps only the teacher's reasoning: the final-answer line is removed here and the
collator appends the shared suffix built from the gold answer, so answer tokens align across paths.
"""

from __future__ import annotations

import re

_THINK_TAG = re.compile(r"</?think>", re.IGNORECASE)
_WORD = re.compile(r"\w+|[^\w\s]")
# A final "The answer is ..." glued to the reasoning ("= 322.The answer is 322", "13 + 21 = 34 The answer is
# 34"; ~11% of EIT SVAMP rows) that the sentence-based strip misses. Capital "The" marks a sentence start.
_GLUED_ANSWER = re.compile(
    r"(?:(?:So|Thus|Therefore|Hence),?\s*[Tt]he|The)\s+(?:final\s+)?answer\s+is\b[^\n]*$"
)


def clean_rationale(raw: str) -> str:
    """The rationale body of a teacher response: ``<think>`` tags removed (their content is reasoning and
    kept), the teacher's own final-answer statement dropped (``data.answers.strip_final_answer_line``: a
    trailing "The answer is ..." sentence, ``\\boxed{}``-only or ``####`` line), surrounding whitespace
    stripped. May return ``""`` (an answer-only response).
    """
    from cotdistill.data.answers import strip_final_answer_line

    text = strip_final_answer_line(_THINK_TAG.sub("", raw or "").strip())
    text = strip_final_answer_line(_GLUED_ANSWER.sub("", text))
    return text.strip()


def rationale_source(rec: dict, reasoning: str = "both") -> str:
    """The text a path's rationale is cut from (``curate.reasoning``, documented default ``both``).

    A record with a separate chain of thought (``reasoning``, from a reasoning teacher under
    ``teachers[].reasoning: keep``) gives: ``both`` = the reasoning, a blank line, then the answer text;
    ``content`` = the answer text only; ``reasoning`` = the trace only. Other records give their text.
    """
    content = rec.get("raw_response") or ""
    trace = rec.get("reasoning")
    if not isinstance(trace, str) or not trace.strip() or reasoning == "content":
        return content
    if reasoning == "reasoning":
        return trace
    return trace.strip() + "\n\n" + content.strip()


def shingles(text: str, n: int = 3) -> frozenset:
    """Lower-cased word ``n``-grams of ``text`` (punctuation tokens included); unigrams when shorter than n."""
    toks = _WORD.findall(text.lower())
    if len(toks) < n:
        return frozenset((t,) for t in toks)
    return frozenset(tuple(toks[i : i + n]) for i in range(len(toks) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a ∩ b| / |a ∪ b|; two empty sets count as identical (1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def dedup_indices(texts: list[str], threshold: float, n: int = 3) -> list[int]:
    """Indices of ``texts`` kept by greedy near-duplicate removal, in input order.

    A text is dropped when its word-``n``-gram Jaccard similarity to an already kept text is
    ``>= threshold`` (so ``threshold = 1`` drops only texts with identical n-gram sets).
    """
    kept: list[int] = []
    kept_sh: list[frozenset] = []
    for i, t in enumerate(texts):
        sh = shingles(t, n)
        # |a∩b|/|a∪b| <= min/max of the sizes: skip pairs that cannot reach the threshold
        if any(
            (min(len(sh), len(k)) >= threshold * max(len(sh), len(k))) and jaccard(sh, k) >= threshold
            for k in kept_sh
        ):
            continue
        kept.append(i)
        kept_sh.append(sh)
    return kept
