"""The `cotdistill` command line. Each command is thin: it parses options and calls one stage function.

Stage modules are imported inside the commands so that `cotdistill --help` stays fast.
Every user-facing error is a :class:`CotdistillError`, printed as one line with a non-zero exit.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from cotdistill.errors import CotdistillError

class _Group(typer.core.TyperGroup):
    """Every command's OS-level failure (a path that is a file, read-only, a symlink loop) becomes the one-line
    user error naming the path, instead of a traceback: one place for all commands (see utils/oserrors.py)."""

    def invoke(self, ctx):
        from cotdistill.utils.oserrors import as_user_error

        try:
            return super().invoke(ctx)
        except OSError as e:
            err = as_user_error(e)
            if err is None:
                raise
            raise err from None


app = typer.Typer(
    cls=_Group,
    name="cotdistill",
    help="Distill chain-of-thought reasoning from teacher LLMs into small students.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More log output: -v cotdistill debug "
                                         "and libraries info, -vv libraries debug. May follow the command.")] = 0,
    log_level: Annotated[str, typer.Option("--log-level", help="cotdistill's log level: debug, info, warning, error. "
                                           "May follow the command.")] = "info",
) -> None:
    """Distill chain-of-thought reasoning from teacher LLMs into small students."""
    from cotdistill.utils.logs import setup_logging

    try:
        setup_logging(log_level, verbose)
    except ValueError as e:
        raise CotdistillError(str(e)) from None

    from cotdistill.utils.redact import install_log_redaction

    install_log_redaction()  # no credential in any log line, whichever library logs it


def _echo_err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


#: `--set KEY=VALUE` on every command that reads a config
SetOption = Annotated[list[str], typer.Option(
    "--set", help="Override a config key: dotted KEY=VALUE, the value read as YAML (e.g. --set train.learning_rate=1e-4 "
    "--set method=mind); repeatable.")]


def _load(config: Path, sets: list[str] | None):
    """The validated config with the command line's ``--set`` overrides applied."""
    from cotdistill.config import load_config, parse_overrides

    return load_config(config, overrides=parse_overrides(sets or []))


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="YAML config file.")], sets: SetOption = []) -> None:
    """Validate a config file (including `train.trainer_args`, by building the TrainingArguments); print a summary."""
    import tempfile

    from cotdistill.checks import preflight
    from cotdistill.methods.registry import missing_roles
    from cotdistill.train.run import training_arguments

    cfg = _load(config, sets)
    preflight(cfg, str(config), echo=typer.echo)
    # a comparison's rows when the config has a compare section (the defaults of an absent one are no plan)
    rows = [cfg, *(cfg.for_row(r) for r in cfg.compare.methods if "compare" in cfg.model_fields_set)]
    problem = next((p for c in rows if (p := missing_roles(c))), None)
    if problem:
        raise CotdistillError(f"{config}: method: {problem}")
    for row in rows:
        with tempfile.TemporaryDirectory() as tmp:
            training_arguments(row, tmp, where=str(config))
    typer.echo(f"{config}: ok (method={cfg.method}, student={cfg.train.model}, teachers={len(cfg.teachers)})")


# ---- stage commands are registered below (one block per stage) ----


