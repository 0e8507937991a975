"""Evaluation prompts and question normalisation."""

from __future__ import annotations

from cotdistill.config import Config
from cotdistill.data.prompts import DEFAULT_INSTRUCTION, eval_user_prompt, normalize_question
from cotdistill.data.types import Example


def test_default_instruction_matches_config():
    assert DEFAULT_INSTRUCTION == Config().data.student_instruction
    assert "The answer is: <answer>" in DEFAULT_INSTRUCTION


def test_plain_question_prompt():
    ex = Example("q", "gsm8k", "  How many eggs?  ", "3", "number")
    assert eval_user_prompt(ex) == f"How many eggs?\n\n{DEFAULT_INSTRUCTION}"
    assert eval_user_prompt(ex, "") == "How many eggs?"


def test_choice_prompt_has_lettered_options():
    ex = Example("q", "csqa", "Where is money kept?", "A", "choice", ("bank", "library", "mall"))
    assert eval_user_prompt(ex, "Think.") == "Where is money kept?\n\n(A) bank\n(B) library\n(C) mall\n\nThink."


def test_normalize_question():
    assert normalize_question("Dan had $ 3 left!\n  How MUCH?") == "dan had 3 left how much"
    assert normalize_question("Dan had $3 left. How much?\n") == normalize_question("dan had 3 left how much")
    assert normalize_question("ﬁve_apples") == "five apples"  # NFKC ligature, underscore
    assert normalize_question("") == ""
