"""The record every loader yields."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

AnswerKind = Literal["number", "math", "choice", "yesno"]


@dataclass(frozen=True)
class Example:
    """One benchmark question.

    ``answer`` is the gold answer as a string (a number, a LaTeX expression, a letter, or yes/no);
    ``kind`` tells the checker how to compare; ``choices`` holds option texts for multiple choice
    (letters A, B, ... in order).
    """

    id: str
    benchmark: str
    question: str
    answer: str
    kind: AnswerKind
    choices: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d["choices"] = list(self.choices) if self.choices else None
        return d