@app.command("synthesize")
def synthesize_cmd(
    config: Annotated[Path, typer.Argument(help="YAML config (data, teachers, synthesis sections).")],
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Run folder (default run.output_dir/run.name).")] = None,
    sets: SetOption = [],
) -> None:
    """Import `data.imports` and ask every teacher for every (question, perspective, sample) not yet stored.

    Resumable: finished keys are skipped, failed ones re-sent. The store is `<run_dir>/rationales`.
    """
    from cotdistill.teachers.importers import import_rationales
    from cotdistill.teachers.store import RationaleStore
    from cotdistill.teachers.synthesize import STORE_SUBDIR, synthesize

    cfg = _load(config, sets)
    rd = run_dir or cfg.run_dir()
    if not cfg.teachers and not cfg.data.imports:
        raise CotdistillError(f"{config}: teachers: no teachers and no data.imports: nothing to synthesize")
    from cotdistill.utils.runfolder import claim_folder

    claim_folder(rd, mark=False)  # imports below write into it: only a new, empty or cotdistill run folder
    for i, spec in enumerate(cfg.data.imports):
        s = import_rationales(spec.format, spec.path, RationaleStore(rd / STORE_SUBDIR),
                              where=f"{config}: data.imports[{i}].path", **spec.options)
        typer.echo(f"import {s['format']}: {s['added']} added, {s['skipped_existing']} already stored, "
                   f"unmatched {s['unmatched'] or 0}")
        claim_folder(rd)  # now holds cotdistill's store: mark it
    if cfg.teachers:
        summary = synthesize(cfg, rd)
        if summary["remaining"]:
            _echo_err(f"{summary['remaining']} request(s) not done ({summary['failed']} failed this run); "
                      "re-run the same command to retry them")
            raise typer.Exit(1)


@app.command("import")
def import_cmd(
    format: Annotated[str, typer.Argument(help="mcc-kd | eit | sbs | mentor-kd | store")],
    path: Annotated[Optional[Path], typer.Argument(help="The set's folder (default: its folder in the data dir).")] = None,
    store: Annotated[Path, typer.Option("--store", help="Rationale store folder to add records to.")] = ...,
    option: Annotated[list[str], typer.Option("--option", "-o", help="Importer option KEY=VALUE (YAML value), "
                                             "e.g. -o levels=[1,3] -o teachers=gpt-4o,llama-3-70b")] = [],
) -> None:
    """Import a public teacher-rationale set into a rationale store (importing twice adds nothing)."""
    import yaml

    from cotdistill.teachers.importers import import_rationales

    opts = {}
    for o in option:
        k, sep, v = o.partition("=")
        if not sep or not k.strip():
            raise CotdistillError(f"import: --option: expected KEY=VALUE, got {o!r}")
        opts[k.strip()] = yaml.safe_load(v)
    s = import_rationales(format, path, store, **opts)
    typer.echo(f"import {s['format']} from {s['path']}: read {s['read']}, added {s['added']}, "
               f"already stored {s['skipped_existing']}, unmatched {s['unmatched'] or 0}, "
               f"answer-correct {s['correct']}/{s['added']} -> {store}")


@app.command("curate")
def curate_cmd(
    config: Annotated[Path, typer.Argument(help="YAML config (its `curate` section is used).")],
    store: Annotated[Optional[Path], typer.Option("--store", help="Rationale store folder.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output dataset folder.")] = None,
    sets: SetOption = [],
) -> None:
    """Filter, normalise, dedup and sample the rationale store into a multi-path dataset (+ data card).

    Defaults: `<run_dir>/rationales` -> `<run_dir>/dataset`.
    """
    from cotdistill.curate import curate_store, load_data_card

    cfg = _load(config, sets)
    out_dir = curate_store(cfg, store or cfg.run_dir() / "rationales", out or cfg.run_dir() / "dataset")
    card = load_data_card(out_dir)
    splits = ", ".join(f"{s}: {v['questions']} questions / {v['paths']} paths" for s, v in card["splits"].items())
    typer.echo(f"{out_dir}: {splits}; labels by {card['label_scheme']} (see data_card.md)")


@app.command("train")
def train_cmd(
    config: Annotated[Path, typer.Argument(help="YAML config (train, method and data sections).")],
    dataset: Annotated[Optional[Path], typer.Option("--dataset", help="Path dataset (default <run_dir>/dataset).")] = None,
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Run folder (default run.output_dir/run.name).")] = None,
    no_resume: Annotated[bool, typer.Option("--no-resume", help="Ignore existing checkpoints.")] = False,
    sets: SetOption = [],
) -> None:
    """Train the student with `method` on a curated path dataset; resumes from the last checkpoint.

    Works under `accelerate launch -m cotdistill train ...` (configs/accelerate/*.yaml).
    """
    from cotdistill.train.dispatch import train_method
    from cotdistill.train.run import train

    cfg = _load(config, sets)
    rd = run_dir or cfg.run_dir()
    if no_resume or cfg.method not in ("mode", "edit"):
        out = train(cfg, dataset or rd / "dataset", rd, resume=not no_resume)
    else:  # multi-run methods (experts, Std-CoT init) resume stage by stage
        out = train_method(cfg, dataset or rd / "dataset", rd)
    typer.echo(f"student: {out}")


