"""Perspectives and the versioned teacher prompt (METHODS.md §1.2-1.3)."""

from __future__ import annotations

import pytest

from cotdistill.config import Config, PerspectiveSpec
from cotdistill.errors import CotdistillError
from cotdistill.teachers.perspectives import BUILTIN_PERSPECTIVES, STANDARD, resolve_perspectives
from cotdistill.teachers.prompts import build_messages, format_problem


def test_eight_builtin_perspectives_match_the_spec():
    ids = list(BUILTIN_PERSPECTIVES)
    assert ids == ["formal_symbolic", "intuitive", "decomposition", "planning", "analogy", "socratic",
                   "contrastive", "counterfactual"]
    assert BUILTIN_PERSPECTIVES["planning"].style_line == \
        "begin with a short 'Plan:' listing the steps, then carry it out."
    assert BUILTIN_PERSPECTIVES["socratic"].definition == "self-questioning and answering"
    # the config default is exactly the eight, in order
    assert [p.id for p in resolve_perspectives(Config().data.perspectives)] == ids


def test_user_specs_add_and_replace():
    ps = resolve_perspectives([
        "intuitive",
        PerspectiveSpec(id="planning", style_line="make a checklist first."),
        {"id": "visual", "display_name": "visual", "style_line": "describe a picture of the situation."},
        STANDARD,
    ])
    assert [p.id for p in ps] == ["intuitive", "planning", "visual", "standard"]
    assert ps[1].style_line == "make a checklist first."
    assert ps[1].definition == BUILTIN_PERSPECTIVES["planning"].definition  # kept from the built-in
    assert ps[3].style_line == "solve the problem step by step."


@pytest.mark.parametrize("items, msg", [
    (["intuitive", "intuitive"], "listed twice"),
    (["telepathic"], "unknown perspective 'telepathic'"),
    ([{"id": "x", "style_line": "  "}], "style_line is empty"),
])
def test_bad_perspectives_are_one_line_errors(items, msg):
    with pytest.raises(CotdistillError, match=msg) as e:
        resolve_perspectives(items)
    assert "\n" not in str(e.value) and "data.perspectives" in str(e.value)


def test_prompt_v1_layout_and_final_line():
    p = BUILTIN_PERSPECTIVES["socratic"]
    msgs = build_messages("Tom has 3 apples. How many?", p, system_prompt="SYS", prompt_version="v1")
    assert msgs[0] == {"role": "system", "content": "SYS"}
    user = msgs[1]["content"]
    assert user.startswith("Solve the problem below in the Socratic style: advance by asking yourself")
    assert "Keep to this style throughout." in user
    assert "Problem: Tom has 3 apples. How many?" in user
    assert user.endswith('Finish with one last line exactly of the form "The answer is: <answer>".')
    with pytest.raises(CotdistillError, match="synthesis.prompt_version"):
        build_messages("q", p, prompt_version="v99")


def test_choices_are_lettered():
    assert format_problem("Pick one.", ["red", "blue"]) == "Pick one.\nAnswer choices:\n(A) red\n(B) blue"
