"""Controlled incompatibility (``curate.inject``): paths a capable weighting should learn to distrust.

MIND and COMPACT rest on one mechanism: some teacher paths suit the student and some do not, and weighting
paths by the student's own signals beats training on all of them alike. To test that mechanism where accuracy
has no power (a 135M student), curation can add, for a seeded fraction of questions, paths of known bad
quality whose final answer is still correct (the collator appends the gold answer line to every path, so the
correctness filter cannot remove them):

=============  ==============================================================================================
kind           path
=============  ==============================================================================================
``off_topic``  the rationale of another question (same dataset, seeded pick), i.e. reasoning about other
               numbers that ends in this question's answer line
``shuffled``   one of this question's own paths with its steps (sentences / lines) in a seeded random order
``truncated``  one of this question's own paths cut to its first ``truncate_fraction`` of steps: a much weaker
               teacher that stops reasoning early and states the answer
=============  ==============================================================================================

Each injected path is its own teacher and perspective (``injected-<kind>``, role ``perspective:injected-<kind>``)
and carries ``injected: <kind>``, so every signal (MIND's α and kept set, COMPACT's metrics and α) is logged
under a label that names it. Off by default; the data card counts what was injected.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

INJECT_KINDS = ("off_topic", "shuffled", "truncated")
_STEP = re.compile(r"(?<=[.!?])\s+|\n+")


def steps(text: str) -> list[str]:
    """A rationale split into steps: lines, and sentences within lines (empty pieces dropped)."""
    return [s.strip() for s in _STEP.split(text) if s and s.strip()]


def shuffled_steps(text: str, rng: random.Random) -> str | None:
    """``text`` with its steps in a random order that differs from the original (None: fewer than 3 steps)."""
    parts = steps(text)
    if len(parts) < 3:
        return None
    order = list(range(len(parts)))
    for _ in range(10):
        rng.shuffle(order)
        if order != sorted(order):
            break
    return "\n".join(parts[i] for i in order)


def truncated_steps(text: str, fraction: float) -> str | None:
    """The first ``fraction`` of ``text``'s steps, at least one and fewer than all (None: fewer than 2 steps)."""
    parts = steps(text)
    if len(parts) < 2:
        return None
    keep = min(len(parts) - 1, max(1, round(fraction * len(parts))))
    return "\n".join(parts[:keep])


def inject_label(kind: str) -> str:
    """Teacher and perspective id of an injected path (``injected-<kind>``)."""
    return f"injected-{kind}"


def inject_paths(kept: dict[str, list[dict]], *, fraction: float, kinds: list[str], seed: int,
                 truncate_fraction: float = 0.3, check=None) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Add injected paths to a seeded ``fraction`` of the questions of ``kept`` (question id → its paths).

    ``check(qid, text) -> bool`` (curation passes the rule judge on ``text`` + the gold answer line) must accept
    an injected path, else it is dropped and counted. Sources are the question's own multi-path (non-standard)
    paths, else its standard paths. Returns the new mapping (input untouched) and the data-card summary.
    """
    from cotdistill.pathset.roles import STANDARD, perspective_role

    rng = random.Random(f"inject/{seed}")
    qids = sorted(kept)
    chosen = sorted(rng.sample(qids, round(fraction * len(qids)))) if qids else []
    out = {q: list(p) for q, p in kept.items()}
    made: Counter = Counter()
    failed: Counter = Counter()
    for qid in chosen:
        own = [p for p in kept[qid] if p.get("role") != STANDARD] or list(kept[qid])
        qrng = random.Random(f"inject/{seed}/{qid}")
        for kind in kinds:
            # a source long enough for the kind (shuffling needs 3 steps, cutting 2), else the kind is skipped
            need = {"shuffled": 3, "truncated": 2}.get(kind, 0)
            fit = [p for p in own if len(steps(p["text"])) >= need]
            src = qrng.choice(fit) if fit else None
            if kind == "off_topic":
                other = qrng.choice([q for q in qids if q != qid]) if len(qids) > 1 else None
                text = qrng.choice(kept[other])["text"] if other else None
            elif src is None:
                text = None
            elif kind == "shuffled":
                text = shuffled_steps(src["text"], qrng)
            else:
                text = truncated_steps(src["text"], truncate_fraction)
            if not text or (check is not None and not check(qid, text)):
                failed[kind] += 1
                continue
            label = inject_label(kind)
            out[qid].append({"teacher": label, "perspective": label, "role": perspective_role(label), "twin": "",
                             "text": text, "record_key": f"inject/{kind}/{qid}", "injected": kind,
                             "_order": (label, label, 0, f"inject/{kind}/{qid}")})
            made[kind] += 1
    card = {"fraction": fraction, "kinds": list(kinds), "seed": seed, "truncate_fraction": truncate_fraction,
            "questions": len(chosen), "paths": dict(made), "not_injected": dict(failed)}
    return out, card
