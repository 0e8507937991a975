"""The `cotdistill` command line. Each command is thin: it parses options and calls one stage function.

Stage modules are imported inside the commands so that `cotdistill --help` stays fast.
Every user-facing error is a :class:`CotdistillError`, printed as one line with a non-zero exit.
"""

from __future__ import annotations

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
def _root() -> None:
    """Distill chain-of-thought reasoning from teacher LLMs into small students."""
    from cotdistill.utils.redact import install_log_redaction

    install_log_redaction()  # no credential in any log line, whichever library logs it


def _echo_err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


@app.command()
def validate(config: Annotated[Path, typer.Argument(help="YAML config file.")]) -> None:
    """Validate a config file; print the resolved config's sections."""
    from cotdistill.config import load_config

    from cotdistill.checks import preflight

    cfg = load_config(config)
    preflight(cfg, str(config), echo=typer.echo)
    typer.echo(f"{config}: ok (method={cfg.method}, student={cfg.train.model}, teachers={len(cfg.teachers)})")


# ---- stage commands are registered below (one block per stage) ----


@app.command("synthesize")
def synthesize_cmd(
    config: Annotated[Path, typer.Argument(help="YAML config (data, teachers, synthesis sections).")],
    run_dir: Annotated[Optional[Path], typer.Option("--run-dir", help="Run folder (default run.output_dir/run.name).")] = None,
) -> None:
    """Import `data.imports` and ask every teacher for every (question, perspective, sample) not yet stored.

    Resumable: finished keys are skipped, failed ones re-sent. The store is `<run_dir>/rationales`.
    """
    from cotdistill.config import load_config
    from cotdistill.teachers.importers import import_rationales
    from cotdistill.teachers.store import RationaleStore
    from cotdistill.teachers.synthesize import STORE_SUBDIR, synthesize

    cfg = load_config(config)
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
) -> None:
    """Filter, normalise, dedup and sample the rationale store into a multi-path dataset (+ data card).

    Defaults: `<run_dir>/rationales` -> `<run_dir>/dataset`.
    """
    from cotdistill.config import load_config
    from cotdistill.curate import curate_store, load_data_card

    cfg = load_config(config)
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
) -> None:
    """Train the student with `method` on a curated path dataset; resumes from the last checkpoint.

    Works under `accelerate launch -m cotdistill train ...` (configs/accelerate/*.yaml).
    """
    from cotdistill.config import load_config
    from cotdistill.train.run import train, train_method

    cfg = load_config(config)
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
) -> None:
    """Train and evaluate methods x seeds on the same curated data; write compare.md/json (papers' layout)."""
    from cotdistill.compare import run_compare
    from cotdistill.config import load_config

    from cotdistill.checks import preflight

    chosen = [m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None
    cfg = load_config(config)
    preflight(cfg, str(config), echo=typer.echo)
    run_compare(cfg, dry_run=dry_run, echo=typer.echo, methods=chosen)


@app.command("run")
def run_cmd(
    config: Annotated[Path, typer.Argument(help="YAML config with every stage.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit.")] = False,
) -> None:
    """Run every stage (rationales, curate, eval base, train, eval student, analyze, report).

    Stages whose output is complete and current are skipped; re-running after a crash resumes.
    """
    from cotdistill.checks import preflight
    from cotdistill.config import load_config
    from cotdistill.pipeline import run_pipeline

    cfg = load_config(config)
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
    res = run_eval(model, benchmarks.split(","), out, limit=limit, batch_size=batch_size,
                   max_new_tokens=max_new_tokens, backend=backend, adapter=adapter, base_url=base_url,
                   api_key_env=api_key_env, seed=seed, dtype=dtype, user_prefix=user_prefix)
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
) -> None:
    """Serve a local model over an OpenAI-compatible API (/v1/chat/completions) until Ctrl-C."""
    import time

    from cotdistill.utils.openai_server import start_server

    handle = start_server(model, host=host, port=port, adapter=adapter, dtype=dtype, batch_size=batch_size)
    typer.echo(f"serving {model} at {handle.url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    finally:
        handle.stop()


def main() -> None:
    """Console entry point: run the app, turning CotdistillError into one line and exit code 2."""
    try:
        rc = app(standalone_mode=False)
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
