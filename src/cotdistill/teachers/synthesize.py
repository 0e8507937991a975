"""Live teacher synthesis: questions × teachers × perspectives × samples → the rationale store.

``synthesize(config, run_dir)`` plans every request, skips keys already in the store, runs each teacher's
backend in its own thread (teachers on different endpoints work at once), and streams results into the
store in group commits (:class:`~cotdistill.teachers.store.StoreWriter`: one write + fsync per
``flush_every`` results or ``flush_interval_s`` seconds, and on exit or Ctrl-C). Killing the process at any
point (SIGKILL) loses at most the requests in flight plus the unflushed batch (< ``flush_every`` results,
all younger than ``flush_interval_s``); the next run re-sends exactly those, so every key ends up in the store
once. Failures are recorded with their error and re-sent by the next run (``synthesis.retry_failed``).
The batch bounds default to :data:`FLUSH_EVERY` / :data:`FLUSH_INTERVAL_S`; the environment variables
``COTDISTILL_SYNTH_FLUSH_EVERY`` / ``COTDISTILL_SYNTH_FLUSH_INTERVAL_S`` override them (``1`` = one fsync per result).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cotdistill import __version__
from cotdistill.errors import CotdistillError
from cotdistill.pathset.roles import perspective_role
from cotdistill.teachers.backends import GenRequest, GenResult, make_backend
from cotdistill.teachers.perspectives import STANDARD, STANDARD_PERSPECTIVE, Perspective, resolve_perspectives
from cotdistill.teachers.prompts import build_messages
from cotdistill.teachers.store import RationaleStore, StoreWriter, record_key
from cotdistill.utils.io import atomic_write_json, atomic_write_text, stable_hash

log = logging.getLogger(__name__)

STORE_SUBDIR = "rationales"
FLUSH_EVERY = 64  # results per group commit (write + fsync) of the store
FLUSH_INTERVAL_S = 1.0  # ... or the oldest unflushed result's age, whichever comes first


@dataclass
class PlannedItem:
    """One planned teacher call: the request and the record fields known before the reply."""

    teacher: str
    request: GenRequest
    record: dict[str, Any]
    example: Any
    reasoning: str = "keep"  # teachers[].reasoning: what happens to a separate chain of thought


def utc_now() -> str:
    """ISO-8601 UTC timestamp."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def load_question_pool(config: Any) -> list[Any]:
    """Questions of ``data.question_pool`` (deduplicated by id), seeded-sampled to ``data.max_questions``.

    The sample keeps the pool's order, so growing ``max_questions`` never reshuffles earlier picks' keys.
    """
    from cotdistill.data.registry import load_benchmark

    seen: set[str] = set()
    pool: list[Any] = []
    for spec in config.data.question_pool:
        for ex in load_benchmark(spec):
            if ex.id not in seen:
                seen.add(ex.id)
                ex.meta.setdefault("source_spec", spec)
                pool.append(ex)
    if not pool:
        raise CotdistillError("config: data.question_pool: no questions loaded")
    if config.data.decontaminate and config.curate.eval_guard:
        # never spend teacher calls on evaluation questions (METHODS §1.4); curation guards again
        from cotdistill.data.prompts import normalize_question

        guard = {normalize_question(ex.question) for spec in config.curate.eval_guard for ex in load_benchmark(spec)}
        kept = [ex for ex in pool if normalize_question(ex.question) not in guard]
        if not kept:
            raise CotdistillError(
                "config: data.question_pool: every question is in an evaluation set (curate.eval_guard); "
                "set data.decontaminate: false to synthesize anyway"
            )
        pool = kept
    k = config.data.max_questions
    if k is not None and k < len(pool):
        idx = sorted(random.Random(config.run.seed).sample(range(len(pool)), k))
        pool = [pool[i] for i in idx]
    return pool


