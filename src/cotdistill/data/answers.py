"""Answer extraction and checking: the one extractor shared by evaluation and curation (METHODS.md §5.2).

Every model output goes through :func:`extract_answer` (text -> answer string or None) and :func:`is_correct`
(answer vs gold -> bool); :func:`score` does both for an :class:`~cotdistill.data.types.Example`.

Rules (for every kind, ``<think>…</think>`` is removed first; an unclosed ``<think>`` keeps its text so that a
clipped output still reaches the fallback rules). An *answer marker* is "The answer is" (also "The final answer
is", "Final answer:", "Answer:") or GSM8K's "####". For each kind the first rule that yields an answer wins:

``number`` (GSM8K, SVAMP)
    1. the first number after the LAST answer marker (on the rest of its line, or on the next non-empty line
       when that line has none: "The answer is:\\n\\n42");
       **negation rule**: a number written right after "not" / "isn't" ("the answer is not 5, it is 6") is
       skipped, so the next number in the segment wins (6);
    2. the last balanced ``\\boxed{}``: the first number in it (``\\frac{a}{b}`` becomes ``a/b``);
    3. the last number anywhere (clipped outputs).
    Numbers may carry thousands commas (``1,234``), a currency sign (``$``), a unit (``5 apples``), ``%``,
    a sign (``-3``, unicode minus) and decimals; ``a/b`` is a fraction, parsed with :class:`fractions.Fraction`
    (never ``eval``). The returned string has commas and currency removed (``"1234"``, ``"-2.5"``, ``"3/4"``).
    Check: numeric, ``|pred - gold| < 1e-4``.
``math`` (MATH500)
    1. the last balanced ``\\boxed{}`` (or ``\\fbox{}``) content; 2. the text after the last answer marker, to the
    end of its line, with ``$``/``\\(\\)`` delimiters and a final period removed; 3. the last number.
    Check: exact string match after whitespace removal, else math-verify ``verify(parse(gold), parse(pred))``,
    gold first, under a time limit (see :func:`math_equal`).
``choice`` (CSQA A-E, GPQA A-D; the valid letters follow ``len(choices)``)
    1. after the last answer marker: an optional ``(`` and a letter; a bare capital letter counts only when
       followed by punctuation / line end or by its own option text (so "The answer is A bank" is letter A only if
       option A is "bank"); 2. the last ``\\boxed{X}`` (a letter or an option text); 3. an exact option text after
       the last marker (or in ``\\boxed{}``); 4. the last "(X)" in the final non-empty line.
    Check: same letter.
``yesno`` (StrategyQA)
    1. the first yes/no/true/false word after the last answer marker (same line); 2. ``\\boxed{}`` holding one;
    3. the last yes/no word of the final non-empty line. Returns ``"yes"`` or ``"no"``. Check: equal.

Bump :data:`EXTRACTOR_VERSION` whenever a rule changes: it is written into every result's provenance.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from fractions import Fraction
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cotdistill.data.types import Example

EXTRACTOR_VERSION = "cotdistill-extract-1"

_YES = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}

# --------------------------------------------------------------------------- text helpers

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S | re.I)

# "The answer is", "the final answer is", "Final Answer:", "Answer:", "####". Group "m" spans the marker.
_MARKER = re.compile(
    r"(?P<m>\b(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:)|####)",
    re.I,
)

# A number: optional sign, thousands-grouped or plain digits, optional decimals; or a bare ".5".
_NUM = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
_NUMBER = re.compile(rf"(?P<sign>[-\u2212])?(?:\\?\$\s?)?(?P<a>{_NUM})(?:\s*/\s*(?P<b>{_NUM}))?(?![\d])")
_NEGATED = re.compile(r"(?:\bnot|n't|\bnever)\s*(?:equal\s+to\s+|equals?\s+)?[\s(\\$*]*$", re.I)


def strip_think(text: str) -> str:
    """Remove ``<think>…</think>`` blocks; text before a lone ``</think>`` is thinking too (template-opened)."""
    text = _THINK_BLOCK.sub(" ", text or "")
    if re.search(r"</think>", text, re.I):
        text = re.split(r"</think>", text, flags=re.I)[-1]
    return re.sub(r"<think>", " ", text, flags=re.I)


def last_boxed(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed); None if none."""
    best = None
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            best = text[m.end() : i - 1]
    return best


def _after_last_marker(text: str) -> str | None:
    """Text following the last answer marker, or None when there is no marker."""
    last = None
    for m in _MARKER.finditer(text):
        last = m
    return None if last is None else text[last.end() :]


