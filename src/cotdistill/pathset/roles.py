"""Path roles: what a rationale path *is*, so that each method trains on the paths its paper defines.

Every path of the curated dataset (and every record of the rationale store) carries a ``role``:

=====================  =================================================================================
role                   meaning
=====================  =================================================================================
``standard``           the teacher's plain chain of thought ("solve the problem step by step", METHODS.md
                       §1.3; the few-shot/zero-shot CoT of the public sets). A teacher may have several
                       sampled standard paths per question (MCC-KD's 10 GPT-3.5 samples).
``perspective:<id>``   written under a style prompt: MIND's cognitive perspectives (§1.2), or another
                       named prompt style (EIT's granularity levels ``level1..6``).
``teacher:<name>``     a teacher's rationale whose prompt is neither of the above (e.g. EIT's human
                       solutions); counts as one of that teacher's paths.
``rejected``           a wrong rationale kept for EDIT's dual CoTs; linked to its correct twin by ``twin``
                       (the twin's record key) when synthesis built the pair (CCP prompt, or the teacher's
                       own wrong standard path answered by an AHP twin).
``chosen``             a correct rationale written with the answer hint (EDIT's AHP prompt): only ever the
                       correct side of its dual pair, never trained on by another method.
=====================  =================================================================================

Each method declares the roles it trains on (:func:`select_for_method`, one function per method, per its
paper). Kept here, below both ``methods/`` and ``train/``, so the trainer and the methods read one
definition; curation and the importers only need the constants and :func:`role_of_record`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

STANDARD = "standard"
REJECTED = "rejected"
CHOSEN = "chosen"
PERSPECTIVE_PREFIX = "perspective:"
TEACHER_PREFIX = "teacher:"
KINDS = ("standard", "perspective", "teacher", "rejected", "chosen")

# Which role kinds each method trains on, as documented to users (validate-time check, data card).
METHOD_ROLES: dict[str, str] = {
    "std_cot": "standard path (std_cot.paths: standard) or every path (all)",
    "sbs": "one standard path per question",
    "mcc_kd": "its diverse paths: the sampled standard paths when questions have >= 2 (MCC-KD's own data), "
              "else the perspective/teacher paths (mcc_kd.paths)",
    "mind": "the perspective paths",
    "compact": "one path per teacher (its standard path, else its first perspective/teacher path)",
    "mode": "experts on the perspective/teacher paths; the standard path is the composition (dev) target",
    "edit": "dual pairs: a rejected path and its correct twin",
}


def role_kind(role: str | None) -> str:
    """``standard`` / ``perspective`` / ``teacher`` / ``rejected`` of a role string (None counts as perspective)."""
    if not role:
        return "perspective"
    if role in (STANDARD, REJECTED, CHOSEN):
        return role
    head = role.split(":", 1)[0]
    if head in ("perspective", "teacher"):
        return head
    raise ValueError(f"unknown path role {role!r} (standard, perspective:<id>, teacher:<name>, rejected, chosen)")


def perspective_role(pid: str) -> str:
    """The role of a path written under perspective ``pid`` (``standard`` for the standard prompt)."""
    return STANDARD if pid == STANDARD else PERSPECTIVE_PREFIX + pid


def role_of_record(rec: dict[str, Any]) -> str:
    """A store record's role: its ``role`` field, or (stores written before roles existed) derived from its
    perspective: ``standard`` for the standard prompt, ``perspective:<id>`` otherwise."""
    role = rec.get("role")
    if role:
        role_kind(role)  # validates
        return str(role)
    return perspective_role(str(rec.get("perspective") or ""))


def path_role(path: dict[str, Any]) -> str:
    """A dataset path's role (datasets curated before roles existed: derived like :func:`role_of_record`)."""
    return role_of_record(path)


def count_kinds(paths: Iterable[dict[str, Any]]) -> Counter:
    """Counter of role kinds over ``paths``."""
    return Counter(role_kind(path_role(p)) for p in paths)


# --------------------------------------------------------------------------- per-method selection


def standard_paths(paths: list[dict]) -> list[dict]:
    """The standard paths, in dataset order."""
    return [p for p in paths if path_role(p) == STANDARD]


def multi_paths(paths: list[dict]) -> list[dict]:
    """The perspective and teacher paths (the multi-path set of MIND/COMPACT-style data), in dataset order."""
    return [p for p in paths if role_kind(path_role(p)) in ("perspective", "teacher")]


def perspective_paths(paths: list[dict]) -> list[dict]:
    """The perspective paths, in dataset order."""
    return [p for p in paths if role_kind(path_role(p)) == "perspective"]


def one_per_teacher(paths: list[dict]) -> list[dict]:
    """COMPACT's teacher paths: per teacher (in order of first appearance) its first standard path, else its
    first perspective/teacher path. Rejected paths never count."""
    best: dict[str, dict] = {}
    order: list[str] = []
    for p in paths:
        kind = role_kind(path_role(p))
        if kind in ("rejected", "chosen"):
            continue
        t = str(p.get("teacher"))
        if t not in best:
            order.append(t)
            best[t] = p
        elif kind == "standard" and path_role(best[t]) != STANDARD:
            best[t] = p
    return [best[t] for t in order]


def trainable_paths(paths: list[dict]) -> list[dict]:
    """Every correct path a teacher wrote without the answer hint (all roles but ``rejected``/``chosen``):
    Std-CoT ``paths: all``."""
    return [p for p in paths if path_role(p) not in (REJECTED, CHOSEN)]
