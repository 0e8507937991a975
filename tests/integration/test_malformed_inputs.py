"""A table of malformed inputs fed to the real CLI (issue #9): configs, datasets, rationale files, rationale
stores, adapters/models, and output folders that already hold a finished result.

Every row asserts: a non-zero exit (2: a user error), ONE line of error output (no traceback) naming the
offending file and, where there is one, the field, and that no file under the test's folder was created,
changed or touched (path -> (sha256, mtime) before and after). Most rows run in-process with typer's
CliRunner; the rows marked ``subprocess`` run ``.venv/bin/cotdistill`` to prove the real exit code and stderr.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cotdistill.cli import app
from cotdistill.errors import CotdistillError

# --------------------------------------------------------------------------- fixtures: models and adapters


@pytest.fixture(scope="module")
def models(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """The tiny model, a LoRA adapter for it, and a LoRA adapter for a tiny model of another hidden size."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from cotdistill.utils.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("adapters")
    lora = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(**lora)).save_pretrained(
        root / "good")
    other = build_tiny_model(root / "other_base", hidden_size=32)
    get_peft_model(AutoModelForCausalLM.from_pretrained(other), LoraConfig(**lora)).save_pretrained(
        root / "mismatch")
    # the adapter claims the test's tiny model as its base, as a user's mix-up would
    for name in ("good", "mismatch"):
        cfg = json.loads((root / name / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = str(tiny_model_dir)
        (root / name / "adapter_config.json").write_text(json.dumps(cfg))
    return {"model": Path(tiny_model_dir), "good": root / "good", "mismatch": root / "mismatch"}


def _copy(name: str) -> Callable[[Path, dict], None]:
    def build(dst: Path, ctx: dict) -> None:
        shutil.copytree(ctx[name], dst)

    return build


def _corrupt_adapter(dst: Path, ctx: dict) -> None:
    shutil.copytree(ctx["good"], dst)
    blob = (dst / "adapter_model.safetensors").read_bytes()
    (dst / "adapter_model.safetensors").write_bytes(blob[:40] + b"\x00garbage" * 16)


# --------------------------------------------------------------------------- file contents

GOOD_Q = '{"id": "a", "question": "Tom has 2 apples and buys 3. How many?", "answer": "5"}\n' \
         '{"id": "b", "question": "Ann has 4 pens and loses 1. How many?", "answer": "3"}\n'


def _rec(i: int, persp: str, **over: Any) -> dict:
    rec = {"key": f"k{i}-{persp}", "question_id": f"q{i}", "question": f"Sam has {i} cats and gets 2 more. "
           "How many cats?", "gold": str(i + 2), "kind": "number", "source": "jsonl:x", "teacher": "t",
           "teacher_model": "t", "backend": "openai", "perspective": persp, "sample_idx": 0,
           "raw_response": f"{i} + 2 = {i + 2}.\nThe answer is: {i + 2}", "status": "ok", "error": None}
    rec.update(over)
    return {k: v for k, v in rec.items() if v is not ...}


def _jsonl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD_STORE = _jsonl(*(_rec(i, p) for i in (1, 2) for p in ("intuitive", "planning")))
CURATE_CFG = "curate:\n  eval_guard: [svamp]\neval:\n  benchmarks: [svamp]\n"
# a finished curated dataset made by someone else: its fingerprint differs from what curate would make
OTHER_DATASET = {"ds/dataset_dict.json": '{"splits": ["train"]}', "ds/data_card.json": '{"fingerprint": "other"}',
                 "ds/train/state.json": "{}"}
# a finished evaluation of another model in the output folder
OTHER_EVAL = {
    "ev/jsonl-q.provenance.json": json.dumps({"model_sha": "0123456789abcdef", "backend": "hf", "seed": 0,
                                              "gen_key": "x", "benchmark": "jsonl:q.jsonl"}),
    "ev/jsonl-q.jsonl": _jsonl({"id": "a", "output": "The answer is: 5", "correct": True, "gen_key": "x"}),
    "ev/summary.json": json.dumps({"model": "other", "benchmarks": {}}),
}


def _strategyqa_question() -> str:
    from cotdistill.data.registry import load_benchmark

    return load_benchmark("strategyqa", limit=1)[0].question


def _mentor_rows_missing_chain(dst: Path, ctx: dict) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps([{"input": _strategyqa_question(), "answer": "yes", "initial_correct": True}]))


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    """One malformed input: files to create (relative path -> text | bytes | builder), CLI args, and the
    substrings the one-line error must contain (``{t}`` = the test folder, ``{model}`` = the tiny model)."""

    id: str
    files: dict[str, Any]
    args: list[str]
    expect: tuple[str, ...]
    subprocess: bool = False
    absent: tuple[str, ...] = ()  # substrings that must NOT be in the error output (secrets)


def V(id, files, expect, **kw):  # noqa: N802 - table shorthand: `cotdistill validate {t}/c.yaml`
    return Case(id, files, ["validate", "{t}/c.yaml"], expect, **kw)


def EVAL(id, files, expect, bench="jsonl:{t}/q.jsonl", extra=(), **kw):  # noqa: N802
    return Case(id, files, ["eval", "--model", "{model}", "--benchmarks", bench, "--output", "{t}/ev",
                            "--max-new-tokens", "2", "--limit", "2", *extra], expect, **kw)


def CURATE(id, files, expect, out="{t}/ds", **kw):  # noqa: N802
    return Case(id, {"c.yaml": CURATE_CFG, **files},
                ["curate", "{t}/c.yaml", "--store", "{t}/st", "--out", out], expect, **kw)


def IMPORT(id, fmt, files, expect, store="{t}/st", **kw):  # noqa: N802
    return Case(id, files, ["import", fmt, "{t}/src", "--store", store], expect, **kw)


# --------------------------------------------------------------------------- issue 17: builders and cases


def _path_dataset(dst: Path, long_questions: int = 0, short_questions: int = 1) -> None:
    """A curated path dataset (HF DatasetDict) with some questions far longer than a small max_seq_len."""
    from datasets import Dataset, DatasetDict

    rows = []
    for i in range(long_questions + short_questions):
        q = f"Jack had {i + 5} apples and ate 2. How many are left?"
        if i < long_questions:
            q = "Read this carefully. " * 60 + q
        rows.append({"question_id": f"q{i}", "question": q, "gold": str(i + 3), "kind": "number", "source": "x",
                     "difficulty": None,
                     "paths": [{"teacher": "t", "perspective": "p", "label": "p", "record_key": f"k{i}",
                                "text": f"{i + 5} - 2 = {i + 3}."}]})
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(dst))


