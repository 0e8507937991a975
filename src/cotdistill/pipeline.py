"""`cotdistill run`: every stage from one YAML, each skipped when its output is complete and current.

A stage is *current* when its output exists and was made from the same inputs: each stage records a
fingerprint (hash of the config sections it reads + the fingerprints of the stages it depends on) in
`run_dir/stages.json`. When a fingerprint changes, the old output is moved aside to
`<output>.stale-<old fingerprint>` (never deleted) and the stage runs again; later stages follow.
Stages that resume by themselves (synthesis, training, evaluation) are simply re-entered after a crash.

Under a multi-process launch (``torchrun`` / ``accelerate launch``, ``WORLD_SIZE`` > 1) rank 0 alone runs
the data, evaluation and report stages and writes ``stages.json``; every rank runs ``train`` (the Trainer
does the data parallelism). The other ranks wait for rank 0 by polling ``stages.json``, not with a collective:
synthesis or evaluation can take hours, longer than any NCCL/gloo timeout. ``run_dir`` must be on a
filesystem every rank sees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotdistill.config import Config, dump_config
from cotdistill.errors import CotdistillError
from cotdistill.utils import dist
from cotdistill.utils.io import atomic_write_json, atomic_write_text, stable_hash

POLL_S = 5.0  # how often a waiting rank re-reads stages.json
PROGRESS_S = 300.0  # how often it says it is still waiting


@dataclass
class Stage:
    """One step of the plan: what it reads, where it writes, how to run it."""

    name: str
    output: Path
    inputs: dict[str, Any]
    depends: list[str]
    run: Callable[[], Any]
    estimate: str = ""
    resumable: bool = False  # the stage itself resumes partial output (no stale move on crash)
    append_only: bool = False  # output only grows and is keyed by inputs: never moved aside
    extra_outputs: list[Path] = field(default_factory=list)  # moved aside together with `output`
    fingerprint: str = field(default="", init=False)


def _section(cfg: Config, *names: str) -> dict[str, Any]:
    """The named config sections, keys at their default left out: a new config key (with a default) added
    in a later version does not make finished stages look changed."""
    dumped = cfg.model_dump(mode="json", exclude_defaults=True)
    return {n: dumped.get(n) for n in names}


def student_tag(cfg: Config) -> str:
    """Folder name of the distilled student's evaluation: the method name."""
    return cfg.method


