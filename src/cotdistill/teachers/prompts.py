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


# EDIT's dual chains of thought (arXiv 2405.19737, §3.1 and its appendix prompts `cot-ccp/`, `cot-ahp/`). The
# paper's prompts are few-shot BBH prompts; these are zero-shot math versions (METHODS.md §4.5: "write math
# versions [proposal]"). Versioned like TEMPLATES: the version is part of every dual record's key.
# - CCP (contrastive CoT prompting), when the teacher's standard path is correct: the most likely wrong
#   solution that follows the correct one step for step and departs at one key step (a minimal flip).
# - AHP (answer-hint prompting), when it is wrong: a solution written knowing the correct answer, so that it
#   can be paired with the teacher's own wrong path.
DUAL_TEMPLATES: dict[str, dict[str, str]] = {
    "edit-v1": {
        "ccp": (
            "Here is a problem and a correct step-by-step solution.\n\n"
            "Problem: {problem}\n\nCorrect solution:\n{solution}\n\n"
            "Write the most likely WRONG solution to this problem: copy the correct solution step by step, but "
            "make one plausible mistake in one key step (a wrong operation, a misread number or a miscalculation), "
            "carry it through to a wrong final answer, and do not point out the mistake.\n" + FINAL_LINE
        ),
        "ahp": (
            "Solve the problem below step by step. Hint: the correct answer is {answer}. Reason your way to it "
            "without mentioning the hint.\n\nProblem: {problem}\n\n" + FINAL_LINE
        ),
    },
}


def build_dual_messages(kind: str, question: str, *, answer: str, solution: str = "",
                        choices: list[str] | tuple[str, ...] | None = None, prompt_version: str = "edit-v1",
                        system_prompt: str | None = None) -> list[dict[str, Any]]:
    """Chat messages of an EDIT dual-CoT request: ``kind`` = ``ccp`` (needs the correct ``solution``) or ``ahp``
    (needs the gold ``answer``). Raises a one-line error on an unknown ``synthesis.dual_cot_prompt_version``."""
    try:
        template = DUAL_TEMPLATES[prompt_version][kind]
    except KeyError:
        raise CotdistillError(f"config: synthesis.dual_cot_prompt_version: unknown version '{prompt_version}' "
                              f"(known: {', '.join(DUAL_TEMPLATES)})") from None
    user = template.format(problem=format_problem(question, choices), solution=solution.strip(), answer=answer)
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": user}]


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