def _dataset_outside(long_questions: int, short_questions: int):
    # HF datasets writes cache files next to a dataset it maps, so it lives beside the watched folder
    def build(dst: Path, ctx: dict) -> None:
        _path_dataset(ctx["t"].parent / "ds", long_questions, short_questions)
        dst.write_text("std_cot: {paths: all}\ntrain:\n  model: {model}\n  max_seq_len: 128\n"
                       "  gradient_checkpointing: false\n  report_to: []\n".replace("{model}", str(ctx["model"])))

    return build


def _evaluated(bench_rel: str, then: Callable[[Path], None] | None = None):
    """An eval output folder ``ev`` made by a real evaluation of ``bench_rel`` (GOOD_Q), then ``then(t)``."""
    def build(dst: Path, ctx: dict) -> None:
        from cotdistill.evaluate import run_eval

        bench = ctx["t"] / bench_rel
        bench.parent.mkdir(parents=True, exist_ok=True)
        bench.write_text(GOOD_Q)
        run_eval(str(ctx["model"]), [f"jsonl:{bench}"], dst, limit=2, max_new_tokens=2, progress=False)
        if then is not None:
            then(ctx["t"])

    return build


def _write(rel: str, text: str) -> Callable[[Path], None]:
    return lambda t: (t / rel).write_text(text)


def _symlink_loop(dst: Path, ctx: dict) -> None:
    (ctx["t"] / "loop2").symlink_to(ctx["t"] / "loop1")
    dst.symlink_to(ctx["t"] / "loop2")


def _model_only_config(dst: Path, ctx: dict) -> None:
    dst.mkdir()
    shutil.copy(ctx["model"] / "config.json", dst / "config.json")