def _teacher_perspectives(config: Any, i: int, all_p: list[Perspective]) -> list[Perspective]:
    t = config.teachers[i]
    ps = list(all_p)
    if config.data.standard_path == "plain" and all(p.id != STANDARD for p in ps):
        ps.append(STANDARD_PERSPECTIVE)
    if t.perspectives is None:
        return ps
    by_id = {p.id: p for p in ps}
    out = []
    for pid in t.perspectives:
        if pid not in by_id:
            raise CotdistillError(
                f"config: teachers[{i}].perspectives: '{pid}' is not in data.perspectives "
                f"(nor the standard path); known: {', '.join(by_id)}"
            )
        out.append(by_id[pid])
    return out


def plan(config: Any, questions: list[Any] | None = None) -> list[PlannedItem]:
    """Every (question, teacher, perspective, sample) request of the config, with its record key."""
    if not config.teachers:
        raise CotdistillError("config: teachers: no teacher configured for synthesis")
    questions = load_question_pool(config) if questions is None else questions
    perspectives = resolve_perspectives(config.data.perspectives)
    syn = config.synthesis
    items: list[PlannedItem] = []
    for ti, t in enumerate(config.teachers):
        gen_params = {"temperature": t.temperature, "top_p": t.top_p, "max_new_tokens": t.max_new_tokens}
        if t.extra_body:  # sent with every request, so part of the key; absent when empty (keys stay as before)
            gen_params["extra_body"] = t.extra_body
        for p in _teacher_perspectives(config, ti, perspectives):
            for ex in questions:
                messages = build_messages(
                    ex.question, p, choices=ex.choices, prompt_version=syn.prompt_version,
                    system_prompt=syn.system_prompt,
                )
                prompt_hash = stable_hash(messages)
                for s in range(t.samples_per_perspective):
                    key = record_key(
                        question_id=ex.id, backend=t.backend, teacher_model=t.model, perspective=p.id,
                        prompt_version=syn.prompt_version, gen_params=gen_params, seed=t.seed, sample_idx=s,
                        prompt_hash=prompt_hash,
                    )
                    req = GenRequest(
                        key=key, messages=messages, temperature=t.temperature, top_p=t.top_p,
                        max_new_tokens=t.max_new_tokens, seed=int(stable_hash([t.seed, key]), 16) % (2**31),
                    )
                    record = {
                        "key": key, "question_id": ex.id, "question": ex.question, "gold": ex.answer,
                        "kind": ex.kind, "choices": list(ex.choices) if ex.choices else None,
                        "source": ex.meta.get("source_spec", ex.benchmark), "teacher": t.name,
                        "teacher_model": t.model, "backend": t.backend, "perspective": p.id,
                        "role": perspective_role(p.id), "sample_idx": s,
                        "prompt": messages, "prompt_version": syn.prompt_version, "prompt_hash": prompt_hash,
                        "gen_params": {**gen_params, "seed": t.seed, "request_seed": req.seed},
                    }
                    items.append(PlannedItem(t.name, req, record, ex, t.reasoning))
    return items


def _score(text: str, ex: Any) -> tuple[str | None, bool | None, str | None]:
    from cotdistill.data.answers import score

    try:
        pred, ok = score(text, ex)
        return pred, bool(ok), None
    except Exception as e:  # a parser bug must not lose the raw text; re-score later
        return None, None, f"{type(e).__name__}: {e}"[:300]