@app.command("compare")
def compare_cmd(
    config: Annotated[Path, typer.Argument(help="YAML config; `compare.methods` x `compare.seeds` are trained.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print every cell's plan and exit.")] = False,
    methods: Annotated[Optional[str], typer.Option(
        "--methods", help="Comma-separated subset of compare.methods to run now (one process per device); "
        "a final call without it writes the full table.")] = None,
    table: Annotated[bool, typer.Option(
        "--table", help="Train nothing: tabulate the finished cells and list the others as not run.")] = False,
    results: Annotated[Optional[Path], typer.Option(
        "--results", help="Also copy the table, data card and per-question outputs (no checkpoints) here, for "
        "readers to check (e.g. results/compare_cpu).")] = None,
    sets: SetOption = [],
) -> None:
    """Train and evaluate methods x seeds on the same curated data; write compare.md/json (papers' layout)."""
    from cotdistill.checks import preflight
    from cotdistill.compare import run_compare

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None
    cfg = _load(config, sets)
    preflight(cfg, str(config), echo=typer.echo)
    run_compare(cfg, dry_run=dry_run, echo=typer.echo, methods=chosen, table_only=table, results_dir=results)


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="YAML config with every stage.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit.")] = False,
    sets: SetOption = [],
) -> None:
    """Run every stage (rationales, curate, eval base, train, eval student, analyze, report).

    Stages whose output is complete and current are skipped; re-running after a crash resumes.
    """
    from cotdistill.checks import preflight
    from cotdistill.pipeline import run_pipeline

    cfg = _load(config, sets)
    preflight(cfg, str(config), echo=typer.echo)
    run_pipeline(cfg, dry_run=dry_run, echo=typer.echo)


@app.command("analyze")
def analyze_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (config.yaml, dynamics.jsonl, eval/<model>/...).")],
    models: Annotated[Optional[str], typer.Option(
        "--models", help="Eval tags to compare, optionally with a model: base=SPEC,distilled=SPEC or SPEC@ADAPTER_DIR.")] = None,
    n_questions: Annotated[Optional[int], typer.Option("--n-questions", min=3, help="Responses per model.")] = None,
    features: Annotated[Optional[str], typer.Option("--features", help="hidden_mean or sbert.")] = None,
    benchmark: Annotated[Optional[str], typer.Option("--benchmark", help="Eval benchmark whose responses to use.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Forward batch for hidden_mean.")] = 8,
) -> None:
    """Latent-space (PCA + DPMM), forgetting (accuracy, CKA) and training-dynamics analysis of a run.

    Writes RUN_DIR/analysis/metrics.json and figures; does what the run folder has inputs for.
    """
    from cotdistill.analysis.run import analyze_run

    if features is not None and features not in ("hidden_mean", "sbert"):
        raise CotdistillError(f"--features: {features!r}: expected hidden_mean or sbert")
    analyze_run(run_dir, models=models, n_questions=n_questions, features=features, benchmark=benchmark,
                batch_size=batch_size, echo=typer.echo)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Default RUN_DIR/report.html.")] = None,
) -> None:
    """Write one self-contained HTML report (config, data, training, evaluation, latent space, provenance)."""
    from cotdistill.report import write_report

    typer.echo(f"report: {write_report(run_dir, output)}")