def build_plan(cfg: Config, run_dir: Path, shared_dir: Path | None = None) -> list[Stage]:
    """The ordered stages for this config (stages with nothing to do are left out).

    ``shared_dir`` (default ``run_dir``) holds the stages a comparison shares between methods:
    rationales, the curated dataset and the base model's evaluation.
    """
    stages: list[Stage] = []
    shared = shared_dir or run_dir
    store_dir = shared / "rationales"
    dataset_dir = shared / "dataset"
    eval_cfg = cfg.eval

    def _rationales() -> None:
        from cotdistill.teachers.store import RationaleStore

        if cfg.data.imports:
            from cotdistill.teachers.importers import import_rationales

            store = RationaleStore(store_dir)
            for i, spec in enumerate(cfg.data.imports):
                import_rationales(spec.format, spec.path, store, where=f"config: data.imports[{i}].path",
                                  **spec.options)
        if cfg.teachers:
            from cotdistill.teachers.synthesize import synthesize

            synthesize(cfg, run_dir)
            if cfg.synthesis.dual_cot:  # EDIT's CCP/AHP twins of the standard paths just synthesised
                from cotdistill.teachers.dual_cot import plan_dual

                synthesize(cfg, run_dir, items=plan_dual(cfg, RationaleStore(store_dir)),
                           summary_name="dual_cot_summary.json")

    if not cfg.data.imports and not cfg.teachers:
        raise CotdistillError("config: data.imports and teachers are both empty: nothing to distill from")
    stages.append(
        Stage(
            "rationales", store_dir,
            _section(cfg, "data", "teachers", "synthesis"), [], _rationales,
            f"{len(cfg.data.imports)} import(s), {len(cfg.teachers)} live teacher(s)", resumable=True, append_only=True,
        )
    )

    def _curate() -> None:
        from cotdistill.curate import curate_store

        curate_store(cfg, store_dir, dataset_dir)

    curate_inputs = _section(cfg, "curate", "data")
    if cfg.eval.rationale_nll is not None:  # its questions are guarded and named in the data card
        curate_inputs["rationale_nll"] = cfg.eval.rationale_nll.model_dump(mode="json")
    stages.append(Stage("curate", dataset_dir, curate_inputs, ["rationales"], _curate))

    from cotdistill.methods.registry import student_user_prefix

    student_prefix = student_user_prefix(cfg)  # SbS students answer the task their prefix asks for

    def _eval(tag: str, adapter_dir: Path | None) -> Callable[[], None]:
        def go() -> None:
            from cotdistill.evaluate import run_eval

            model = cfg.train.model
            adapter = None
            if adapter_dir is not None:
                if (adapter_dir / "adapter_config.json").exists():
                    adapter = str(adapter_dir)
                else:
                    model = str(adapter_dir)  # full fine-tune: the folder is the model
            run_eval(
                model, eval_cfg.benchmarks, (shared if tag == "base" else run_dir) / "eval" / tag,
                limit=eval_cfg.limit, batch_size=eval_cfg.batch_size, max_new_tokens=eval_cfg.max_new_tokens,
                backend=eval_cfg.backend, adapter=adapter, base_url=eval_cfg.base_url,
                api_key_env=eval_cfg.api_key_env, seed=cfg.run.seed, dtype=eval_cfg.dtype,
                # "" means no instruction (COMPACT fidelity runs): never replaced by the default one
                instruction=cfg.data.student_instruction, bootstrap_samples=eval_cfg.bootstrap_samples,
                user_prefix="" if tag == "base" else student_prefix,
                math_verify_timeout_s=eval_cfg.math_verify_timeout_s, gpqa_shuffle_seed=eval_cfg.gpqa_shuffle_seed,
            )

        return go

    n_eval = f"{len(eval_cfg.benchmarks)} benchmark(s) x {eval_cfg.limit or 'all'} questions"
    # the prompt's instruction is an evaluation input too (left out at its default: old fingerprints stay valid)
    instruction_input = _section(cfg, "data")["data"] or {}
    gen_inputs = _section(cfg, "eval") | (
        {"instruction": cfg.data.student_instruction} if "student_instruction" in instruction_input else {})
    (gen_inputs.get("eval") or {}).pop("rationale_nll", None)  # its own stages: adding it re-runs no generation
    stages.append(
        Stage("eval_base", shared / "eval" / "base", gen_inputs | {"model": cfg.train.model}, [],
              _eval("base", None), n_eval, resumable=True)
    )
    nll = eval_cfg.rationale_nll

    def _nll(tag: str, adapter_dir: Path | None) -> Callable[[], None]:
        def go() -> None:
            from cotdistill.evaluate.rationale_nll import parse_set, run_rationale_nll

            model, adapter = cfg.train.model, None
            if adapter_dir is not None:
                if (adapter_dir / "adapter_config.json").exists():
                    adapter = str(adapter_dir)
                else:
                    model = str(adapter_dir)
            run_rationale_nll(
                model, parse_set(nll.set, nll.options, nll.max_per_question),
                (shared if tag == "base" else run_dir) / "nll" / tag, adapter=adapter,
                instruction=cfg.data.student_instruction, answer_suffix=cfg.data.answer_suffix,
                max_seq_len=nll.max_seq_len, batch_size=nll.batch_size,
                user_prefix="" if tag == "base" else student_prefix, bootstrap_samples=eval_cfg.bootstrap_samples,
                seed=cfg.run.seed,
            )

        return go

    nll_inputs = {"rationale_nll": nll.model_dump(mode="json") if nll else None,
                  "data": {"student_instruction": cfg.data.student_instruction,
                           "answer_suffix": cfg.data.answer_suffix}}
    if nll is not None:
        stages.append(Stage("nll_base", shared / "nll" / "base", nll_inputs | {"model": cfg.train.model},
                            [], _nll("base", None), f"held-out rationale NLL on {nll.set}"))

    student_dir = run_dir / "student"

    def _train() -> None:
        from cotdistill.train.dispatch import train_method

        train_method(cfg, dataset_dir, run_dir)

    train_inputs = _section(cfg, "train", "method", cfg.method, "run")
    stages.append(
        Stage("train", student_dir, train_inputs, ["curate"], _train, f"{cfg.method}, {cfg.train.finetune}",
              resumable=True, extra_outputs=[run_dir / "checkpoints", run_dir / "dynamics.jsonl"])
    )
    student_eval_inputs = gen_inputs | ({"user_prefix": student_prefix} if student_prefix else {})
    stages.append(
        Stage("eval_student", run_dir / "eval" / student_tag(cfg), student_eval_inputs, ["train"],
              _eval(student_tag(cfg), student_dir), n_eval, resumable=True)
    )
    if nll is not None:
        stages.append(Stage("nll_student", run_dir / "nll" / student_tag(cfg),
                            nll_inputs | ({"user_prefix": student_prefix} if student_prefix else {}), ["train"],
                            _nll(student_tag(cfg), student_dir), f"held-out rationale NLL on {nll.set}"))

    if cfg.analysis.enabled:
        def _analyze() -> None:
            from cotdistill.analysis import analyze_run

            analyze_run(run_dir, cfg.analysis)

        stages.append(
            Stage("analyze", run_dir / "analysis", _section(cfg, "analysis"), ["eval_base", "eval_student"], _analyze)
        )
    if cfg.report.enabled:
        def _report() -> None:
            from cotdistill.report import write_report

            write_report(run_dir)

        deps = [s.name for s in stages]
        stages.append(Stage("report", run_dir / "report.html", _section(cfg, "report"), deps, _report))
    return stages


