"""Shared pieces of the synthesis integration tests: a deterministic scripted teacher and a config writer."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import yaml

from cotdistill.utils.io import stable_hash

# fields that must be byte-identical between an interrupted and an uninterrupted run
CONTENT_FIELDS = ("key", "question_id", "question", "gold", "kind", "teacher", "teacher_model", "backend",
                  "perspective", "sample_idx", "prompt", "prompt_version", "gen_params", "raw_response",
                  "parsed_answer", "correct", "status")


def write_questions(path: Path, n: int) -> Path:
    """``n`` tiny word problems (gold = i + 2) as a jsonl benchmark."""
    rows = [{"id": f"q{i}", "question": f"Tom has {i} apples and buys 2 more. How many apples does he have?",
             "answer": str(i + 2)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_responder(delay_s: float = 0.0):
    """A scripted teacher: deterministic text from (prompt, seed, sampling params); wrong on every 4th seed."""

    def respond(messages: list[dict], params: dict) -> str:
        if delay_s:
            time.sleep(delay_s)
        user = messages[-1]["content"]
        n = int(re.search(r"Tom has (\d+)", user).group(1))
        h = stable_hash([messages, params.get("seed"), params.get("temperature"), params.get("top_p"),
                         params.get("max_tokens")], 8)
        ans = n + 2 if int(h, 16) % 4 else n + 3
        return f"Start with {n} apples ({h}).\nAdd 2: {n} + 2 = {ans}.\nThe answer is: {ans}"

    return respond


def write_config(path: Path, *, questions: Path, base_url: str, run_dir: Path, perspectives: list[str],
                 **teacher) -> Path:
    """A synthesis config with one openai-backend teacher at ``base_url``."""
    cfg = {
        "run": {"name": run_dir.name, "output_dir": str(run_dir.parent)},
        "data": {"question_pool": [f"jsonl:{questions}"], "perspectives": perspectives, "standard_path": "plain"},
        "teachers": [{"name": "scripted", "backend": "openai", "model": "scripted-teacher", "base_url": base_url,
                      "max_concurrency": 4, "timeout_s": 5.0, "max_retries": 3, "max_new_tokens": 64, **teacher}],
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def content(store_dir: Path) -> dict[str, str]:
    """key -> canonical JSON of the record's content fields (winning record per key)."""
    from cotdistill.teachers.store import RationaleStore

    return {k: json.dumps({f: r.get(f) for f in CONTENT_FIELDS}, sort_keys=True, ensure_ascii=False)
            for k, r in RationaleStore(store_dir).latest().items()}