def finish_record(item: PlannedItem, res: GenResult, provenance: dict[str, Any]) -> dict[str, Any]:
    """The stored record for a finished request: raw text apart from parsing, plus provenance.

    A chain of thought (the server's separate field, or ``<think>`` blocks in the text) is split from the answer
    text and, by the teacher's ``reasoning`` mode, stored in ``reasoning`` (keep), dropped, or merged back in
    front of the answer text (merge). ``raw_response`` is what the answer is parsed from.
    """
    from cotdistill.data.answers import EXTRACTOR_VERSION
    from cotdistill.utils.openai_client import merge_reasoning, split_reasoning

    rec = dict(item.record)
    text, reasoning = split_reasoning(res.text, res.reasoning) if res.ok else (res.text, None)
    if item.reasoning == "merge" and reasoning:
        text, reasoning = merge_reasoning(text, reasoning), None
    if reasoning and item.reasoning == "keep":
        rec["reasoning"] = reasoning
    rec.update(
        raw_response=text, usage=res.usage, finish_reason=res.finish_reason, attempts=res.attempts,
        latency_s=round(res.latency_s, 3), created_at=utc_now(), cotdistill_version=__version__,
        provenance=provenance,
    )
    if res.ok:
        pred, correct, perr = _score(text or "", item.example)
        rec.update(parsed_answer=pred, correct=correct, extractor_version=EXTRACTOR_VERSION, parse_error=perr,
                   status="ok", error=None)
    else:
        rec.update(parsed_answer=None, correct=None, status="error", error=res.error or "no text")
    return rec


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="req", dynamic_ncols=True, file=sys.stderr, smoothing=0.1,
                mininterval=0.5)


def _exclusive_run_lock(store_dir: Path):
    import fcntl

    store_dir.mkdir(parents=True, exist_ok=True)
    f = open(store_dir / ".synthesize.lock", "a")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise CotdistillError(f"{store_dir}: another 'cotdistill synthesize' is writing this store; wait for it") from None
    return f