def _fingerprints(stages: list[Stage]) -> None:
    by_name: dict[str, Stage] = {}
    for st in stages:
        st.fingerprint = stable_hash({"inputs": st.inputs, "deps": [by_name[d].fingerprint for d in st.depends]})
        by_name[st.name] = st


def _load_state(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "stages.json"
    if not p.exists():
        return {}
    try:
        state = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        state = None
    # {stage: {fingerprint, complete, ...}}: any other shape is damage, never a reason for a traceback
    if not isinstance(state, dict) or not all(isinstance(v, dict) for v in state.values()):
        raise CotdistillError(f"{p}: corrupt stage record; remove it to re-check every stage")
    return state


def _status(st: Stage, state: dict[str, Any]) -> str:
    rec = state.get(st.name)
    if rec is None:
        return "partial" if st.output.exists() else "todo"
    if rec.get("fingerprint") != st.fingerprint:
        return "changed"
    return "done" if rec.get("complete") else "partial"


def _read_state_quiet(run_dir: Path) -> dict[str, Any]:
    """stages.json as written so far ({} while absent or unreadable: rank 0 replaces it atomically)."""
    try:
        return json.loads((run_dir / "stages.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def wait_for_stages(
    run_dir: Path,
    complete: dict[str, str],
    *,
    started: dict[str, str] | None = None,
    since: float | None = None,
    poll_s: float = POLL_S,
    progress_s: float = PROGRESS_S,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Block until rank 0 has recorded, in ``run_dir/stages.json``, every stage of ``complete`` (name →
    fingerprint) as complete and every stage of ``started`` as at least begun, each with that fingerprint.

    Returns the state read last. Raises CotdistillError when one of those stages is marked ``failed`` by
    this launch's rank 0: the entry's ``failed_at`` is not older than ``since`` (default: this process's
    start) or the entry changed while waiting; an older failure (an earlier launch) is ignored, since
    rank 0 replaces that entry when it runs the stage again. Says it is still waiting every ``progress_s``.
    """
    started = started or {}
    since = dist.process_start_time() if since is None else since
    watched = complete | started
    path = run_dir / "stages.json"
    first: dict[str, Any] | None = None
    t0 = last_note = time.time()
    while True:
        state = _read_state_quiet(run_dir)
        if first is None:
            first = state
        for name, fp in watched.items():
            rec = state.get(name)
            if not rec or rec.get("fingerprint") != fp or not rec.get("failed"):
                continue
            if float(rec.get("failed_at", 0)) >= since or rec != first.get(name):
                raise CotdistillError(f"{path}: {name}: rank 0 failed: {rec['failed']}")

        def ok(name: str, fp: str, need_complete: bool) -> bool:
            rec = state.get(name) or {}
            return rec.get("fingerprint") == fp and (bool(rec.get("complete")) or not need_complete)

        pending = [n for n, fp in complete.items() if not ok(n, fp, True)]
        pending += [n for n, fp in started.items() if not ok(n, fp, False)]
        if not pending:
            return state
        if time.time() - last_note >= progress_s:
            last_note = time.time()
            echo(f"[rank {dist.rank()}] waiting for rank 0 to finish {pending[0]} "
                 f"({(last_note - t0) / 60:.0f} min so far)")
        time.sleep(poll_s)


def _release_memory() -> None:
    """Hand cached accelerator memory back after training: rank 0 evaluates next (vLLM may span devices)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _follow_rank0(stages: list[Stage], run_dir: Path, echo: Callable[[str], None]) -> None:
    """A rank > 0: wait for rank 0's stages before ``train``, train with it, then wait for the rest.

    So a rank returns only once rank 0 has finished the whole plan: in ``compare`` it never enters the next
    cell's training (whose first collective would time out) while rank 0 still evaluates this one.
    """
    since = dist.process_start_time()
    # one waiting rank per node speaks (rank 1 on the first node, local rank 0 on the others)
    say = echo if dist.rank() == 1 or dist.local_rank() == 0 else (lambda s: None)
    names = [st.name for st in stages]
    if "train" not in names:
        wait_for_stages(run_dir, {st.name: st.fingerprint for st in stages}, since=since, echo=say)
        return
    i = names.index("train")
    train = stages[i]
    # `started` on train: rank 0 writes its entry after moving a changed run's old checkpoints aside, so
    # this rank never resumes from checkpoints that are about to move
    state = wait_for_stages(run_dir, {st.name: st.fingerprint for st in stages[:i]},
                            started={train.name: train.fingerprint}, since=since, echo=say)
    if not state[train.name].get("complete"):  # rank 0 trains now (complete would mean it skipped: done)
        train.run()
        _release_memory()
    wait_for_stages(run_dir, {st.name: st.fingerprint for st in stages[i:]}, since=since, echo=say)


def _one_writer(fn):
    """Rank 0 of a real run holds the run folder's lock (:mod:`cotdistill.utils.lock`) for the whole plan: a
    second ``cotdistill run`` on the same folder is refused in one line instead of racing the first."""
    import functools

    from cotdistill.utils.lock import folder_lock

    @functools.wraps(fn)
    def wrapper(cfg: Config, **kwargs):
        only = kwargs.get("only")
        if only is None or "train" in only:
            from cotdistill.methods.registry import missing_roles

            problem = missing_roles(cfg)
            if problem:  # before any stage and any write: hours of synthesis must not end in an untrainable method
                raise CotdistillError(f"config: method: {problem}")
        if kwargs.get("dry_run") or not dist.is_main():
            return fn(cfg, **kwargs)
        with folder_lock(cfg.run_dir(), "cotdistill run"):
            return fn(cfg, **kwargs)

    return wrapper


@_one_writer
def run_pipeline(
    cfg: Config,
    *,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
    only: set[str] | None = None,
    shared_dir: Path | None = None,
) -> list[tuple[str, str]]:
    """Run (or, with ``dry_run``, only plan) the stages. Returns ``[(stage, status before running)]``.

    ``only`` restricts the stages run (fingerprints still chain through the whole plan); ``shared_dir``
    places the shared stages elsewhere (see :func:`build_plan`). Under a multi-process launch only rank 0
    prints the plan and runs the non-training stages; the other ranks train with it (module docstring).
    """
    run_dir = cfg.run_dir()
    stages = build_plan(cfg, run_dir, shared_dir)
    _fingerprints(stages)
    if only is not None:
        stages = [st for st in stages if st.name in only]
    main = dist.is_main()
    state = _load_state(run_dir) if main else _read_state_quiet(run_dir)
    plan = [(st.name, _status(st, state)) for st in stages]
    if dry_run:
        if main:
            echo(f"plan for {run_dir} ({cfg.method}, student {cfg.train.model}):")
            for st, (_, status) in zip(stages, plan):
                verb = {"done": "skip (done)", "todo": "run", "partial": "resume", "changed": "redo (inputs changed)"}
                echo(f"  {st.name:<13} {verb[status]:<24} -> {st.output}  {st.estimate}")
        return plan
    if not main:
        _follow_rank0(stages, run_dir, echo)
        return plan

    from cotdistill.utils.runfolder import claim_folder

    claim_folder(run_dir)  # an empty/new folder or a cotdistill run folder; anything else is refused unwritten
    if dist.world_size() > 1:
        echo(f"[{dist.world_size()} ranks] rank 0 runs the data, evaluation and report stages; every rank trains")
    cfg_path = run_dir / "config.yaml"
    atomic_write_text(cfg_path, dump_config(cfg))
    for st, (_, status) in zip(stages, plan):
        if status == "done":
            echo(f"[{st.name}] done, skipped")
            continue
        stale = status == "changed" or (status == "partial" and not st.resumable)
        if stale and not st.append_only:
            old = state.get(st.name, {}).get("fingerprint", "unrecorded")
            for out in [st.output, *st.extra_outputs]:
                if out.exists():
                    aside, n = out.with_name(f"{out.name}.stale-{old}"), 1
                    while aside.exists():
                        aside, n = out.with_name(f"{out.name}.stale-{old}.{n}"), n + 1
                    out.rename(aside)
                    echo(f"[{st.name}] inputs changed: previous output kept at {aside}")
        echo(f"[{st.name}] {'resuming' if status == 'partial' and st.resumable else 'running'}")
        t0 = time.time()
        state[st.name] = {"fingerprint": st.fingerprint, "complete": False, "started": t0}
        atomic_write_json(run_dir / "stages.json", state)
        try:
            st.run()
        except BaseException as e:
            # other ranks poll this file: tell them, so they stop waiting instead of hanging
            msg = (str(e).strip().splitlines() or [""])[0]
            state[st.name].update(failed=f"{type(e).__name__}: {msg}"[:500], failed_at=time.time())
            atomic_write_json(run_dir / "stages.json", state)
            raise
        if st.name == "train" and dist.world_size() > 1:
            _release_memory()
        state[st.name].update(complete=True, seconds=round(time.time() - t0, 1))
        atomic_write_json(run_dir / "stages.json", state)
        echo(f"[{st.name}] finished in {time.time() - t0:.0f}s")
    return plan