def _model_truncated(dst: Path, ctx: dict) -> None:
    shutil.copytree(ctx["model"], dst)
    blob = (dst / "model.safetensors").read_bytes()
    (dst / "model.safetensors").write_bytes(blob[: len(blob) // 2])


def _model_bad_train_record(dst: Path, ctx: dict) -> None:
    shutil.copytree(ctx["model"], dst)
    (dst / "cotdistill_train.json").write_text("[1, 2]")


def _alias_bomb() -> str:
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text + "train:\n  lr: *i\n"


# a whole run: a store to import, a jsonl eval set, the tiny student; passes validate (preflight included)
RUN_CFG = ("run:\n  name: {name}\n  output_dir: {t}\ndata:\n  imports:\n    - format: store\n      path: {t}/src\n"
           "curate:\n  eval_guard: []\ntrain:\n  model: {model}\neval:\n  benchmarks: ['jsonl:{t}/q.jsonl']\n"
           "analysis:\n  enabled: false\n")
RUN_FILES = {"src/records.jsonl": GOOD_STORE, "q.jsonl": GOOD_Q}


def RUN(id, files, expect, name="proj", **kw):  # noqa: N802 - `cotdistill run {t}/c.yaml` on RUN_CFG
    return Case(id, {"c.yaml": RUN_CFG.replace("{name}", name), **RUN_FILES, **files}, ["run", "{t}/c.yaml"],
                expect, **kw)


def EV(id, row, expect, **kw):  # noqa: N802 - one benchmark row
    return EVAL(id, {"q.jsonl": row + "\n"}, expect, **kw)


KEY = "sk-live-0123456789abcdefXYZ"  # a key pasted where an env-var name belongs
TEACHER = "teachers:\n  - name: t\n    model: m\n    base_url: http://127.0.0.1:9/v1\n    api_key_env: {k}\n"
MODEL_CFG = "train:\n  model: {model}\n"

ISSUE17_CASES = [
    # ---- 1. training that would produce garbage (refused before anything is written)
    Case("train-max-seq-len-cuts-every-answer", {"c.yaml": _dataset_outside(1, 0)},
         ["train", "{t}/c.yaml", "--dataset", "{t}/../ds", "--run-dir", "{t}/run"],
         ("{t}/../ds", "train.max_seq_len", "1 of 1 paths lose their answer")),
    Case("train-max-seq-len-cuts-most-answers", {"c.yaml": _dataset_outside(2, 1)},
         ["train", "{t}/c.yaml", "--dataset", "{t}/../ds", "--run-dir", "{t}/run"],
         ("train.max_seq_len", "2 of 3 paths")),
    # ---- 2. validate rejects what a stage would reject
    V("v-nonfinite-lr", {"c.yaml": "train:\n  lr: .inf\n"}, ("{t}/c.yaml", "train.lr", "not a finite number")),
    V("v-nonfinite-method-override", {"c.yaml": "mind:\n  train:\n    lr: .nan\n"}, ("mind.train.lr", "finite")),
    V("v-nonfinite-overflow", {"c.yaml": "eval:\n  math_verify_timeout_s: 1.0e+999\n"},
      ("eval.math_verify_timeout_s", "finite")),
    V("v-nonfinite-import-option",
      {"c.yaml": "data:\n  imports:\n    - format: eit\n      options: {levels: [.inf]}\n"},
      ("data.imports[0].options.levels[0]", "finite")),
    V("v-empty-eval-benchmarks", {"c.yaml": "eval:\n  benchmarks: []\n"}, ("eval.benchmarks", "empty")),
    V("v-empty-compare-seeds", {"c.yaml": "compare:\n  seeds: []\n"}, ("compare.seeds", "empty")),
    V("v-jsonl-benchmark-missing", {"c.yaml": "eval:\n  benchmarks: ['jsonl:{t}/nope.jsonl']\n"},
      ("{t}/c.yaml", "eval.benchmarks[0]", "{t}/nope.jsonl", "not found")),
    V("v-jsonl-benchmark-bad-row", {"c.yaml": "eval:\n  benchmarks: ['jsonl:{t}/q.jsonl']\n",
                                    "q.jsonl": '{"question": "q", "answer": NaN}\n'},
      ("eval.benchmarks[0]", "{t}/q.jsonl:1", "answer")),
    V("v-import-option-typo", {"c.yaml": "data:\n  imports:\n    - format: eit\n      options: {levle: 1}\n"},
      ("data.imports[0].options", "levle", "levels")),
    V("v-compare-duplicate-method", {"c.yaml": "compare:\n  methods: [mind, std_cot, mind]\n"},
      ("compare.methods", "mind", "more than once")),
    V("v-compare-duplicate-seed", {"c.yaml": "compare:\n  seeds: [0, 1, 0]\n"}, ("compare.seeds", "more than once")),
    V("v-lora-targets-match-nothing", {"c.yaml": MODEL_CFG + "  lora:\n    target_modules: [c_attn]\n"},
      ("train.lora.target_modules", "c_attn", "q_proj")),
    V("v-lora-one-target-matches-nothing", {"c.yaml": MODEL_CFG + "  lora:\n    target_modules: [q_proj, qkv]\n"},
      ("train.lora.target_modules", "qkv")),
    V("v-size-cannot-fit", {"c.yaml": MODEL_CFG + "  questions_per_step: 100000000\n  max_seq_len: 2048\n"},
      ("{t}/c.yaml", "train", "needs at least", "questions_per_step")),
    V("v-max-seq-len-over-context", {"c.yaml": MODEL_CFG + "  max_seq_len: 100000\n"},
      ("train.max_seq_len", "context")),
    V("v-eval-batch-cannot-fit", {"c.yaml": MODEL_CFG + "eval:\n  batch_size: 1000000000000\n"},
      ("eval.batch_size",)),
    Case("v-run-dry-run-checks-model", {"c.yaml": MODEL_CFG + "  lora:\n    target_modules: [c_attn]\n"},
         ["run", "{t}/c.yaml", "--dry-run"], ("train.lora.target_modules",)),
    # ---- 3. result identity (the folder `ev` holds a real evaluation of GOOD_Q)
    EVAL("id-benchmark-edited", {"ev": _evaluated("q.jsonl", _write("q.jsonl", GOOD_Q.replace("Tom", "Tim")))},
         ("{t}/ev/jsonl-q.jsonl", "id a", "prompt", "differs")),
    EVAL("id-same-name-other-folder",
         {"ev": _evaluated("a/q.jsonl", _write("q.jsonl", GOOD_Q.replace("apples", "pears")))},
         ("{t}/ev/jsonl-q.jsonl", "differs")),
    EVAL("id-gold-changed", {"ev": _evaluated("q.jsonl", _write("q.jsonl", GOOD_Q.replace('"5"', '"6"')))},
         ("{t}/ev/jsonl-q.jsonl", "id a", "gold")),
    EVAL("id-two-files-one-name-one-call", {"a/q.jsonl": GOOD_Q, "b/q.jsonl": GOOD_Q},
         ("jsonl:{t}/a/q.jsonl", "jsonl:{t}/b/q.jsonl", "share the result file"),
         bench="jsonl:{t}/a/q.jsonl,jsonl:{t}/b/q.jsonl"),
    # ---- 4. the run folder is cotdistill's, or nothing is written
    RUN("run-name-empty-over-user-config", {"config.yaml": "mine: 1\n"}, ("{t}/c.yaml", "run.name", "plain folder"),
        name="''"),
    V("run-name-dotdot", {"c.yaml": "run:\n  name: ..\n"}, ("run.name",)),
    V("run-name-is-absolute", {"c.yaml": "run:\n  name: /etc\n"}, ("run.name", "/etc")),
    V("run-name-climbs-out", {"c.yaml": "run:\n  name: a/../../b\n"}, ("run.name", "a/../../b")),
    EVAL("eval-over-a-user-summary", {"q.jsonl": GOOD_Q, "ev/summary.json": '{"my": "numbers"}'},
         ("{t}/ev", "summary.json", "not cotdistill's")),
    RUN("run-into-user-folder", {"proj/notes.txt": "mine"}, ("{t}/proj", "not a cotdistill run folder")),
    Case("synthesize-into-user-folder",
         {"c.yaml": "data:\n  imports:\n    - format: store\n      path: {t}/src\n", "src/records.jsonl": GOOD_STORE,
          "proj/notes.txt": "mine"},
         ["synthesize", "{t}/c.yaml", "--run-dir", "{t}/proj"], ("{t}/proj", "not a cotdistill run folder")),
    # ---- 5. secrets: a key pasted where an env-var name belongs is never echoed
    V("secret-key-as-api-key-env", {"c.yaml": TEACHER.replace("{k}", KEY)}, ("teachers[0].api_key_env", "not shown"),
      absent=(KEY, KEY[:12])),
    EVAL("secret-key-as-eval-api-key-env", {"q.jsonl": GOOD_Q}, ("api_key_env", "not shown"), absent=(KEY,),
         extra=["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1", "--api-key-env", KEY]),
    V("secret-url-credentials-in-an-error", {"c.yaml": "eval:\n  benchmarks: ['http://user:hunter2pw@host/x']\n"},
      ("eval.benchmarks[0]", "http://***@host/x"), absent=("hunter2pw",)),
    V("secret-url-query-key-in-an-error", {"c.yaml": "eval:\n  benchmarks: ['http://host/x?api_key=hunter2pw']\n"},
      ("eval.benchmarks[0]", "api_key=***"), absent=("hunter2pw",)),
    # ---- 6. bombs and sizes
    V("bomb-yaml-alias", {"c.yaml": _alias_bomb()}, ("{t}/c.yaml", "alias bomb")),
    V("bomb-yaml-recursive-alias", {"c.yaml": "a: &a [*a]\n"}, ("{t}/c.yaml", "alias")),
    V("bomb-yaml-deep-nesting", {"c.yaml": "a: " + "[" * 5000 + "]" * 5000 + "\n"},
      ("{t}/c.yaml", "nested too deeply")),
    EVAL("bomb-jsonl-huge-line", {"q.jsonl": '{"question": "' + "x" * (2 << 20) + '", "answer": "1"}\n'},
         ("{t}/q.jsonl:1", "longer than")),
    EVAL("bomb-jsonl-huge-line-after-good-ones", {"q.jsonl": GOOD_Q + '{"question": "' + "y" * (2 << 20) + '"}\n'},
         ("{t}/q.jsonl:3", "longer than")),
    # ---- 7. gold answers that are not answers (file, line and field named)
    EV("gold-nan", '{"question": "q", "answer": NaN}', ("{t}/q.jsonl:1", "answer", "NaN")),
    EV("gold-infinity", '{"question": "q", "answer": Infinity}', ("{t}/q.jsonl:1", "answer", "Infinity")),
    EV("gold-1e400", '{"question": "q", "answer": 1e400}', ("{t}/q.jsonl:1", "answer", "finite")),
    EV("gold-list", '{"question": "q", "answer": [1, 2]}', ("{t}/q.jsonl:1", "answer", "list")),
    EV("gold-object", '{"question": "q", "answer": {"v": 1}}', ("{t}/q.jsonl:1", "answer", "object")),
    EV("question-list", '{"question": ["two", "parts"], "answer": "1"}', ("{t}/q.jsonl:1", "question", "list")),
    EV("choices-hold-objects", '{"question": "q", "answer": "A", "choices": [{"t": "x"}, "y"]}',
       ("{t}/q.jsonl:1", "choices[0]", "object")),
    EV("id-not-scalar", '{"id": 1.5, "question": "q", "answer": "1"}', ("{t}/q.jsonl:1", "id")),
    EV("kind-not-text", '{"question": "q", "answer": "1", "kind": 3}', ("{t}/q.jsonl:1", "kind")),
    # ---- 8. one line instead of a traceback
    Case("os-output-is-a-file", {"q.jsonl": GOOD_Q, "afile": "mine"},
         ["eval", "--model", "{model}", "--benchmarks", "jsonl:{t}/q.jsonl", "--output", "{t}/afile"],
         ("{t}/afile", "file")),
    Case("os-output-under-a-file", {"q.jsonl": GOOD_Q, "afile": "mine"},
         ["eval", "--model", "{model}", "--benchmarks", "jsonl:{t}/q.jsonl", "--output", "{t}/afile/sub"],
         ("{t}/afile/sub", "is a file")),
    Case("os-output-symlink-loop", {"q.jsonl": GOOD_Q, "loop1": _symlink_loop},
         ["eval", "--model", "{model}", "--benchmarks", "jsonl:{t}/q.jsonl", "--output", "{t}/loop1/x"],
         ("{t}/loop1/x", "symbolic links")),
    Case("model-folder-only-config", {"q.jsonl": GOOD_Q, "m": _model_only_config},
         ["eval", "--model", "{t}/m", "--benchmarks", "jsonl:{t}/q.jsonl", "--output", "{t}/ev"],
         ("{t}/m", "no weights")),
    Case("model-truncated-safetensors", {"q.jsonl": GOOD_Q, "m": _model_truncated},
         ["eval", "--model", "{t}/m", "--benchmarks", "jsonl:{t}/q.jsonl", "--output", "{t}/ev"],
         ("{t}/m", "cannot load")),
    Case("model-train-record-not-object", {"q.jsonl": GOOD_Q, "m": _model_bad_train_record},
         ["eval", "--model", "{t}/m", "--benchmarks", "jsonl:{t}/q.jsonl", "--output", "{t}/ev"],
         ("{t}/m/cotdistill_train.json", "provenance")),
    RUN("state-stages-json-a-list", {"r/.cotdistill": "{}", "r/stages.json": "[]"}, ("{t}/r/stages.json", "corrupt"),
        name="r"),
    RUN("state-stages-json-entry-not-object", {"r/.cotdistill": "{}", "r/stages.json": '{"curate": 3}'},
        ("{t}/r/stages.json", "corrupt"), name="r"),
    EVAL("state-provenance-not-object", {"q.jsonl": GOOD_Q, "ev/jsonl-q.provenance.json": "[1, 2]"},
         ("{t}/ev/jsonl-q.provenance.json", "provenance")),
    EVAL("state-result-line-not-object", {"q.jsonl": GOOD_Q, "ev/jsonl-q.jsonl": "[1, 2]\n"},
         ("{t}/ev/jsonl-q.jsonl:1", "not a JSON object")),
    EVAL("state-result-line-wrong-shape", {"q.jsonl": GOOD_Q, "ev/jsonl-q.jsonl": '{"foo": 1}\n'},
         ("{t}/ev/jsonl-q.jsonl:1", "not a result line")),
    CURATE("state-store-line-not-object", {"st/records.jsonl": _jsonl(_rec(1, "a")) + "[1, 2]\n"},
           ("{t}/st/records.jsonl:2", "not a JSON object")),
    CURATE("state-store-key-not-text", {"st/records.jsonl": _jsonl(_rec(1, "a", key=["k"]))},
           ("{t}/st/records.jsonl", "key")),
]


CASES = [
    # ---- configs
    V("cfg-yaml-syntax", {"c.yaml": "train:\n  lr: [1, 2\n  epochs: 3\n"}, ("{t}/c.yaml", "invalid YAML")),
    V("cfg-empty-file", {"c.yaml": ""}, ("{t}/c.yaml", "empty")),
    V("cfg-top-level-list", {"c.yaml": "- train\n- eval\n"}, ("{t}/c.yaml", "top level must be a mapping")),
    V("cfg-unknown-key", {"c.yaml": "train:\n  lrr: 0.1\n"}, ("{t}/c.yaml", "train.lrr", "unknown key")),
    V("cfg-wrong-type", {"c.yaml": "train:\n  epochs: many\n"}, ("{t}/c.yaml", "train.epochs")),
    V("cfg-lr-not-positive", {"c.yaml": "train:\n  lr: 0\n"}, ("{t}/c.yaml", "train.lr", "greater than 0")),
    V("cfg-unknown-method", {"c.yaml": "method: magic\n"}, ("{t}/c.yaml", "method")),
    V("cfg-unknown-benchmark", {"c.yaml": "eval:\n  benchmarks: [gsm8k, gsm9k]\n"},
      ("{t}/c.yaml", "eval.benchmarks", "gsm9k")),
    V("cfg-missing-file", {}, ("{t}/c.yaml", "not found")),
    V("cfg-not-utf8", {"c.yaml": b"run:\n  name: caf\xe9\n"}, ("{t}/c.yaml", "UTF-8"), subprocess=True),
    V("cfg-duplicate-key", {"c.yaml": "train:\n  lr: 0.1\n  lr: 0.2\n"}, ("{t}/c.yaml", "lr", "duplicate key")),
    V("cfg-curate-contradiction",
      {"c.yaml": "curate:\n  max_paths_per_question: 1\n  filter:\n    min_correct_paths: 2\n"},
      ("{t}/c.yaml", "curate", "max_paths_per_question", "min_correct_paths")),
    Case("cfg-run-mcc-kd-import-missing-path",
         {"c.yaml": "run:\n  name: r\n  output_dir: {t}/runs\ndata:\n  imports:\n"
                    "    - format: mcc-kd\n      path: {t}/no_such_folder\n"},
         ["synthesize", "{t}/c.yaml"], ("{t}/no_such_folder", "data.imports[0].path", "not found")),
    Case("cfg-run-invalid", {"c.yaml": "train:\n  lr: -1\n"}, ["run", "{t}/c.yaml", "--dry-run"],
         ("{t}/c.yaml", "train.lr")),
    # ---- datasets
    EVAL("ds-empty-jsonl", {"q.jsonl": ""}, ("{t}/q.jsonl", "no questions")),
    EVAL("ds-line-not-json", {"q.jsonl": GOOD_Q + "{oops\n"}, ("{t}/q.jsonl:3", "invalid JSON")),
    EVAL("ds-not-utf8", {"q.jsonl": b'{"question": "caf\xe9?", "answer": "1"}\n'}, ("{t}/q.jsonl", "UTF-8")),
    EVAL("ds-missing-question", {"q.jsonl": '{"id": "a", "answer": "1"}\n'}, ("{t}/q.jsonl:1", "question: missing")),
    EVAL("ds-missing-gold", {"q.jsonl": '{"id": "a", "question": "2+2?"}\n'}, ("{t}/q.jsonl:1", "answer: missing")),
    EVAL("ds-directory", {"q.jsonl/x.txt": "x"}, ("{t}/q.jsonl", "directory")),
    EVAL("ds-torn-last-line", {"q.jsonl": GOOD_Q + '{"id": "c", "question": "1+1?", "ans'},
         ("{t}/q.jsonl:3", "invalid JSON")),
    EVAL("ds-unknown-benchmark", {}, ("gsm9k", "unknown"), bench="gsm9k"),
    IMPORT("ds-import-empty-file", "mcc-kd", {"src/data/SVAMP/train.json": ""},
           ("{t}/src/data/SVAMP/train.json", "empty")),
    # ---- rationale files (each importer)
    IMPORT("rat-wrong-format", "mcc_kd", {"src/x.json": "[]"}, ("format", "mcc_kd", "mcc-kd")),
    IMPORT("rat-mcc-kd-other-format", "mcc-kd",
           {"src/data/SVAMP/train.json": json.dumps([{"input": "Q?", "chain": "so 3", "answer": "3"}])},
           ("{t}/src/data/SVAMP/train.json", "row 0", "instruction")),
    IMPORT("rat-mcc-kd-truncated-json", "mcc-kd",
           {"src/data/SVAMP/train.json": '[\n  {"instruction": "Q?",\n   "output": ["a", "b'},
           ("{t}/src/data/SVAMP/train.json", "neither JSON nor JSON Lines")),
    IMPORT("rat-mentor-kd-missing-chain", "mentor-kd",
           {"src/data/main/strategy_qa_3_train.json": _mentor_rows_missing_chain},
           ("{t}/src/data/main/strategy_qa_3_train.json", "row 0", "chain")),
    IMPORT("rat-eit-missing-instruction", "eit",
           {"src/data/SVAMP_ChatGPT_level1_ranked.json": json.dumps([{"output": "2 + 3 = 5"}])},
           ("{t}/src/data/SVAMP_ChatGPT_level1_ranked.json", "row 0", "instruction")),
    IMPORT("rat-sbs-missing-label", "sbs",
           {"src/datasets/svamp/svamp_train.json": json.dumps([{"input": "Q?"}]),
            "src/datasets/svamp/llm/train_CoT_0.json": json.dumps(["The answer is 3."])},
           ("{t}/src/datasets/svamp/svamp_train.json", "row 0", "label"), ),
    IMPORT("rat-sbs-rows-not-objects", "sbs",
           {"src/datasets/svamp/svamp_train.json": json.dumps(["Q?"]),
            "src/datasets/svamp/llm/train_CoT_0.json": json.dumps(["The answer is 3."])},
           ("{t}/src/datasets/svamp/svamp_train.json", "row 0", "not a JSON object")),
    IMPORT("rat-store-without-records", "store", {"src/notes.txt": "x"}, ("{t}/src", "records.jsonl")),
    # ---- rationale store
    CURATE("store-garbage-middle", {"st/records.jsonl": _jsonl(_rec(1, "a")) + "garbage}\n" + _jsonl(_rec(2, "a"))},
           ("{t}/st/records.jsonl:2", "not valid JSON"), subprocess=True),
    CURATE("store-record-missing-fields", {"st/records.jsonl": _jsonl(_rec(1, "a"), _rec(2, "a", gold=...))},
           ("{t}/st/records.jsonl", "k2-a", "gold")),
    CURATE("store-empty", {"st/records.jsonl": ""}, ("{t}/st/records.jsonl", "no successful records")),
    CURATE("store-missing", {"st/other.txt": "x"}, ("{t}/st", "records.jsonl")),
    # ---- adapters / models
    EVAL("adapter-no-config", {"q.jsonl": GOOD_Q, "ad/adapter_model.safetensors": b"x"},
         ("{t}/ad", "adapter_config.json"), extra=["--adapter", "{t}/ad"]),
    EVAL("adapter-corrupt-weights", {"q.jsonl": GOOD_Q, "ad": _corrupt_adapter}, ("{t}/ad", "adapter"),
         extra=["--adapter", "{t}/ad"], subprocess=True),
    EVAL("adapter-shape-mismatch", {"q.jsonl": GOOD_Q, "ad": _copy("mismatch")}, ("{t}/ad", "adapter", "match"),
         extra=["--adapter", "{t}/ad"]),
    Case("model-missing", {"q.jsonl": GOOD_Q},
         ["eval", "--model", "{t}/no_model", "--benchmarks", "jsonl:{t}/q.jsonl", "--output", "{t}/ev"],
         ("{t}/no_model", "model")),
    Case("model-is-adapter", {"q.jsonl": GOOD_Q, "ad": _copy("good")},
         ["eval", "--model", "{t}/ad", "--benchmarks", "jsonl:{t}/q.jsonl", "--output", "{t}/ev"],
         ("{t}/ad", "adapter")),
    # ---- output protection: a folder holding a finished, different result is never touched
    EVAL("out-eval-other-result", {"q.jsonl": GOOD_Q, **OTHER_EVAL}, ("{t}/ev/jsonl-q.provenance.json", "provenance")),
    CURATE("out-curate-other-dataset", {"st/records.jsonl": GOOD_STORE, **OTHER_DATASET}, ("{t}/ds", "different")),
    IMPORT("out-import-into-dataset-folder", "store", {"src/records.jsonl": GOOD_STORE, **OTHER_DATASET},
           ("{t}/ds", "--store", "not a rationale store"), store="{t}/ds"),
    IMPORT("out-import-into-eval-folder", "store", {"src/records.jsonl": GOOD_STORE, **OTHER_EVAL},
           ("{t}/ev", "--store", "not a rationale store"), store="{t}/ev"),
    *ISSUE17_CASES,
]


# --------------------------------------------------------------------------- machinery


PROGRESS = re.compile(r"\[\d\d:\d\d(<|, )")


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: relative path -> (sha256, mtime_ns)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _fill(s: str, ctx: dict) -> str:
    return s.replace("{t}", str(ctx["t"])).replace("{model}", str(ctx["model"]))


def _create(case: Case, ctx: dict) -> None:
    for rel, content in case.files.items():
        p = ctx["t"] / rel
        if callable(content):
            content(p, ctx)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(_fill(content, ctx))


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}


def _invoke(args: list[str], use_subprocess: bool) -> tuple[int, str]:
    """(exit code, stderr) of the CLI; in-process errors are rendered the way ``cli.main`` renders them."""
    if use_subprocess:
        exe = Path(sys.executable).parent / "cotdistill"
        r = subprocess.run([str(exe), *args], capture_output=True, text=True, env=_env(), timeout=300)
        return r.returncode, r.stderr
    res = CliRunner().invoke(app, args, env=_env())
    exc = res.exception
    if exc is None or isinstance(exc, SystemExit):
        return res.exit_code, res.stderr
    if isinstance(exc, CotdistillError):
        return exc.exit_code, res.stderr + f"error: {exc}\n"
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return 1, res.stderr + tb  # an uncaught exception: the real CLI would print this traceback


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_input(case: Case, tmp_path, models, data_dir, monkeypatch):
    t = tmp_path / "w"
    t.mkdir()
    monkeypatch.chdir(t)  # any stray relative output (runs/...) would land here and be caught
    ctx = {**models, "t": t}
    _create(case, ctx)
    before = snapshot(t)
    code, err = _invoke([_fill(a, ctx) for a in case.args], case.subprocess)
    # a progress bar drawn before the error is not error output (tqdm reads TQDM_DISABLE only at import, so
    # in-process bars still show; the subprocess rows have none)
    lines = [ln for ln in err.splitlines() if ln.strip() and not PROGRESS.search(ln)]
    assert code == 2, f"exit {code}, expected 2 (a user error); stderr:\n{err}"
    assert len(lines) == 1, f"error output is {len(lines)} lines, expected one:\n{err}"
    line = lines[0]
    print(f"[{case.id}] {line}")  # shown with -s: the table of messages
    assert line.startswith("error: ") and "Traceback" not in err
    for want in case.expect:
        assert _fill(want, ctx) in line, f"{_fill(want, ctx)!r} not in the error line: {line}"
    for secret in case.absent:
        assert secret not in err, f"{secret!r} was echoed: {err}"
    assert snapshot(t) == before, "a file was created, changed or touched"


def test_table_is_big_enough():
    assert len(CASES) >= 90 and len({c.id for c in CASES}) == len(CASES)
    assert 2 <= sum(c.subprocess for c in CASES) <= 3
