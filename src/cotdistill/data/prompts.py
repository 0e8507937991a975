"""The student's evaluation prompt (METHODS.md §5.2) and question normalisation for the contamination guard."""

from __future__ import annotations

import re
import unicodedata

from cotdistill.data.types import Example

#: The instruction appended to every question in the student's user turn; the default of
#: ``data.student_instruction`` (config.py reads it from here) so training and evaluation prompts cannot drift.
DEFAULT_INSTRUCTION: str = 'Reason step by step and finish with a last line of the form "The answer is: <answer>".'

LETTERS = "ABCDEFGHIJ"


def format_choices(choices) -> str:
    """Options as lines ``(A) text``, one per choice, in order."""
    return "\n".join(f"({LETTERS[i]}) {str(c).strip()}" for i, c in enumerate(choices))


def eval_user_prompt(ex: Example, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """The user turn for ``ex``: the question, lettered options if any, then ``instruction``.

    Blocks are separated by a blank line; an empty ``instruction`` (COMPACT fidelity runs) adds nothing.
    """
    parts = [ex.question.strip()]
    if ex.choices:
        parts.append(format_choices(ex.choices))
    if instruction and instruction.strip():
        parts.append(instruction.strip())
    return "\n\n".join(parts)


def normalize_question(text: str) -> str:
    """Canonical question text for matching across sources: NFKC, lowercase, punctuation -> space, one space.

    ``"Dan had $ 3 left…"`` and ``"dan had $3 left…\\n"`` normalise to the same string.
    """
    t = unicodedata.normalize("NFKC", text or "").lower()
    t = re.sub(r"[^\w\s]|_", " ", t)
    return " ".join(t.split())