def _latex_to_plain(s: str) -> str:
    """Cheap LaTeX clean-up for numeric answers: \\frac{a}{b} -> a/b, drop \\text, \\!, \\, and ``{}``."""
    s = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\\[dt]?frac\s*(\d)\s*(\d)", r"\1/\2", s)  # \frac12
    s = re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}", r" \1 ", s)
    s = re.sub(r"\\[,!;: ]|\\quad|\\left|\\right|\^\\circ|\\circ|\\%", " ", s)
    s = s.replace("{", " ").replace("}", " ")
    s = re.sub(r"\((\s*[-\u2212]?\s*[\d.,]+\s*)\)\s*/\s*\((\s*[\d.,]+\s*)\)", r"\1/\2", s)
    return s


def _plain(s: str) -> str:
    return _latex_to_plain(s) if "\\" in s or "{" in s else s


def _numbers(s: str) -> list[tuple[str, int]]:
    """All numbers in ``s`` (after :func:`_plain`) as (canonical string, offset in the plain text), in order.

    Canonical: commas and currency removed, fractions kept as ``a/b``.
    """
    out = []
    s2 = _plain(s)
    for m in _NUMBER.finditer(s2):
        start = m.start("a")
        prev = s2[start - 1] if start > 0 else " "
        a = m.group("a").replace(",", "")
        b = m.group("b")
        # A sign counts only when it is not a binary minus between two operands ("10-3").
        sign = ""
        if m.group("sign"):
            before = s2[: m.start()].rstrip()
            if not before or not (before[-1].isalnum() or before[-1] in ")]}"):
                sign = "-"
        if prev.isalpha() or prev == "_":  # part of an identifier like x2 or a_1
            continue
        val = sign + a + ("/" + b.replace(",", "") if b else "")
        out.append((val, m.start()))
    return out


def _first_unnegated(segment: str) -> str | None:
    """First number of ``segment`` not directly negated by "not"/"n't" (the "not 5, it is 6" trap)."""
    segment = _plain(segment)
    for val, pos in _numbers(segment):
        if _NEGATED.search(segment[:pos]):
            continue
        return val
    return None


def to_number(s: str | None) -> Fraction | None:
    """Parse a number string (commas, ``$``, ``%``, ``a/b`` allowed) to an exact Fraction; None if it is not one."""
    if s is None:
        return None
    t = str(s).strip().replace(",", "").replace("$", "").replace("\\$", "").replace("%", "").replace("\u2212", "-")
    t = t.strip().rstrip(".").strip()
    if not t:
        return None
    try:
        if "/" in t:
            num, den = t.split("/", 1)
            fden = Fraction(den.strip())
            if fden == 0:
                return None
            return Fraction(num.strip()) / fden
        return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None


def format_number(x: float | int | str) -> str:
    """Canonical gold string for a number: ``51.0`` -> ``"51"``, ``2.50`` -> ``"2.5"``."""
    f = to_number(str(x))
    if f is None:
        return str(x).strip()
    if f.denominator == 1:
        return str(f.numerator)
    return repr(float(f)) if "/" not in str(x) else str(x).strip()


# --------------------------------------------------------------------------- extraction


def _marker_window(seg: str) -> str:
    """The rest of the marker's line plus the next non-empty line ("The answer is:\\n\\n42")."""
    first, _, rest = seg.partition("\n")
    nxt = next((ln for ln in rest.split("\n") if ln.strip()), "")
    return first + "\n" + nxt


def _extract_number(text: str) -> str | None:
    seg = _after_last_marker(text)
    if seg is not None:
        got = _first_unnegated(_marker_window(seg))
        if got is not None:
            return got
    boxed = last_boxed(text)
    if boxed is not None:
        nums = _numbers(boxed)
        if nums:
            return nums[0][0]
    nums = _numbers(text)
    return nums[-1][0] if nums else None


def _clean_math(s: str) -> str:
    s = s.strip()
    s = re.sub(r"^\s*[:=]\s*", "", s)
    s = re.sub(r"^\*+|\*+$", "", s).strip()
    s = s.rstrip(".").strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    s = s.rstrip(".").strip()
    if s.startswith("$") and s.endswith("$") and len(s) > 1:
        s = s.strip("$").strip()
    return s