@app.command("eval")
def eval_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="HF id, folder, .gguf, alias, or served model name.")],
    benchmarks: Annotated[str, typer.Option("--benchmarks", "-b", help="Comma list: gsm8k,svamp,jsonl:PATH,...")] = "gsm8k,svamp",
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="First N questions per benchmark.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Batch (hf) / requests in flight (openai).")] = 8,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Generation budget.")] = 2048,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Default runs/eval/<model-tag>.")] = None,
    backend: Annotated[str, typer.Option("--backend", help="hf | openai | vllm.")] = "hf",
    adapter: Annotated[Optional[str], typer.Option("--adapter", help="PEFT LoRA adapter folder.")] = None,
    base_url: Annotated[Optional[str], typer.Option("--base-url", help="openai backend endpoint (…/v1).")] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="Env var holding the API key.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto | float32 | bfloat16 | float16.")] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Generation and bootstrap seed.")] = 0,
    user_prefix: Annotated[Optional[str], typer.Option(
        "--user-prefix", help="Text opening the user turn (SbS students: 'explain: '). Default: the one the "
        "student's cotdistill_train.json records, else none.")] = None,
    rationale_nll: Annotated[Optional[str], typer.Option(
        "--rationale-nll", help="Also score held-out rationale NLL on SET = SOURCE:QUESTIONS (e.g. eit:svamp: EIT's "
        "rationales of the SVAMP test questions); `-b none` scores only that.")] = None,
    instruction: Annotated[Optional[str], typer.Option(
        "--instruction", help="Instruction after the question in the user turn ('' for none). Default: the one the "
        "student's cotdistill_train.json records (data.student_instruction), else the standard one.")] = None,
) -> None:
    """Zero-shot greedy evaluation (METHODS §5.2); resumable; writes <bench>.jsonl and summary.json."""
    from rich.console import Console
    from rich.table import Table

    from cotdistill.evaluate import model_tag, run_eval

    if backend not in ("hf", "openai", "vllm"):
        raise CotdistillError(f"--backend: {backend!r}: expected hf, openai or vllm")
    out = output or Path("runs") / "eval" / model_tag(model, adapter)
    if user_prefix is None:
        from cotdistill.evaluate.runner import recorded_user_prefix

        user_prefix = recorded_user_prefix(adapter or model)
    if instruction is None:
        from cotdistill.evaluate.runner import recorded_instruction

        instruction = recorded_instruction(adapter or model)  # None: the standard instruction
    if rationale_nll:
        from cotdistill.evaluate.rationale_nll import parse_set, run_rationale_nll

        nll = run_rationale_nll(model, parse_set(rationale_nll), out / "nll", adapter=adapter, user_prefix=user_prefix,
                                instruction=instruction, seed=seed)
        typer.echo(f"held-out rationale NLL on {nll['set']}: {nll['mean_nll']:.4f} "
                   f"[{nll['ci95'][0]:.4f}, {nll['ci95'][1]:.4f}] over {nll['n_questions']} questions "
                   f"({nll['n_rationales']} rationales) -> {out / 'nll'}")
        if benchmarks == "none":
            return
    res = run_eval(model, benchmarks.split(","), out, limit=limit, batch_size=batch_size,
                   max_new_tokens=max_new_tokens, backend=backend, adapter=adapter, base_url=base_url,
                   api_key_env=api_key_env, seed=seed, dtype=dtype, user_prefix=user_prefix, instruction=instruction)
    table = Table(title=f"{model_tag(model, adapter)} ({backend})")
    for col in ("benchmark", "n", "accuracy", "95% CI", "truncated"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for b, s in res.items():
        table.add_row(b, str(s["n"]), f"{s['accuracy']:.3f}", f"[{s['ci95'][0]:.3f}, {s['ci95'][1]:.3f}]",
                      str(s["truncated"]))
    Console().print(table)
    typer.echo(f"results: {out}")


@app.command("serve")
def serve_cmd(
    model: Annotated[str, typer.Argument(help="HF id, folder, .gguf or alias to serve.")],
    host: Annotated[str, typer.Option("--host", help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port (0 = any free port).")] = 8000,
    adapter: Annotated[Optional[str], typer.Option("--adapter", help="PEFT LoRA adapter folder.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="auto | float32 | bfloat16 | float16.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Max concurrent requests batched.")] = 8,
    reasoning_parser: Annotated[bool, typer.Option(
        "--reasoning-parser", help="Return a leading <think>...</think> block as message.reasoning_content (like "
        "vLLM's and llama.cpp's reasoning parsers).")] = False,
) -> None:
    """Serve a local model over an OpenAI-compatible API (/v1/chat/completions) until Ctrl-C."""
    import time

    from cotdistill.utils.openai_server import start_server

    handle = start_server(model, host=host, port=port, adapter=adapter, dtype=dtype, batch_size=batch_size,
                          reasoning_parser=reasoning_parser)
    typer.echo(f"serving {model} at {handle.url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    finally:
        handle.stop()


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder (its dataset/ is exported) or a curated dataset folder.")],
    format: Annotated[str, typer.Option("--format", "-f", help="trl | messages | sharegpt | parquet.")] = "trl",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default RUN_DIR/export/FORMAT).")] = None,
) -> None:
    """Export the curated path dataset for TRL, LLaMA-Factory or axolotl: one row per path, with a dataset card.

    The prompt is the student's (question + data.student_instruction from the run's config.yaml); the answer is
    the path's rationale and the shared answer line. `datasets.load_dataset(OUT)` reads the folder.
    """
    from cotdistill.curate.export import MARKER, export_dataset

    folder = export_dataset(run_dir, format, out)
    import json

    n = json.loads((folder / MARKER).read_text())["paths"]
    typer.echo(f"{folder}: {format}, " + ", ".join(f"{s} {k} paths" for s, k in n.items()) + " (README.md: dataset card)")


@app.command("push")
def push_cmd(
    path: Annotated[Path, typer.Argument(help="A run folder (its student/), a student folder, or an export folder.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub repo, `user/name` (created if missing).")],
    public: Annotated[bool, typer.Option("--public", help="Create the repo public (default private).")] = False,
    message: Annotated[Optional[str], typer.Option("--message", "-m", help="Commit message.")] = None,
) -> None:
    """Upload a student (model repo) or an export (dataset repo) to the Hugging Face Hub (token: HF_TOKEN or
    `hf auth login`)."""
    from cotdistill.curate.export import MARKER
    from cotdistill.utils.hub import push_folder

    if (path / MARKER).is_file():
        folder, kind = path, "dataset"
    elif (path / "student").is_dir():
        folder, kind = path / "student", "model"
    elif (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
        folder, kind = path, "model"
    else:
        raise CotdistillError(f"{path}: not a run folder (student/), a model folder or a `cotdistill export` folder")
    url = push_folder(folder, repo_id, repo_type=kind, private=not public, commit_message=message,
                      where="--repo-id")
    typer.echo(f"pushed {folder} to {kind} repo {repo_id}: {url}")


_GLOBAL_FLAGS = re.compile(r"^(-v+|--verbose|--log-level(=.*)?)$")


def _hoist_global_options(argv: list[str]) -> list[str]:
    """``-v`` / ``--verbose`` / ``--log-level L`` given after the command moved in front of it.

    click parses the root callback's options only before the command name; users write them anywhere
    (``cotdistill train c.yaml -v``). Tokens after ``--`` are left alone.
    """
    front, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            rest += argv[i:]
            break
        if _GLOBAL_FLAGS.match(a):
            front.append(a)
            if a == "--log-level" and i + 1 < len(argv):
                front.append(argv[i + 1])
                i += 1
        else:
            rest.append(a)
        i += 1
    return front + rest


def main() -> None:
    """Console entry point: run the app, turning CotdistillError into one line and exit code 2."""
    try:
        rc = app(args=_hoist_global_options(sys.argv[1:]), standalone_mode=False)
    except CotdistillError as e:
        _echo_err(str(e))
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        _echo_err("interrupted")
        sys.exit(130)
    except Exception as e:
        # click (vendored by newer typer) usage errors and exits carry their own exit codes
        if type(e).__name__ == "Exit" and hasattr(e, "exit_code"):
            sys.exit(e.exit_code)
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise
    # non-standalone typer returns (not raises) the code of `typer.Exit(n)` and of Ctrl-C (130)
    if isinstance(rc, int) and rc:
        if rc == 130:
            _echo_err("interrupted")
        sys.exit(rc)


if __name__ == "__main__":
    main()
