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
    assert snapshot(t) == before, "a file was created, changed or touched"


def test_table_is_big_enough():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
    assert 2 <= sum(c.subprocess for c in CASES) <= 3
