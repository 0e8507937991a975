"""The reasoning perspectives a teacher is asked to write in (METHODS.md §1.2), user-extensible.

The 8 built-in MIND perspectives carry the paper's definition and our [proposal] style line; the
``standard`` perspective is the plain "step by step" path used by single-path baselines (§1.3).
Users add or replace perspectives in YAML (``data.perspectives`` accepts ids or full specs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from cotdistill.errors import CotdistillError

STANDARD = "standard"


@dataclass(frozen=True)
class Perspective:
    """One way of reasoning: ``id`` (cache key, path label), ``display_name`` (shown in the prompt),
    ``definition`` (documentation / data card) and ``style_line`` (the instruction in the teacher prompt)."""

    id: str
    display_name: str
    definition: str
    style_line: str

    def to_dict(self) -> dict[str, str]:
        """JSON-serialisable form."""
        return asdict(self)


BUILTIN_PERSPECTIVES: dict[str, Perspective] = {
    p.id: p
    for p in (
        Perspective(
            "formal_symbolic", "formal-symbolic",
            "rigorous symbolic derivation, no intuitive leaps",
            "write every step as an equation or logical statement; skip nothing.",
        ),
        Perspective(
            "intuitive", "intuitive",
            "everyday heuristics and analogies, minimal notation",
            "explain with plain intuition and everyday comparisons, few symbols.",
        ),
        Perspective(
            "decomposition", "decomposition",
            "sub-problems solved as numbered steps",
            "split the task into numbered sub-problems and solve them in order.",
        ),
        Perspective(
            "planning", "planning",
            "top-level plan, then execution",
            "begin with a short 'Plan:' listing the steps, then carry it out.",
        ),
        Perspective(
            "analogy", "analogy",
            "map to a simpler similar problem, transfer the solution",
            "solve a simpler problem with the same structure, then map its solution back.",
        ),
        Perspective(
            "socratic", "Socratic",
            "self-questioning and answering",
            "advance by asking yourself a question, answering it, and repeating.",
        ),
        Perspective(
            "contrastive", "contrastive",
            "compare several approaches or answers, keep the best",
            "write at least two candidate approaches, compare them, rule out the wrong ones.",
        ),
        Perspective(
            "counterfactual", "counterfactual",
            "vary conditions (\"what if\") to find the binding constraints",
            "ask how the result changes under other conditions to find what really constrains it.",
        ),
    )
}

STANDARD_PERSPECTIVE = Perspective(
    STANDARD, "standard", "one plain step-by-step solution (single-path baselines)", "solve the problem step by step."
)

MIND_PERSPECTIVE_IDS: tuple[str, ...] = tuple(BUILTIN_PERSPECTIVES)


def get_perspective(pid: str) -> Perspective:
    """A built-in perspective (or ``standard``) by id; unknown ids raise a one-line error."""
    if pid == STANDARD:
        return STANDARD_PERSPECTIVE
    try:
        return BUILTIN_PERSPECTIVES[pid]
    except KeyError:
        known = ", ".join([*BUILTIN_PERSPECTIVES, STANDARD])
        raise CotdistillError(
            f"config: data.perspectives: unknown perspective '{pid}' (built-in: {known}; "
            "or give a full spec with id and style_line)"
        ) from None


def _from_spec(spec: Any) -> Perspective:
    # PerspectiveSpec (pydantic) or a plain mapping with the same keys
    d = spec.model_dump() if hasattr(spec, "model_dump") else dict(spec)
    pid = str(d.get("id") or "").strip()
    if not pid:
        raise CotdistillError("config: data.perspectives: a perspective spec needs a non-empty id")
    base = BUILTIN_PERSPECTIVES.get(pid) or (STANDARD_PERSPECTIVE if pid == STANDARD else None)
    style = d.get("style_line") or (base.style_line if base else "")
    if not str(style).strip():
        raise CotdistillError(f"config: data.perspectives: perspective '{pid}': style_line is empty")
    return Perspective(
        id=pid,
        display_name=d.get("display_name") or (base.display_name if base else pid.replace("_", " ")),
        definition=d.get("definition") or (base.definition if base else ""),
        style_line=str(style).strip(),
    )


def resolve_perspectives(items: Iterable[Any]) -> list[Perspective]:
    """Turn ``data.perspectives`` entries (ids of built-ins, ``PerspectiveSpec`` or dicts) into perspectives.

    A spec whose id equals a built-in replaces it (missing fields fall back to the built-in's).
    Order is kept; duplicate ids are an error.
    """
    out: list[Perspective] = []
    seen: set[str] = set()
    for item in items:
        p = get_perspective(item.strip()) if isinstance(item, str) else _from_spec(item)
        if p.id in seen:
            raise CotdistillError(f"config: data.perspectives: perspective '{p.id}' is listed twice")
        seen.add(p.id)
        out.append(p)
    return out
