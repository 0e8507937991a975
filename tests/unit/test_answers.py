"""Answer extraction and checking (METHODS §5.2): a table of real-looking outputs, including the known traps."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from cotdistill.data.answers import (
    EXTRACTOR_VERSION,
    extract_answer,
    is_correct,
    math_equal,
    score,
    strip_final_answer_line,
    to_number,
)
from cotdistill.data.types import Example

CSQA = ("bank", "library", "department store", "mall", "new york")
GPQA = ("2.5 eV", "3.0 eV", "1.2 eV", "0.8 eV")

# (output text, kind, choices, expected extraction)
EXTRACT_CASES = [
    # ---- numbers: the "The answer is" rule
    ("She makes 9 * 2 = 18 dollars.\nThe answer is 18", "number", None, "18"),
    ("The answer is: 18.", "number", None, "18"),
    ("The answer is: $1,234.50", "number", None, "1234.50"),
    ("Total = 1,000,000 + 5. The answer is 1,000,005.", "number", None, "1000005"),
    ("He has 5 apples left. The answer is 5 apples.", "number", None, "5"),
    ("The discount is 25%. The answer is 25%", "number", None, "25"),
    ("Half of the cake. The answer is 1/2", "number", None, "1/2"),
    ("The temperature drops. The answer is -3.", "number", None, "-3"),
    ("The answer is \u22127", "number", None, "-7"),
    ("The answer is 0.75", "number", None, "0.75"),
    ("The answer is .5", "number", None, ".5"),
    ("The answer is \\$42.", "number", None, "42"),
    ("The answer is **42**", "number", None, "42"),
    ("The final answer is 12", "number", None, "12"),
    ("Final Answer: 64", "number", None, "64"),
    ("Answer: 64", "number", None, "64"),
    ("The answer is $\\frac{3}{4}$", "number", None, "3/4"),
    ("The answer is \\boxed{27}.", "number", None, "27"),
    ("The answer is: <answer>\n3 + 4 = 7\nThe answer is: 7", "number", None, "7"),
    # first number after the LAST marker, not the last number of the text
    ("The answer is 10. Let me double check: 4 + 6 = 10. Yes.\nThe answer is 10, since 3 + 7 = 10", "number", None,
     "10"),
    ("I thought the answer is 5, but 2 + 4 = 6. So the answer is 6 (not 5).", "number", None, "6"),
    # the negation trap: "not X" is skipped, the next number wins
    ("Wait, the answer is not 5, it is 6.", "number", None, "6"),
    ("The answer is not $5, but $8.", "number", None, "8"),
    ("The answer isn't 12; it is 15.", "number", None, "15"),
    ("The answer is 5, not 6.", "number", None, "5"),
    # marker followed by the value on the next line
    ("So the answer is:\n\n42", "number", None, "42"),
    # a marker deep inside the reasoning is followed by unrelated text: only its window counts, then fallbacks
    ("To get the answer, note the answer is easy to find.\n\nStep one.\nStep two: 3 + 4 = 7 apples, 7.",
     "number", None, "7"),
    # GSM8K gold format
    ("Janet sells 16 - 3 - 4 = 9 eggs.\n#### 18", "number", None, "18"),
    ("#### 1,200", "number", None, "1200"),
    # boxed rule (no marker)
    ("So the total is \\boxed{150}", "number", None, "150"),
    ("Thus $\\boxed{\\$1,250}$ in total.", "number", None, "1250"),
    ("\\boxed{\\frac{1}{2}} of the pie", "number", None, "1/2"),
    ("First \\boxed{3} then corrected: \\boxed{4}", "number", None, "4"),
    # last-number fallback (clipped outputs, no answer line)
    ("Step 1: 12 + 8 = 20\nStep 2: 20 * 3 = 60\nStep 3: 60 - 5 =", "number", None, "5"),
    ("He bought 3 packs of 12 so he has 36", "number", None, "36"),
    ("x = 10-3 = 7", "number", None, "7"),
    ("- 5 apples\n- 6 pears", "number", None, "6"),
    ("No digits here at all.", "number", None, None),
    ("", "number", None, None),
    # think blocks are stripped first
    ("<think>the answer is 3, hmm</think>The answer is 4", "number", None, "4"),
    ("<think>so 5 + 6 = 11 and then", "number", None, "11"),  # clipped inside thinking: fallback keeps text
    ("reasoning 99 </think> The answer is 8", "number", None, "8"),
    # ---- math (MATH500)
    ("Therefore $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", "math", None, "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("We get \\boxed{\\frac{14}{3}}", "math", None, "\\frac{14}{3}"),
    ("\\boxed{x^{2}+\\frac{1}{\\sqrt{2}}}", "math", None, "x^{2}+\\frac{1}{\\sqrt{2}}"),
    ("The answer is: $\\frac{1}{2}$.", "math", None, "\\frac{1}{2}"),
    ("The answer is $p - q$", "math", None, "p - q"),
    ("The answer is \\(\\sqrt{3}\\).", "math", None, "\\sqrt{3}"),
    ("The answer is: 10\nSome trailing words", "math", None, "10"),
    ("First \\boxed{2}, finally \\boxed{\\text{Evelyn}}", "math", None, "\\text{Evelyn}"),
    ("I get 3 and then 17", "math", None, "17"),
    # ---- multiple choice (CSQA A-E)
    ("A revolving door is for security. The answer is (A)", "choice", CSQA, "A"),
    ("The answer is (B) library", "choice", CSQA, "B"),
    ("The answer is: C", "choice", CSQA, "C"),
    ("The answer is D.", "choice", CSQA, "D"),
    ("The answer is **(E) new york**", "choice", CSQA, "E"),
    ("So the answer is (d) mall.", "choice", CSQA, "D"),
    ("The answer is A bank", "choice", CSQA, "A"),  # A followed by its own option text
    ("The answer is A revolving door", "choice", CSQA, None),  # "A" is an article here
    ("The answer is department store.", "choice", CSQA, "C"),  # exact option text
    ("The answer is $\\boxed{B}$", "choice", CSQA, "B"),
    ("Clearly \\boxed{C}", "choice", CSQA, "C"),
    ("Clearly \\boxed{\\text{mall}}", "choice", CSQA, "D"),
    ("The answer is (F)", "choice", CSQA, None),  # no option F
    ("So the answer is either (a) bank or (e) new york.", "choice", CSQA, None),  # two options: refuse
    ("It must be a bank.\n(A) bank", "choice", CSQA, "A"),  # last "(X)" of the final line
    ("The answer is Option B", "choice", CSQA, "B"),
    # ---- multiple choice (GPQA A-D)
    ("The answer is (C)", "choice", GPQA, "C"),
    ("The answer is (E)", "choice", GPQA, None),
    ("The answer is 3.0 eV", "choice", GPQA, "B"),
    # ---- yes/no (StrategyQA)
    ("Genghis Khan had 16 children. The answer is yes.", "yesno", None, "yes"),
    ("The answer is: No", "yesno", None, "no"),
    ("The answer is True", "yesno", None, "yes"),
    ("The answer is false.", "yesno", None, "no"),
    ("\\boxed{No}", "yesno", None, "no"),
    ("So, no, and yes he could.\nTherefore, the statement is false.", "yesno", None, "no"),
    ("Yes it is likely.\nHe was not tall enough, so no.", "yesno", None, "no"),
    ("The answer is yes, not no.", "yesno", None, "yes"),
    ("I cannot decide.", "yesno", None, None),
    ("<think>The answer is no</think>The answer is yes", "yesno", None, "yes"),
]


@pytest.mark.parametrize("text,kind,choices,expected", EXTRACT_CASES)
def test_extract_answer(text, kind, choices, expected):
    assert extract_answer(text, kind, choices) == expected


def test_table_is_large():
    assert len(EXTRACT_CASES) >= 60


# (pred, gold, kind, expected verdict)
CHECK_CASES = [
    ("18", "18", "number", True),
    ("18.0", "18", "number", True),
    ("18.00001", "18", "number", True),  # |d| < 1e-4
    ("18.001", "18", "number", False),
    ("1,234", "1234", "number", True),
    ("$1234", "1234", "number", True),
    ("1/2", "0.5", "number", True),
    ("3/4", "0.75", "number", True),
    ("-3", "3", "number", False),
    ("25%", "25", "number", True),
    ("1/0", "0", "number", False),
    ("abc", "5", "number", False),
    (None, "5", "number", False),
    ("18", "Janet sells ... \n#### 18", "number", True),
    ("0.5", "\\frac{1}{2}", "math", True),
    ("\\frac12", "\\frac{1}{2}", "math", True),
    ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", "math", True),
    ("1+x^2", "x^2+1", "math", True),
    ("\\frac{1}{3}", "\\frac{1}{2}", "math", False),
    ("\\text{Evelyn}", "\\text{Evelyn}", "math", True),
    ("b", "B", "choice", True),
    ("(C)", "C", "choice", True),
    ("A", "B", "choice", False),
    ("yes", "yes", "yesno", True),
    ("true", "yes", "yesno", True),
    ("no", "yes", "yesno", False),
]


@pytest.mark.parametrize("pred,gold,kind,expected", CHECK_CASES)
def test_is_correct(pred, gold, kind, expected):
    assert is_correct(pred, gold, kind) is expected


def test_to_number_never_evals():
    assert to_number("__import__('os')") is None
    assert to_number("2**10") is None
    assert float(to_number("7/8")) == 0.875


def test_score_uses_example_kind_and_choices():
    ex = Example("q1", "csqa", "Where?", "B", "choice", CSQA)
    assert score("Reasoning.\nThe answer is (B) library", ex) == ("B", True)
    assert score("The answer is bank", ex) == ("A", False)
    assert score("", ex) == (None, False)


def test_extractor_version_is_a_string():
    assert isinstance(EXTRACTOR_VERSION, str) and EXTRACTOR_VERSION


STRIP_CASES = [
    ("Step 1: 2 + 2 = 4.\nThe answer is 4.", "Step 1: 2 + 2 = 4."),
    ("Step 1: 2 + 2 = 4.\nTherefore, the answer is 4.", "Step 1: 2 + 2 = 4."),
    ("Divide 290 by 2 to get 145. The answer is 145", "Divide 290 by 2 to get 145."),
    ("Add them: 3 + 4 = 7.\n\\boxed{7}", "Add them: 3 + 4 = 7."),
    ("Add them: 3 + 4 = 7.\n$\\boxed{7}$", "Add them: 3 + 4 = 7."),
    ("Janet sells 9 eggs.\n#### 18", "Janet sells 9 eggs."),
    ("Add them.\nThe answer is:\n7", "Add them."),
    ("Add them.\nThe answer is\n(B)", "Add them."),
    ("Find The answer is\nnot here.", "Find The answer is\nnot here."),  # the next line is no answer value
    ("Add them.\n**Final Answer:** 7", "Add them."),
    ("So 3 + 4 = 7.\nThe answer is 7.\n#### 7", "So 3 + 4 = 7."),
    # glued to the reasoning (real EIT outputs)
    ("lost: 412 - 90 = 322.The answer is 322", "lost: 412 - 90 = 322."),
    ("2. $178 / $2 per week = 89The answer is 89", "2. $178 / $2 per week = 89"),
    ("x - 7 = 7 x = 14 The answer is 14", "x - 7 = 7 x = 14"),
    ("so 6 + 14 = 20.**The answer is 20**", "so 6 + 14 = 20."),
    ("The answer is 54", ""),
    # no final-answer ending: unchanged
    ("Danny has 100 - 68 = 32 more wrappers than bottle caps.", "Danny has 100 - 68 = 32 more wrappers than bottle caps."),
    # "answer is" inside a sentence that does not start with it is reasoning, not the final line
    ("Since the answer is needed in dollars, we compute 5 * 3 = 15.", "Since the answer is needed in dollars, we compute 5 * 3 = 15."),
]


@pytest.mark.parametrize("text,expected", STRIP_CASES)
def test_strip_final_answer_line(text, expected):
    assert strip_final_answer_line(text) == expected


def test_math_verify_in_worker_threads():
    """math-verify's signal timeouts fail outside the main thread; our checker must still work there."""
    pairs = [("0.5", "\\frac{1}{2}", True), ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
             ("\\frac{1}{3}", "0.5", False)]
    seen_threads = set()

    def check(p):
        seen_threads.add(threading.current_thread() is threading.main_thread())
        return is_correct(p[0], p[1], "math")

    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(check, pairs))
    assert seen_threads == {False}
    assert got == [p[2] for p in pairs]