def synthesize(
    config: Any,
    run_dir: str | Path,
    *,
    progress: bool = True,
    flush_every: int | None = None,
    flush_interval_s: float | None = None,
    items: list[PlannedItem] | None = None,
    summary_name: str = "synthesis_summary.json",
) -> dict[str, Any]:
    """Run (or resume) live synthesis for ``config`` into ``run_dir/rationales``; return the summary.

    Results reach the store in group commits of ``flush_every`` records or ``flush_interval_s`` seconds
    (``flush_every=1``: one fsync per result); a SIGKILL loses at most that batch plus the requests in flight.
    None = the environment override (module docstring) or :data:`FLUSH_EVERY` / :data:`FLUSH_INTERVAL_S`.
    Summary keys: planned, already_done, sent, done, failed, remaining, elapsed_s, store, by_teacher.
    ``items`` replaces the config's plan (EDIT's dual-CoT round, :func:`cotdistill.teachers.dual_cot.plan_dual`),
    whose summary goes to ``summary_name``.
    """
    from cotdistill.config import dump_config

    from cotdistill.utils.runfolder import claim_folder

    run_dir = claim_folder(Path(run_dir))  # an empty/new or cotdistill run folder, else refused unwritten
    store = RationaleStore(run_dir / STORE_SUBDIR)
    items = plan(config) if items is None else items
    lock = _exclusive_run_lock(store.dir)  # a second synthesize on the same store would send duplicates
    planned_keys = {it.request.key for it in items}
    latest = store.latest()
    done_before = {k for k, r in latest.items() if r.get("status") == "ok"}
    failed_before = {k for k, r in latest.items() if r.get("status") != "ok"}
    ok_keys = done_before & planned_keys  # kept up to date as results arrive; no re-read after a clean finish
    todo = [it for it in items if it.request.key not in done_before]
    if not config.synthesis.retry_failed:
        todo = [it for it in todo if it.request.key not in failed_before]
    by_key = {it.request.key: it for it in todo}

    per_teacher: dict[str, list[PlannedItem]] = {}
    for it in todo:
        per_teacher.setdefault(it.teacher, []).append(it)
    # build all backends first so configuration errors (missing key, missing vllm) stop us before any work
    backends = {
        t.name: make_backend(t, where=f"config: teachers[{i}]")
        for i, t in enumerate(config.teachers) if t.name in per_teacher
    }
    counts = {t.name: {"planned": 0, "done": 0, "failed": 0} for t in config.teachers}
    for it in items:
        counts[it.teacher]["planned"] += 1

    q: queue.Queue = queue.Queue(maxsize=1024)
    if flush_every is None:
        flush_every = int(os.environ.get("COTDISTILL_SYNTH_FLUSH_EVERY") or FLUSH_EVERY)
    if flush_interval_s is None:
        flush_interval_s = float(os.environ.get("COTDISTILL_SYNTH_FLUSH_INTERVAL_S") or FLUSH_INTERVAL_S)
    writer = StoreWriter(store, flush_every=flush_every, flush_interval_s=flush_interval_s)

    def worker(name: str) -> None:
        try:
            for res in backends[name].generate([it.request for it in per_teacher[name]]):
                q.put(("result", name, res))
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            q.put(("exc", name, e))
        finally:
            q.put(("end", name, None))

    t0 = time.monotonic()
    done_now = failed_now = 0
    bar = _progress(len(todo), "synthesize") if progress and todo else None
    threads = [threading.Thread(target=worker, args=(n,), daemon=True, name=f"teacher-{n}") for n in per_teacher]
    provs: dict[str, dict[str, Any]] = {}
    interrupted = False
    clean = False
    try:
        for th in threads:
            th.start()
        # written while the first requests are in flight (it is only needed before the first record lands)
        if not (run_dir / "config.yaml").exists():
            atomic_write_text(run_dir / "config.yaml", dump_config(config))  # only env-var names, never keys
        running = len(threads)
        while running:
            wait_s = writer.due_in()
            try:
                kind, name, payload = q.get(timeout=wait_s) if wait_s is not None else q.get()
            except queue.Empty:  # nothing arrived while a batch aged: commit it
                writer.flush()
                continue
            if kind == "end":
                running -= 1
                continue
            if kind == "exc":
                raise payload
            res: GenResult = payload
            item = by_key.get(res.key)
            if item is None:
                continue
            if name not in provs:
                provs[name] = backends[name].provenance()
            rec = finish_record(item, res, provs[name])
            writer.add(rec)
            if rec["status"] == "ok":
                ok_keys.add(res.key)
                done_now += 1
                counts[name]["done"] += 1
            else:
                failed_now += 1
                counts[name]["failed"] += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ok=done_now, failed=failed_now, refresh=False)
        clean = True
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        for b in backends.values():
            b.stop_event.set()
        flush_error: BaseException | None = None
        try:
            writer.close()  # commit the last batch (also on Ctrl-C or an error)
        except BaseException as e:  # noqa: BLE001 - e.g. disk full: still clean up, then raise it
            flush_error = e
        if not clean or flush_error is not None:  # a batch may not have landed: count what is on disk
            ok_keys = {k for k, r in store.latest().items() if r.get("status") == "ok"} & planned_keys
        if bar is not None:
            bar.close()
        for b in backends.values():
            try:
                b.close()
            except Exception:
                pass
        summary = {
            "planned": len(items),
            "already_done": len(done_before & planned_keys),
            "sent": len(todo),
            "done": done_now,
            "failed": failed_now,
            "remaining": len(planned_keys - ok_keys),
            "complete": not (planned_keys - ok_keys),
            "interrupted": interrupted,
            "elapsed_s": round(time.monotonic() - t0, 2),
            "store": str(store.path),
            "by_teacher": {n: {**c, "provenance": provs.get(n)} for n, c in counts.items()},
            "cotdistill_version": __version__,
            "finished_at": utc_now(),
        }
        atomic_write_json(store.dir / summary_name, summary)
        lock.close()  # releases the flock (the kernel also drops it if we are killed)
        if flush_error is not None:
            raise flush_error
        if progress:
            log.info(
                "synthesize: %d done, %d failed, %d remaining of %d planned (%d already in the store) in %.1fs -> %s",
                summary["done"], summary["failed"], summary["remaining"], summary["planned"], summary["already_done"],
                summary["elapsed_s"], store.path,
            )
    return summary