def _extract_math(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    seg = _after_last_marker(text)
    if seg is not None:
        line = seg.strip().split("\n", 1)[0]
        line = _clean_math(line)
        if line:
            return line
    nums = _numbers(text)
    return nums[-1][0] if nums else None


def _norm_text(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def _letters(choices) -> str:
    n = len(choices) if choices else 5
    return "ABCDEFGHIJ"[: max(1, min(n, 10))]


def _match_option_text(s: str, choices) -> str | None:
    """Letter of the option whose text ``s`` is (or starts with), preferring the longest match."""
    if not choices:
        return None
    ns = _norm_text(s)
    if not ns:
        return None
    best, best_len = None, -1
    for i, c in enumerate(choices):
        nc = _norm_text(str(c))
        if nc and (ns == nc or ns.startswith(nc + " ")) and len(nc) > best_len:
            best, best_len = "ABCDEFGHIJ"[i], len(nc)
    return best


def _letter_at_start(seg: str, letters: str, choices) -> str | None:
    """Letter at the start of the text after an answer marker, or None (see the module rules)."""
    s = seg.lstrip(" \t:=-*")
    s = re.sub(r"^(?:option|choice)\s*", "", s, flags=re.I)
    m = re.match(r"[(\[]\s*([A-Ja-j])\s*[)\]]", s)
    if m and m.group(1).upper() in letters:
        return m.group(1).upper()
    m = re.match(r"([A-Ja-j])(?![\w'])", s)
    if not m or m.group(1).upper() not in letters:
        return None
    letter, rest = m.group(1).upper(), s[m.end() :]
    if re.match(r"\**\s*(?:$|[.,;:)\]]|\n)", rest):
        return letter
    # "A bank": a capital letter followed by words counts only if those words are its option text.
    if m.group(1).isupper() and choices and _match_option_text(rest.lstrip(" -:*"), choices) == letter:
        return letter
    return None


def _extract_choice(text: str, choices) -> str | None:
    letters = _letters(choices)
    seg = _after_last_marker(text)
    if seg is not None:
        got = _letter_at_start(seg, letters, choices)
        if got:
            return got
    boxed = last_boxed(text)
    if boxed is not None:
        b = re.sub(r"\\text\s*\{([^{}]*)\}", r"\1", boxed).strip()
        m = re.fullmatch(r"\(?\s*([A-J])\s*\)?", b)
        if m and m.group(1).upper() in letters:
            return m.group(1).upper()
        got = _match_option_text(b, choices)
        if got:
            return got
    if seg is not None:
        line = seg.strip().split("\n", 1)[0].strip().strip("*").strip()
        got = _match_option_text(line, choices)
        if got:
            return got
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        found = [x.upper() for x in re.findall(r"\(([A-J])\)", lines[-1]) if x.upper() in letters]
        if found:
            return found[-1]
    return None


def _extract_yesno(text: str) -> str | None:
    seg = _after_last_marker(text)
    if seg is not None:
        line = seg.strip().split("\n", 1)[0]
        m = re.search(r"\b(yes|no|true|false)\b", line, re.I)
        if m:
            return _YES[m.group(1).lower()]
    boxed = last_boxed(text)
    if boxed is not None:
        m = re.search(r"\b(yes|no|true|false)\b", boxed, re.I)
        if m:
            return _YES[m.group(1).lower()]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if lines:
        found = re.findall(r"\b(yes|no|true|false)\b", lines[-1], re.I)
        if found:
            return _YES[found[-1].lower()]
    return None


def extract_answer(text: str | None, kind: str, choices=None) -> str | None:
    """Extract the final answer from a model output.

    Args:
        text: the raw generation (may contain ``<think>`` blocks, be clipped, or be empty).
        kind: ``number`` | ``math`` | ``choice`` | ``yesno``.
        choices: option texts for ``choice`` (letters A, B, ... in order); fixes the valid letters.

    Returns:
        The answer string (canonical number string, LaTeX, a letter, or ``yes``/``no``) or None.
    """
    if not text:
        return None
    t = strip_think(text)
    if kind == "number":
        return _extract_number(t)
    if kind == "math":
        return _extract_math(t)
    if kind == "choice":
        return _extract_choice(t, choices)
    if kind == "yesno":
        return _extract_yesno(t)
    raise ValueError(f"unknown answer kind {kind!r}")


# --------------------------------------------------------------------------- math-verify with a time limit


def _mv_verify(gold: str, pred: str, timeout: float | None) -> bool:
    """math-verify ``verify(parse(gold), parse(pred))`` (gold first). ``timeout=None`` disables its signal alarms."""
    from math_verify import parse, verify

    t = None if timeout is None else max(1, int(round(timeout)))
    g = parse(_wrap_latex(gold), parsing_timeout=t)
    p = parse(_wrap_latex(pred), parsing_timeout=t)
    if not g or not p:
        return False
    return bool(verify(g, p, timeout_seconds=t))


def _wrap_latex(s: str) -> str:
    s = s.strip()
    if "$" in s or "\\(" in s or "\\[" in s or "\\boxed" in s:
        return s
    return f"${s}$"


class _VerifyWorker:
    """A child Python process answering math-verify requests, one JSON line in, one JSON line out.

    A plain subprocess (not multiprocessing) so that it never re-imports the caller's ``__main__`` and never forks
    a process that runs torch/tokenizer threads. A reader thread feeds replies into a queue, so waiting with a
    time limit is portable; on timeout the child is killed and a fresh one starts on the next call.
    """

    def __init__(self) -> None:
        import queue
        import subprocess
        import sys
        from pathlib import Path

        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])  # the folder holding the cotdistill package
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-c", "from cotdistill.data.answers import _worker_main; _worker_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
        )
        self.owner_pid = os.getpid()  # a forked child must not share this pipe
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        # The child imports math-verify/sympy before saying "ready"; that start-up is not charged to a request.
        if self.replies.get(timeout=120) != "ready":
            raise RuntimeError("math-verify worker failed to start")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.replies.put(line.strip())
        self.replies.put(None)

    def ask(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """The verdict, or None on timeout / crash (the caller then kills this worker)."""
        import json
        import queue

        try:
            self.proc.stdin.write(json.dumps([gold, pred]) + "\n")
            self.proc.stdin.flush()
            line = self.replies.get(timeout=timeout_s)
        except (OSError, queue.Empty):
            return None
        return None if line is None else line == "1"

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - already gone
            pass


def _worker_main() -> None:
    """Entry point of the math-verify child: signal timeouts disabled (the parent enforces the limit)."""
    import json
    import sys

    import math_verify  # noqa: F401 - import up front so the first request is not charged for it

    print("ready", flush=True)
    for line in sys.stdin:
        try:
            gold, pred = json.loads(line)
            ok = _mv_verify(gold, pred, None)
        except Exception:  # noqa: BLE001 - odd model output is simply not equal
            ok = False
        print("1" if ok else "0", flush=True)


_WORKER: _VerifyWorker | None = None
_WORKER_LOCK = threading.Lock()


def _shutdown_worker() -> None:
    global _WORKER
    if _WORKER is not None:
        _WORKER.kill()
        _WORKER = None


atexit.register(_shutdown_worker)


def _verify_in_worker(gold: str, pred: str, timeout_s: float) -> bool:
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None or _WORKER.proc.poll() is not None or _WORKER.owner_pid != os.getpid():
            _WORKER = _VerifyWorker()
        verdict = _WORKER.ask(gold, pred, timeout_s)
        if verdict is None:  # timed out or crashed: kill it so a hung sympy call cannot linger
            _shutdown_worker()
            return False
        return verdict


def math_equal(gold: str, pred: str, timeout_s: float = 5.0) -> bool:
    """math-verify equivalence with a time limit that works in every thread.

    In the main thread math-verify's own ``signal.alarm`` timeouts are used. Elsewhere (evaluation worker
    threads) signals are unavailable, so the check runs in a child process with ``parsing_timeout=None,
    timeout_seconds=None`` and the parent enforces ``timeout_s`` (killing the child on overrun); a timeout
    counts as not equal.
    """
    if threading.current_thread() is threading.main_thread():
        try:
            return _mv_verify(gold, pred, timeout_s)
        except Exception:  # noqa: BLE001 - a parser crash on odd model output is a wrong answer
            return False
    return _verify_in_worker(gold, pred, timeout_s)


# --------------------------------------------------------------------------- checking


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s).rstrip(".")


