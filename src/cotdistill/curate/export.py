"""Export a curated path dataset as files other trainers read (TRL, LLaMA-Factory, axolotl), with a dataset card.

One row per path: the student's user turn (question, options, ``data.student_instruction``: exactly the prompt
cotdistill trains and evaluates with) and the assistant turn (the path's rationale, a newline, the shared answer
line ``data.answer_suffix``), plus the path's ``question_id``, ``gold``, ``teacher``, ``perspective``, ``role``
and ``label``. Paths whose ``role`` is ``rejected`` (wrong answers kept for EDIT) are left out: these files are for
supervised fine-tuning.

Formats (``--format``):

=============  ====================================================================================  ==========
``trl``        conversational prompt-completion: ``prompt`` = [user msg], ``completion`` = [assistant  ``.jsonl``
               msg] (TRL's ``SFTTrainer`` then trains on the completion only)
``messages``   ``messages`` = [user, assistant] (TRL, LLaMA-Factory ``openai`` style, axolotl           ``.jsonl``
               ``chat_template``)
``sharegpt``   ``conversations`` = [{from: human, value}, {from: gpt, value}] (LLaMA-Factory, axolotl)  ``.jsonl``
``parquet``    flat string columns ``prompt``, ``completion``, ``question`` (+ the path columns)       ``.parquet``
=============  ====================================================================================  ==========

The folder gets one file per split, ``README.md`` (a dataset card whose ``configs`` metadata lets
``datasets.load_dataset(folder)`` and the Hub find the splits) and ``cotdistill_export.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.utils.io import atomic_write_json, atomic_write_text, stable_hash

FORMATS = ("trl", "messages", "sharegpt", "parquet")
MARKER = "cotdistill_export.json"


def _user_turn(row: dict, instruction: str) -> str:
    from cotdistill.data.prompts import eval_user_prompt
    from cotdistill.data.types import Example

    ex = Example(id=str(row.get("question_id", "")), benchmark=str(row.get("source") or ""), question=row["question"],
                 answer=str(row["gold"]), kind=row.get("kind") or "number",
                 choices=tuple(row["choices"]) if row.get("choices") else None)
    return eval_user_prompt(ex, instruction)


def export_rows(rows: list[dict], fmt: str, *, instruction: str, answer_suffix: str) -> list[dict[str, Any]]:
    """One record per path of ``rows`` (path-dataset rows) in format ``fmt`` (module docstring)."""
    out = []
    for row in rows:
        user = _user_turn(row, instruction)
        for p in row["paths"]:
            role = p.get("role")  # absent in datasets curated before path roles existed
            if role == "rejected":
                continue
            answer = p["text"].rstrip() + "\n" + answer_suffix.format(a=row["gold"])
            meta = {"question_id": row["question_id"], "gold": str(row["gold"]), "teacher": p.get("teacher"),
                    "perspective": p.get("perspective"), "role": role, "label": p.get("label"),
                    "record_key": p.get("record_key")}
            if fmt == "trl":
                rec = {"prompt": [{"role": "user", "content": user}],
                       "completion": [{"role": "assistant", "content": answer}]}
            elif fmt == "messages":
                rec = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}
            elif fmt == "sharegpt":
                rec = {"conversations": [{"from": "human", "value": user}, {"from": "gpt", "value": answer}]}
            elif fmt == "parquet":
                rec = {"prompt": user, "completion": answer, "question": row["question"]}
            else:
                raise CotdistillError(f"--format: {fmt!r}: expected one of {', '.join(FORMATS)}")
            out.append(rec | meta)
    return out


def _size_category(n: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < bound:
            return name
    return "n>1M"


def dataset_card(fmt: str, files: dict[str, str], counts: dict[str, int], *, card: dict, card_md: str,
                 instruction: str, answer_suffix: str) -> str:
    """README.md of an export: Hub metadata (``configs`` pointing at the split files, task, tags, size) + prose."""
    import yaml

    name = (card.get("provenance") or {}).get("run_name") or "cotdistill"
    meta = {
        "pretty_name": f"{name}: chain-of-thought paths",
        "task_categories": ["text-generation"],
        "tags": ["cotdistill", "chain-of-thought", "distillation", "synthetic", "reasoning"],
        "size_categories": [_size_category(sum(counts.values()))],
        "configs": [{"config_name": "default", "data_files": [{"split": s, "path": f} for s, f in files.items()]}],
    }
    columns = {"trl": "`prompt` (list with the user message), `completion` (list with the assistant message)",
               "messages": "`messages` (user message, assistant message)",
               "sharegpt": "`conversations` (`from: human` / `from: gpt`, text in `value`)",
               "parquet": "`prompt`, `completion` (strings), `question`"}[fmt]
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
        f"# {meta['pretty_name']}", "",
        "Teacher rationales curated by [cotdistill](https://pypi.org/project/cotdistill/): one row per reasoning path, "
        "each ending with the shared answer line, so every path of a question ends in the same answer tokens.", "",
        "## Format", "",
        f"`{fmt}`; splits: " + ", ".join(f"{s} ({counts[s]} paths)" for s in files) + ".", "",
        f"Columns: {columns}; and per path `question_id`, `gold`, `teacher`, `perspective`, `role` (standard, "
        "perspective:ID, teacher:NAME), `label` (the label weighting methods use), `record_key` (the rationale "
        "store record).", "",
        f"- user turn: the question (and lettered options), then the instruction `{instruction}`" if instruction
        else "- user turn: the question (and lettered options), no instruction",
        f"- assistant turn: the rationale, a newline, then `{answer_suffix}` with the gold answer", "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("PATH_OR_HUB_ID")  # splits: ' + ", ".join(files),
        "```",
        "",
    ]
    if fmt in ("trl", "messages"):
        lines += ["Train with TRL:", "", "```python", "from trl import SFTConfig, SFTTrainer", "",
                  'trainer = SFTTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", train_dataset=ds["train"],',
                  '                     args=SFTConfig(output_dir="out"))', "trainer.train()", "```", ""]
    lines += ["## Curation", "", card_md.split("\n", 1)[1].strip() if card_md else "(no data card)", ""]
    return "\n".join(lines)


def _run_settings(run_or_dataset: Path) -> tuple[Path, dict]:
    """(dataset folder, the run's ``data`` config section or {}) for a run folder or a dataset folder."""
    import yaml

    if (run_or_dataset / "dataset_dict.json").is_file():
        dataset_dir, run_dir = run_or_dataset, run_or_dataset.parent
    else:
        dataset_dir, run_dir = run_or_dataset / "dataset", run_or_dataset
    data: dict = {}
    cfg = run_dir / "config.yaml"
    if cfg.is_file():
        try:
            data = (yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("data") or {}
        except (yaml.YAMLError, AttributeError) as e:
            raise CotdistillError(f"{cfg}: not a readable run config ({e})") from None
    return dataset_dir, data


def export_dataset(run_or_dataset: str | os.PathLike, fmt: str, out_dir: str | os.PathLike | None = None, *,
                   instruction: str | None = None, answer_suffix: str | None = None) -> Path:
    """Export the curated path dataset of a run folder (or a dataset folder) as ``fmt``; return the folder.

    The instruction and answer suffix default to the run's ``config.yaml`` (``data.student_instruction``,
    ``data.answer_suffix``), else cotdistill's defaults. ``out_dir`` defaults to ``RUN_DIR/export/FMT``. An existing
    export of the same data and settings is returned as is; anything else already there is never overwritten.
    """
    from cotdistill.config import DataConfig
    from cotdistill.curate.pipeline import CARD_MD, load_data_card, load_path_dataset

    if fmt not in FORMATS:
        raise CotdistillError(f"--format: {fmt!r}: expected one of {', '.join(FORMATS)}")
    src = Path(run_or_dataset)
    dataset_dir, data = _run_settings(src)
    dd = load_path_dataset(dataset_dir)
    card = load_data_card(dataset_dir)
    defaults = DataConfig.model_fields
    instruction = instruction if instruction is not None else data.get(
        "student_instruction", defaults["student_instruction"].default)
    answer_suffix = answer_suffix or data.get("answer_suffix") or defaults["answer_suffix"].default
    out = Path(out_dir) if out_dir is not None else (dataset_dir.parent / "export" / fmt)
    fingerprint = stable_hash({"dataset": card.get("fingerprint"), "format": fmt, "instruction": instruction,
                               "answer_suffix": answer_suffix, "version": 1}, length=24)
    if out.exists() and (out.is_file() or any(out.iterdir())):
        try:
            same = json.loads((out / MARKER).read_text(encoding="utf-8")).get("fingerprint") == fingerprint
        except (OSError, ValueError):
            same = False
        if same:
            return out
        raise CotdistillError(f"{out}: already holds other files or another export; choose another --out or remove it")
    ext = "parquet" if fmt == "parquet" else "jsonl"
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files, counts = {}, {}
        for split in dd:
            recs = export_rows(list(dd[split]), fmt, instruction=instruction, answer_suffix=answer_suffix)
            files[split], counts[split] = f"{split}.{ext}", len(recs)
            if fmt == "parquet":
                from datasets import Dataset

                Dataset.from_list(recs).to_parquet(str(tmp / files[split]))
            else:
                atomic_write_text(tmp / files[split],
                                  "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
        card_md = (dataset_dir / CARD_MD).read_text(encoding="utf-8") if (dataset_dir / CARD_MD).is_file() else ""
        atomic_write_text(tmp / "README.md", dataset_card(fmt, files, counts, card=card, card_md=card_md,
                                                          instruction=instruction, answer_suffix=answer_suffix))
        atomic_write_json(tmp / MARKER, {"fingerprint": fingerprint, "format": fmt, "dataset_dir": str(dataset_dir),
                                         "dataset_fingerprint": card.get("fingerprint"), "paths": counts,
                                         "instruction": instruction, "answer_suffix": answer_suffix})
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
