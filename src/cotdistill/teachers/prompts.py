"""Versioned teacher prompt templates (METHODS.md §1.3).

A template version is part of every record key (``synthesis.prompt_version``): change a template by
adding a new version, never by editing an old one, so stored rationales stay valid.
"""

from __future__ import annotations

from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.teachers.perspectives import Perspective

FINAL_LINE = 'Finish with one last line exactly of the form "The answer is: <answer>".'

# user turn templates; fields: display_name, style_line, problem
TEMPLATES: dict[str, str] = {
    "v1": (
        "Solve the problem below in the {display_name} style: {style_line}\n"
        "Keep to this style throughout.\n\n"
        "Problem: {problem}\n\n" + FINAL_LINE
    ),
}


def format_problem(question: str, choices: list[str] | tuple[str, ...] | None = None) -> str:
    """The problem text shown to the teacher: the question, then lettered options if any."""
    text = question.strip()
    if choices:
        opts = "\n".join(f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices))
        text = f"{text}\nAnswer choices:\n{opts}"
    return text


def build_messages(
    question: str,
    perspective: Perspective,
    *,
    choices: list[str] | tuple[str, ...] | None = None,
    prompt_version: str = "v1",
    system_prompt: str | None = None,
) -> list[dict[str, Any]]:
    """Chat messages for one (question, perspective): ``[system?, user]``.

    Raises a one-line error naming ``synthesis.prompt_version`` when the version is unknown.
    """
    try:
        template = TEMPLATES[prompt_version]
    except KeyError:
        raise CotdistillError(
            f"config: synthesis.prompt_version: unknown version '{prompt_version}' (known: {', '.join(TEMPLATES)})"
        ) from None
    user = template.format(
        display_name=perspective.display_name,
        style_line=perspective.style_line,
        problem=format_problem(question, choices),
    )
    msgs: list[dict[str, Any]] = []
    if system_prompt:
        msgs.append({"role": "system", "content": system_prompt})
    msgs.append({"role": "user", "content": user})
    return msgs
