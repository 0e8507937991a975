"""Zero-shot greedy evaluation (METHODS.md §5.2): generate, score, summarise, resumably.

Files in ``output_dir``:

* ``<bench>.jsonl`` — one line per sample (``id``, ``prompt``, ``output``, ``extracted``, ``gold``,
  ``correct``, ``n_tokens``, ``finish_reason``, ``gen_key``, ``extractor_version``), appended and
  flushed as each batch finishes.
* ``<bench>.provenance.json`` — the generation settings those lines were made with.
* ``<bench>.summary.json`` and ``summary.json`` (every benchmark evaluated into this folder).

Resuming: samples already in the JSONL with the same generation key are not regenerated. A folder
holding results made with different generation settings (model weights, adapter, template,
backend, dtype, batch size, seed, max_new_tokens, instruction) is refused with a one-line error:
results are never mixed or overwritten. The extractor is not part of the key: raw outputs are kept,
and lines scored by an older extractor are re-scored (and the JSONL rewritten atomically).

Identity of the inputs: a kept line must answer the same prompt and gold as the benchmark holds now (an
edited benchmark file, or another ``jsonl:`` file of the same name, is refused in one line); two benchmarks
of one call that would share a result file are refused. One writer per folder: ``.cotdistill.lock``
(:mod:`cotdistill.utils.lock`) makes a second ``eval`` on the same folder fail at once, naming the first's pid.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.evaluate.scoring import accuracy_summary
from cotdistill.utils.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl, stable_hash

# provenance fields that change what is generated (a resumed run must match them all)
_GEN_FIELDS = ("model_sha", "adapter_sha", "chat_template_sha", "backend", "dtype", "batch_size", "seed",
               "max_new_tokens", "instruction_sha", "gpqa_shuffle_seed", "user_prefix")
# fields added later: part of the key only when set, so older result folders keep their keys
_OPTIONAL_GEN_FIELDS = ("gpqa_shuffle_seed", "user_prefix")


def model_tag(model: str, adapter: str | None = None) -> str:
    """A folder-safe short name for a model (+ adapter): ``runs/eval/<tag>``."""

    def clean(s: str) -> str:
        s = str(s).rstrip("/\\")
        p = Path(s)
        name = p.stem if p.suffix == ".gguf" else (p.name if ("/" in s and (p.exists() or s.startswith((".", "/", "~"))))
                                                   else s.replace("/", "--"))
        return "".join(c if c.isalnum() or c in "-_." else "-" for c in name) or "model"

    tag = clean(model)
    return f"{tag}+{clean(adapter)}" if adapter else tag


def bench_file_stem(bench: str) -> str:
    """File-name stem for a benchmark spec (``jsonl:/x/y.jsonl`` -> ``jsonl-y``, ``svamp:train`` -> ``svamp-train``)."""
    if bench.startswith("jsonl:"):
        bench = "jsonl-" + Path(bench[6:]).stem
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in bench)


def _gen_key(prov: dict) -> str:
    return stable_hash({k: prov.get(k) for k in _GEN_FIELDS
                        if not (k in _OPTIONAL_GEN_FIELDS and prov.get(k) is None)})


def _check_provenance(path: Path, prov: dict) -> None:
    """Refuse a folder whose existing results were generated with other settings."""
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise CotdistillError(f"{path}: not valid JSON; move the folder away or choose another --output") from None
    if not isinstance(old, dict):
        raise CotdistillError(f"{path}: not a provenance record (a JSON object); move the folder away or choose "
                              "another --output")
    diff = [k for k in _GEN_FIELDS if old.get(k) != prov.get(k)]
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {prov.get(k)!r}" for k in diff[:4])
        raise CotdistillError(
            f"{path}: provenance: existing results were generated with different settings ({shown}); "
            "choose another --output folder (results are never mixed or overwritten)"
        )


def _drop_torn_tail(jsonl: Path) -> None:
    """A crash mid-append can leave an unterminated last line: cut it so new appends start on a fresh line."""
    if not jsonl.is_file() or jsonl.stat().st_size == 0:
        return
    with open(jsonl, "rb") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        data = jsonl.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    atomic_write_text(jsonl, keep.decode("utf-8"))


def _existing(jsonl: Path, gen_key: str) -> dict[str, dict]:
    _drop_torn_tail(jsonl)
    done: dict[str, dict] = {}
    for i, rec in enumerate(read_jsonl(jsonl), 1):
        if not (isinstance(rec.get("id"), (str, int)) and isinstance(rec.get("correct"), bool)
                and isinstance(rec.get("output"), str)):
            raise CotdistillError(f"{jsonl}:{i}: not a result line (needs id, output, correct); the file is damaged "
                                  "or not cotdistill's: choose another --output folder")
        if rec.get("gen_key") != gen_key:
            raise CotdistillError(
                f"{jsonl}:{i}: gen_key: line was generated with different settings; choose another --output folder"
            )
        done[str(rec["id"])] = rec
    return done


def _rescore(jsonl: Path, done: dict[str, dict], examples: dict, timeout_s: float) -> None:
    """Re-score lines written by another extractor version; rewrite the JSONL atomically if any changed."""
    import json

    from cotdistill.data.answers import EXTRACTOR_VERSION, score

    stale = [r for r in done.values() if r.get("extractor_version") != EXTRACTOR_VERSION and r["id"] in examples]
    if not stale:
        return
    for r in stale:
        r["extracted"], r["correct"] = score(r["output"], examples[r["id"]], timeout_s=timeout_s)
        r["extractor_version"] = EXTRACTOR_VERSION
    atomic_write_text(jsonl, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in done.values()))


def recorded_user_prefix(student: str | os.PathLike) -> str:
    """The user-turn prefix a cotdistill-trained student folder records (``cotdistill_train.json``), else ""."""
    from cotdistill.train.run import PROVENANCE_NAME

    prov = Path(student) / PROVENANCE_NAME
    if not prov.is_file():
        return ""
    try:
        rec = json.loads(prov.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CotdistillError(f"{prov}: not readable JSON ({e})") from None
    if not isinstance(rec, dict):
        raise CotdistillError(f"{prov}: not a training provenance record (a JSON object)")
    return str(rec.get("eval_user_prefix") or "")


def recorded_instruction(student: str | os.PathLike) -> str | None:
    """The user-turn instruction a cotdistill-trained student folder was trained with (``""`` = none), or None
    when the folder records none (not a cotdistill student: the standard instruction applies)."""
    from cotdistill.train.run import PROVENANCE_NAME

    prov = Path(student) / PROVENANCE_NAME
    if not prov.is_file():
        return None
    try:
        rec = json.loads(prov.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CotdistillError(f"{prov}: not readable JSON ({e})") from None
    if "eval_instruction" in rec:
        return str(rec["eval_instruction"] or "")
    data = (rec.get("config") or {}).get("data") or {}  # students saved before eval_instruction was recorded
    return str(data["student_instruction"] or "") if "student_instruction" in data else None


def _one_writer(fn):
    """Hold ``output_dir``'s lock (:func:`cotdistill.utils.lock.folder_lock`) for the whole evaluation: a second
    process on the same folder is refused in one line instead of appending duplicate lines."""
    import functools

    from cotdistill.utils.lock import folder_lock

    @functools.wraps(fn)
    def wrapper(model, benchmarks, output_dir, **kwargs):
        with folder_lock(output_dir, "cotdistill eval"):
            return fn(model, benchmarks, output_dir, **kwargs)

    return wrapper


def _check_same_inputs(jsonl: Path, done: dict[str, dict], examples: dict, prompts: dict[str, str]) -> None:
    """Lines already in ``jsonl`` must answer the same inputs: same prompt (question, options, instruction,
    prefix) and same gold as the benchmark has now. A benchmark file edited since, or another file of the same
    name, is refused in one line instead of being scored with the old outputs."""
    from cotdistill.utils.redact import redact_text

    for qid, rec in done.items():
        ex = examples.get(qid)
        if ex is None:
            continue  # not requested now (another limit): never summarised
        field = ("prompt" if rec.get("prompt") not in (None, redact_text(prompts[qid]))
                 else "gold" if str(rec.get("gold")) != str(ex.answer) else None)
        if field:
            raise CotdistillError(
                f"{jsonl}: id {qid}: {field}: differs from the benchmark's {ex.benchmark} now (the file changed, or "
                "another file of the same name): these results answer other inputs; choose another --output folder")


@_one_writer
def run_eval(
    model: str,
    benchmarks: Sequence[str],
    output_dir: str | os.PathLike,
    *,
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 2048,
    backend: str = "hf",
    adapter: str | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    seed: int = 0,
    dtype: str = "auto",
    instruction: str | None = None,
    user_prefix: str = "",
    bootstrap_samples: int = 1000,
    math_verify_timeout_s: float = 5.0,
    gpqa_shuffle_seed: int = 0,
    progress: bool = True,
    backend_obj=None,
) -> dict[str, dict]:
    """Evaluate ``model`` zero-shot and greedily on ``benchmarks``; resumable. Returns ``{bench: summary}``.

    Args:
        model: model spec (HF id | folder | .gguf | alias) or, for ``backend="openai"``, the served model name.
        benchmarks: registry specs (``gsm8k``, ``svamp``, ``jsonl:PATH``, ...).
        output_dir: folder for ``<bench>.jsonl``, ``<bench>.summary.json`` and ``summary.json``.
        limit: first N questions per benchmark.
        batch_size: prompts per generate call (hf) / requests in flight (openai).
        max_new_tokens: generation budget (§5.2 default 2048).
        backend: ``hf`` | ``openai`` | ``vllm``.
        adapter: PEFT adapter folder (merged for hf, LoRARequest for vllm).
        base_url, api_key_env: openai backend endpoint and the env var holding its key.
        seed: generation seed and bootstrap seed.
        dtype: 'auto' | 'float32' | 'bfloat16' | 'float16' (local backends).
        instruction: user-turn instruction after the question (default: the §5.2 instruction).
        user_prefix: text opening the user turn, for students trained with a task prefix (SbS's ``explain: ``).
        bootstrap_samples: resamples for the 95% CI.
        math_verify_timeout_s: per-answer math-verify limit.
        gpqa_shuffle_seed: seed of GPQA's per-question option shuffle (part of the generation key).
        progress: show a progress bar on stderr.
        backend_obj: an already built :class:`EvalBackend` (tests, servers); skips loading.
    """
    import cotdistill
    from cotdistill.data.answers import EXTRACTOR_VERSION, score
    from cotdistill.data.prompts import DEFAULT_INSTRUCTION, eval_user_prompt
    from cotdistill.data.registry import load_benchmark
    from cotdistill.evaluate.backends import EvalRequest, describe_backend, make_eval_backend

    benchmarks = [b.strip() for b in benchmarks if b and b.strip()]
    if not benchmarks:
        raise CotdistillError("benchmarks: no benchmark given")
    if batch_size < 1 or max_new_tokens < 1:
        raise CotdistillError("batch_size/max_new_tokens: must be >= 1")
    from cotdistill.utils.redact import check_env_var_name

    try:
        check_env_var_name(api_key_env, "api_key_env")  # a key pasted here must not reach any message
    except ValueError as e:
        raise CotdistillError(str(e)) from None
    instruction = DEFAULT_INSTRUCTION if instruction is None else instruction
    out = Path(output_dir)

    # 1. load every benchmark first: a typo fails before any model is loaded
    data = {b: load_benchmark(b, limit=limit, gpqa_shuffle_seed=gpqa_shuffle_seed) for b in benchmarks}
    stems: dict[str, str] = {}
    for b, exs in data.items():
        ids = [e.id for e in exs]
        if len(set(ids)) != len(ids):
            raise CotdistillError(f"benchmark {b}: id: duplicate question ids")
        other = stems.setdefault(bench_file_stem(b), b)
        if other != b:
            raise CotdistillError(f"benchmarks {other} and {b}: would share the result file {bench_file_stem(b)}.jsonl;"
                                  " rename one of the files")

    # 2. provenance (without loading the model) and resume check
    base_prov = backend_obj.provenance() if backend_obj is not None else describe_backend(
        backend, model, adapter=adapter, dtype=dtype, base_url=base_url)
    base_prov = {k: v for k, v in base_prov.items() if k != "resolved_path"}
    prov = {
        **base_prov, "backend": backend, "batch_size": batch_size if backend == "hf" else None,
        "concurrency": batch_size if backend == "openai" else None, "seed": seed,
        "max_new_tokens": max_new_tokens, "instruction_sha": stable_hash(instruction),
        "gpqa_shuffle_seed": gpqa_shuffle_seed if any(b.startswith("gpqa") for b in benchmarks) else None,
        "extractor_version": EXTRACTOR_VERSION, "cotdistill_version": cotdistill.__version__,
        "decoding": "greedy", "limit": limit,
    }
    if user_prefix:  # an optional generation field: recorded only when set
        prov["user_prefix"] = user_prefix
    gen_key = _gen_key(prov)
    out.mkdir(parents=True, exist_ok=True)
    pending: dict[str, list] = {}
    done_all: dict[str, dict[str, dict]] = {}
    for b, exs in data.items():
        stem = bench_file_stem(b)
        _check_provenance(out / f"{stem}.provenance.json", prov)
        done = _existing(out / f"{stem}.jsonl", gen_key)
        _check_same_inputs(out / f"{stem}.jsonl", done, {e.id: e for e in exs},
                           {e.id: user_prefix + eval_user_prompt(e, instruction) for e in exs})
        _rescore(out / f"{stem}.jsonl", done, {e.id: e for e in exs}, math_verify_timeout_s)
        done_all[b] = done
        pending[b] = [e for e in exs if e.id not in done]

    # 3. generate what is missing
    n_todo = sum(len(v) for v in pending.values())
    stats = {"generated": 0, "new_tokens": 0, "wall_s": 0.0, "failed": 0, "last_error": None}
    if n_todo:
        from tqdm.auto import tqdm

        owned = backend_obj is None
        be = backend_obj or make_eval_backend(backend, model, adapter=adapter, dtype=dtype, batch_size=batch_size,
                                              base_url=base_url, api_key_env=api_key_env)
        got = {k: v for k, v in be.provenance().items() if k in _GEN_FIELDS}
        if any(got.get(k) != prov.get(k) for k in got):
            raise CotdistillError(f"model: {model}: loaded model differs from its description ({got} vs {prov})")
        from cotdistill.utils.runfolder import claim_folder

        claim_folder(out, "eval")  # first write: only into an empty, new or cotdistill eval folder
        bar = tqdm(total=n_todo, desc="eval", unit="q", disable=not progress, dynamic_ncols=True)
        t_start = time.monotonic()
        try:
            for b, exs in pending.items():
                if not exs:
                    continue
                stem = bench_file_stem(b)
                atomic_write_json(out / f"{stem}.provenance.json", {**prov, "gen_key": gen_key, "benchmark": b})
                bar.set_description(f"eval {b}")
                by_id = {e.id: e for e in exs}
                prompts = {e.id: user_prefix + eval_user_prompt(e, instruction) for e in exs}
                reqs = [EvalRequest(e.id, [{"role": "user", "content": prompts[e.id]}]) for e in exs]
                t0 = time.monotonic()
                for outs in be.generate(reqs, max_new_tokens=max_new_tokens, seed=seed):
                    dt = time.monotonic() - t0
                    t0 = time.monotonic()
                    recs = []
                    for o in outs:
                        if o.error:
                            stats["failed"] += 1
                            stats["last_error"] = o.error
                            continue
                        ex = by_id[o.key]
                        extracted, correct = score(o.text, ex, timeout_s=math_verify_timeout_s)
                        recs.append({
                            "id": ex.id, "prompt": prompts[ex.id], "output": o.text, "extracted": extracted,
                            "gold": ex.answer, "correct": bool(correct), "n_tokens": o.n_tokens,
                            "finish_reason": o.finish_reason, "batch_s": round(dt, 3), "gen_key": gen_key,
                            "extractor_version": EXTRACTOR_VERSION,
                        })
                        stats["new_tokens"] += o.n_tokens
                    append_jsonl(out / f"{stem}.jsonl", recs)
                    for r in recs:
                        done_all[b][r["id"]] = r
                    stats["generated"] += len(recs)
                    bar.update(len(outs))
        finally:
            bar.close()
            stats["wall_s"] = time.monotonic() - t_start
            if owned:
                be.close()

    # 4. summaries (over the requested examples only)
    summaries: dict[str, dict] = {}
    for b, exs in data.items():
        stem = bench_file_stem(b)
        recs = [done_all[b][e.id] for e in exs if e.id in done_all[b]]
        s = {"benchmark": b, **accuracy_summary([r["correct"] for r in recs], n_boot=bootstrap_samples, seed=seed)}
        s["complete"] = len(recs) == len(exs)
        s["missing"] = len(exs) - len(recs)
        s["truncated"] = sum(r.get("finish_reason") == "length" for r in recs)
        # prompts longer than the model's context: not generated, counted wrong, reported (models.generate_batch)
        s["over_context"] = sum(r.get("finish_reason") == "over_context" for r in recs)
        if s["over_context"]:
            import sys

            print(f"warning: {b}: {s['over_context']} of {len(recs)} question(s) are longer than the model's "
                  "context: not answered, counted wrong (finish_reason over_context)", file=sys.stderr)
        s["mean_output_tokens"] = (sum(r.get("n_tokens", 0) for r in recs) / len(recs)) if recs else 0.0
        s["provenance"] = {k: v for k, v in prov.items()}
        # content identity of the questions scored (ids, texts, options, gold), for comparing result folders
        s["provenance"]["benchmark_sha"] = stable_hash([(e.id, e.question, e.choices, e.answer) for e in exs])
        summaries[b] = s
        atomic_write_json(out / f"{stem}.summary.json", s)
    # summary.json keeps other benchmarks evaluated into this folder earlier
    import json

    allp = out / "summary.json"
    merged: dict[str, Any] = {}
    if allp.is_file():
        try:
            merged = json.loads(allp.read_text(encoding="utf-8")).get("benchmarks", {})
        except (ValueError, AttributeError):
            merged = {}
    merged.update(summaries)
    run_stats = {k: v for k, v in stats.items() if k != "last_error"}
    run_stats["tokens_per_s"] = stats["new_tokens"] / stats["wall_s"] if stats["wall_s"] > 0 else None
    atomic_write_json(allp, {"model": model, "adapter": adapter, "benchmarks": merged, "last_run": run_stats})
    if stats["failed"]:
        raise CotdistillError(
            f"{out}: {stats['failed']} request(s) failed (last: {stats['last_error']}); "
            "partial results are saved: re-run the same command to retry them"
        )
    return summaries
