"""The report's answer-format rate (summary card), against a hand count."""

from __future__ import annotations

import json

from cotdistill.report.html import answer_format_rate


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_counts_only_finished_parsable_answer_lines(tmp_path):
    recs = [
        {"output": "2 + 3 = 5\nThe answer is: 5", "extracted": "5", "finish_reason": "stop"},          # yes
        {"output": "Tom has 5.\n\nthe answer is 5\n", "extracted": "5", "finish_reason": "stop"},        # yes
        {"output": "The answer is: The answer is: The answer is:", "extracted": None,                      # no: loop
         "finish_reason": "length"},
        {"output": "The answer is: The lock kept the wheel ... on the what?", "extracted": None,          # no: none
         "finish_reason": "stop"},
        {"output": "The answer is: 7\nBecause 3 + 4 = 7.", "extracted": "7", "finish_reason": "stop"},   # no: last
        {"output": "5 + 2 = 7. The answer is: 7", "extracted": "7", "finish_reason": "length"},          # no: cut
        {"output": "", "extracted": None, "finish_reason": "over_context"},                                # no
        {"id": "no output field"},                                                                          # skipped
    ]
    rate, n = answer_format_rate(_write(tmp_path / "e.jsonl", recs))
    assert n == 7 and rate == 2 / 7


def test_older_records_without_extracted_field(tmp_path):
    recs = [{"output": "The answer is: 4"}, {"output": "so 4"}]
    assert answer_format_rate(_write(tmp_path / "e.jsonl", recs)) == (0.5, 2)
    assert answer_format_rate(tmp_path / "missing.jsonl") is None