def is_correct(pred: str | None, gold: str, kind: str, *, timeout_s: float = 5.0) -> bool:
    """Is the extracted answer ``pred`` right? ``kind`` as in :func:`extract_answer`; None is never right.

    ``number``: |pred - gold| < 1e-4 (exact fractions). ``math``: string match after whitespace removal, else
    math-verify (gold first) limited to ``timeout_s``. ``choice``: same letter. ``yesno``: same yes/no.
    """
    if pred is None or gold is None:
        return False
    pred, gold = str(pred).strip(), str(gold).strip()
    if kind == "number":
        if "####" in gold:
            gold = gold.split("####")[-1]
        p, g = to_number(pred), to_number(gold)
        if p is None or g is None:
            return False
        return abs(float(p - g)) < 1e-4
    if kind == "math":
        if _squash(pred) == _squash(gold):
            return True
        return math_equal(gold, pred, timeout_s)
    if kind == "choice":
        return pred.strip("() ").upper() == gold.strip("() ").upper()
    if kind == "yesno":
        return _YES.get(pred.lower(), pred.lower()) == _YES.get(gold.lower(), gold.lower())
    raise ValueError(f"unknown answer kind {kind!r}")


def score(text: str | None, ex: Example, *, timeout_s: float = 5.0) -> tuple[str | None, bool]:
    """Extract the answer from ``text`` for ``ex`` and check it: returns ``(extracted, correct)``."""
    pred = extract_answer(text, ex.kind, ex.choices)
    return pred, is_correct(pred, ex.answer, ex.kind, timeout_s=timeout_s)