def test_math_verify_thread_timeout_kills_and_recovers():
    """An over-limit check counts as wrong, and the next check (fresh worker) works again."""
    from cotdistill.data import answers

    n = time.time_ns() % 10**9  # a fresh expression: nothing cached, so the check cannot finish in 1 ms
    gold, pred = f"(x+{n})^{{12}}", f"(x+{n})^{{12}}+0"
    with ThreadPoolExecutor(1) as pool:
        t0 = time.time()
        assert pool.submit(math_equal, gold, pred, 1e-3).result() is False
        assert time.time() - t0 < 60
        assert answers._WORKER is None  # the overrunning child was killed
        assert pool.submit(math_equal, "\\frac{1}{2}", "0.5", 30).result() is True


def test_reference_solutions_score_correct(data_dir):
    """The extractor reads every official GSM8K test solution (``#### N``) and MATH500 solution (boxed) right."""
    from cotdistill.data.registry import load_benchmark

    gsm = load_benchmark("gsm8k")
    assert all(score(ex.meta["solution"], ex)[1] for ex in gsm)
    sols = [json.loads(line)["solution"] for line in open(data_dir / "math500" / "test.jsonl", encoding="utf-8")]
    m5 = load_benchmark("math500")
    wrong = [ex.id for ex, s in zip(m5, sols) if not score(s, ex)[1]]
    assert wrong == []


def test_eit_teacher_outputs_mostly_correct(data_dir):
    """Real GPT-4o SVAMP rationales ("… The answer is X"): the EIT README measured 97.4-99.0% correct."""
    from cotdistill.data.prompts import normalize_question
    from cotdistill.data.registry import load_benchmark

    by_q = {normalize_question(ex.question): ex for ex in load_benchmark("svamp:all")}
    rows = json.loads((data_dir / "teacher_rationales_eit_cot_distill/data/SVAMP_ChatGPT_level1_ranked.json").read_text())
    verdicts = [score(r["output"], by_q[normalize_question(r["instruction"])])[1] for r in rows]
    assert 0.97 <= sum(verdicts) / len(verdicts) <= 0.995