# --------------------------------------------------------------------------- curation helper

_CONNECTIVES = r"(?:(?:so|thus|therefore|hence|overall|finally|in\s+conclusion|consequently)\s*,?\s*)*"
# An answer statement that opens a sentence (after line start or . ! ? : ; or bold), any case.
_FINAL_AT_BOUNDARY = re.compile(
    rf"(?:^|(?<=[.!?:;*]))\s*(?P<cut>\**\s*{_CONNECTIVES}(?:the\s+)?(?:final\s+)?answer\s*(?:is\b|:))",
    re.I,
)
# Capitalised statements glued to the previous text ("= 322.The answer is 322", "89The answer is 89").
_FINAL_GLUED = re.compile(
    r"(?P<cut>(?:(?:So|Thus|Therefore|Hence)\s*,?\s*the\s+)(?:final\s+)?answer\s+is\b"
    r"|The\s+(?:final\s+)?answer\s+is\b|Final\s+[Aa]nswer\s*:)"
)


def _final_statement_start(line: str) -> int | None:
    """Offset where the line's last final-answer statement starts, or None."""
    starts = [m.start("cut") for rx in (_FINAL_AT_BOUNDARY, _FINAL_GLUED) for m in rx.finditer(line)]
    return max(starts) if starts else None


def strip_final_answer_line(text: str) -> str:
    """Remove the trailing final-answer statement so a curated path can take the shared suffix (METHODS §0.1).

    Removed (repeatedly, from the end): a last line that is only ``\\boxed{…}`` (optionally in ``$``/``\\[\\]``),
    a ``#### …`` line, or the last line's final answer statement: "The answer is" / "Final answer:" opening a
    sentence (with a leading "So,"/"Therefore," etc.), or a capitalised "The answer is" glued to the text
    before it ("= 322.The answer is 322"). Only that statement is cut when the line also holds reasoning
    ("… 145 groups. The answer is 145" keeps "… 145 groups."); "since the answer is needed in …" is reasoning. Text without such an ending is returned unchanged
    (apart from trailing whitespace).
    """
    out = (text or "").rstrip()
    for _ in range(4):
        lines = out.split("\n")
        last = lines[-1]
        stripped = last.strip()
        new_last = None
        if re.fullmatch(r"(?:\$\$?|\\\[|\\\()?\s*\\boxed\s*\{.*\}\s*(?:\$\$?|\\\]|\\\))?\s*\.?", stripped):
            new_last = ""
        elif stripped.startswith("####"):
            new_last = ""
        else:
            at = _final_statement_start(last)
            if at is not None:
                new_last = re.sub(r"[\s*]+$", "", last[:at])
        if new_last is None and len(lines) > 1 and len(stripped) <= 40:
            # "The answer is:" on its own line, the value on the next one.
            prev = lines[-2]
            at = _final_statement_start(prev)
            value_like = re.search(r"\d|\$|\\boxed|^\W*\(?[A-J]\)?\W*$|^\W*(?:yes|no|true|false)\W*$", stripped, re.I)
            if at is not None and (re.search(r":\s*\**\s*$", prev) or (value_like and re.search(r"is\s*\**\s*$", prev))):
                lines = lines[:-1]
                new_last = re.sub(r"[\s*]+$", "", prev[:at])
        if new_last is None:
            break
        lines[-1] = new_last
        out = "\n".join(lines).rstrip()
        if not out:
            break
    return out
