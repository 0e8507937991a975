"""Validate-time checks: what a stage would reject, ``validate`` (and ``run`` before its first stage) rejects first.

Two layers, each error one line ``FILE: dotted.key: message``:

* :func:`check_raw_yaml` / :func:`check_config` — cheap, run by :func:`cotdistill.config.load_config` on every
  load: YAML alias expansion (an alias bomb), non-finite numbers anywhere (``.inf``/``.nan``, also inside free-form
  mappings such as ``data.imports[].options``), the run folder name, empty or duplicated lists, importer
  options, per-method ``train`` overrides, env-var names where a key might be pasted.
* :func:`preflight` — the machine: the files the config names exist (``jsonl:`` benchmarks are read and checked
  row by row, as evaluation would), and, from the student model's config (not its weights),
  ``lora.target_modules`` must match a module, ``train.max_seq_len`` must fit the model's context, and the sizes
  must fit in this machine's memory. ``cotdistill validate``, ``run`` and ``compare`` call it; a Hub id that is
  not available locally is skipped with a note.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cotdistill.errors import CotdistillError

MAX_YAML_NODES = 100_000  # nodes after alias expansion; real configs have a few hundred


# --------------------------------------------------------------------------- raw YAML


def yaml_expanded_size(node, limit: int = MAX_YAML_NODES) -> int:
    """Number of YAML nodes ``node`` stands for once every alias is expanded (stops counting past ``limit``).

    PyYAML shares an aliased node instead of copying it, so loading a "billion laughs" document is cheap, but
    everything that walks the result (validation, dumping) visits each reference: the expanded size is what
    costs memory and time. Counted with memoisation over the node graph, so the count itself stays cheap.
    """
    memo: dict[int, int] = {}

    def size(n) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        memo[key] = limit + 1  # a node reached again while being counted: a recursive alias, refuse it
        total = 1
        if isinstance(n.value, list):
            for item in n.value:
                for part in (item if isinstance(item, tuple) else (item,)):
                    total += size(part)
                    if total > limit:
                        break
                if total > limit:
                    break
        memo[key] = min(total, limit + 1)
        return memo[key]

    return size(node)


def _walk(value: Any, dotted: str):
    """(dotted key, value) for every leaf of a parsed YAML mapping/list."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{dotted}.{k}" if dotted else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{dotted}[{i}]")
    else:
        yield dotted, value


def check_raw_yaml(raw: Any, source: str) -> None:
    """Refuse a non-finite number (``.inf``, ``.nan``, ``1e999``) anywhere in the parsed YAML, naming its key.

    Pydantic's ``allow_inf_nan=False`` covers the typed float keys; this covers the free-form mappings too
    (``<method>.train`` overrides, importer options) and names the key the same way for all of them.
    """
    for dotted, value in _walk(raw, ""):
        if isinstance(value, float) and not math.isfinite(value):
            raise CotdistillError(f"{source}: {dotted}: {value!r} is not a finite number")


# --------------------------------------------------------------------------- loaded config


def _check_run_name(name: str, source: str) -> None:
    """``run.name`` is a plain folder name (``compare`` cells add ``/<method>-s<seed>``, so each ``/``-separated
    part must be one): never empty, ``.``, ``..``, absolute or with a backslash, so the run folder is always a new
    folder under ``run.output_dir`` (``name: ""`` once wrote into the folder holding the user's config.yaml)."""
    parts = name.split("/")
    bad = any(not p.strip() or p in (".", "..") or p != p.strip() or "\\" in p or "\0" in p for p in parts)
    if bad:
        raise CotdistillError(f"{source}: run.name: {name!r} is not a plain folder name (not empty, '.', '..', "
                              "absolute, nor with '\\' or surrounding spaces); the run folder is "
                              "run.output_dir/run.name")


def _jsonl_specs(cfg) -> list[tuple[str, str]]:
    """(dotted key, spec) of every benchmark spec a stage of this config will read."""
    out = []
    groups = [("eval.benchmarks", cfg.eval.benchmarks), ("curate.eval_guard", cfg.curate.eval_guard)]
    if cfg.teachers:
        groups.append(("data.question_pool", cfg.data.question_pool))
    if cfg.analysis.enabled:
        groups.append(("analysis.ood_benchmarks", cfg.analysis.ood_benchmarks))
    for dotted, specs in groups:
        out += [(f"{dotted}[{i}]", s) for i, s in enumerate(specs)]
    return out


def _check_benchmark_files(cfg, source: str) -> None:
    """``jsonl:`` files exist and every row is valid (as evaluation would load them); built-in benchmarks'
    files exist in the data dir when there is one."""
    from cotdistill.data.registry import GPQA_CSV, benchmark_info, canonical_name, load_jsonl_benchmark
    from cotdistill.utils.paths import data_dir

    root = None
    for dotted, spec in _jsonl_specs(cfg):
        name = canonical_name(spec)
        if name.startswith("jsonl:"):
            try:
                load_jsonl_benchmark(name[6:], name)
            except CotdistillError as e:
                raise CotdistillError(f"{source}: {dotted}: {e}") from None
            continue
        root = root or data_dir(required=False)
        if root is None:
            continue  # no data dir: the Hub is used (checked when it is read)
        for rel in benchmark_info(name).local.split("+"):
            if not (root / rel).is_file():
                hint = " (GPQA Diamond is not shipped: see gpqa_diamond/README.md)" if rel == GPQA_CSV else ""
                raise CotdistillError(f"{source}: {dotted}: {root / rel}: file not found for benchmark {name}{hint}")


def check_config(cfg, source: str) -> None:
    """Cross-key and file checks on a validated :class:`~cotdistill.config.Config` (see module docstring)."""
    from cotdistill.config import METHOD_NAMES
    from cotdistill.teachers.importers import check_import_options
    from cotdistill.utils.redact import check_env_var_name

    _check_run_name(cfg.run.name, source)
    if not cfg.eval.benchmarks:
        raise CotdistillError(f"{source}: eval.benchmarks: empty; name at least one benchmark to evaluate on")
    if cfg.teachers and not cfg.data.question_pool:
        raise CotdistillError(f"{source}: data.question_pool: empty, so the teachers would get no question")
    for dotted, values in (("compare.methods", cfg.compare.methods), ("compare.seeds", cfg.compare.seeds)):
        if not values:
            raise CotdistillError(f"{source}: {dotted}: empty")
        dup = sorted({v for v in values if values.count(v) > 1}, key=str)
        if dup:
            raise CotdistillError(f"{source}: {dotted}: {dup} given more than once (a cell would be counted twice "
                                  "and its copies pooled as if independent)")
    for i, t in enumerate(cfg.teachers):
        try:
            check_env_var_name(t.api_key_env, f"teachers[{i}].api_key_env")
        except ValueError as e:
            raise CotdistillError(f"{source}: {e}") from None
    try:
        check_env_var_name(cfg.eval.api_key_env, "eval.api_key_env")
    except ValueError as e:
        raise CotdistillError(f"{source}: {e}") from None
    for i, spec in enumerate(cfg.data.imports):
        check_import_options(spec.format, spec.options, f"{source}: data.imports[{i}].options")
    for row in dict.fromkeys([cfg.method, *cfg.compare.methods]):
        method = cfg.compare.method_of(row)
        if method in METHOD_NAMES:
            try:
                (cfg if row == cfg.method else cfg.for_row(row)).effective_train(method)
            except CotdistillError as e:
                raise CotdistillError(f"{source}: {str(e).removeprefix('config: ')}") from None
    diff = cfg.curate.difficulty
    if diff.criterion in ("given", "student_greedy_fail") and diff.hard_ids_file is None:
        raise CotdistillError(f"{source}: curate.difficulty.hard_ids_file: required for criterion {diff.criterion}")


def check_files(cfg, source: str) -> None:
    """The files and folders the config names exist (and ``jsonl:`` benchmarks are valid row by row)."""
    for i, spec in enumerate(cfg.data.imports):
        if spec.path is not None and not Path(spec.path).expanduser().exists():
            raise CotdistillError(f"{source}: data.imports[{i}].path: {spec.path}: not found")
    for row in dict.fromkeys([cfg.method, *cfg.compare.methods]):
        method = cfg.compare.method_of(row)
        tc = (cfg if row == cfg.method else cfg.for_row(row)).effective_train(method)
        if tc.init_adapter is not None and not Path(tc.init_adapter).expanduser().is_dir():
            raise CotdistillError(f"{source}: {method}.train.init_adapter: {tc.init_adapter}: folder not found")
    diff = cfg.curate.difficulty
    if diff.criterion in ("given", "student_greedy_fail") and not Path(diff.hard_ids_file).expanduser().is_file():
        raise CotdistillError(f"{source}: curate.difficulty.hard_ids_file: {diff.hard_ids_file}: file not found")
    _check_benchmark_files(cfg, source)


# --------------------------------------------------------------------------- model-dependent (preflight)


def _total_memory_bytes() -> tuple[int, str]:
    """(bytes, what) of the memory training and evaluation can use: the first GPU's, else the machine's RAM."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory, "GPU memory"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "RAM"


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def lora_target_matches(module_names: list[str], target: str) -> bool:
    """peft's rule for one ``target_modules`` entry: the full module name, or its last dotted parts."""
    if target == "all-linear":
        return True
    return any(n == target or n.endswith("." + target) for n in module_names)


def estimate_train_bytes(n_params: int, tc, vocab: int, n_paths: int = 8) -> int:
    """Lower bound of training memory: weights (+ gradients and AdamW moments for full fine-tuning, 16 B/param;
    frozen fp32 weights for LoRA, 4 B/param) plus the fp32 logits and their gradient of one forward chunk
    (``questions_per_step`` x ``min(paths_micro_batch, n_paths)`` rows of ``max_seq_len`` x vocab)."""
    weights = n_params * (16 if tc.finetune == "full" else 4)
    rows = tc.questions_per_step * min(tc.paths_micro_batch, n_paths)
    return weights + 2 * 4 * rows * tc.max_seq_len * vocab


def preflight(cfg, source: str, echo: Callable[[str], None] = print) -> None:
    """Files (:func:`check_files`) and model-dependent checks (module docstring). The student is built on the
    meta device: no weights are read."""
    from cotdistill.models import _looks_like_path, model_context, resolve_model_path

    check_files(cfg, source)
    tc = cfg.effective_train()
    try:
        path = resolve_model_path(tc.model)
    except CotdistillError:
        if _looks_like_path(tc.model) or tc.model.lower() in _aliases():
            raise
        echo(f"note: {tc.model}: not available locally; the model checks run when training starts")
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        mcfg = AutoConfig.from_pretrained(path)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(mcfg)
    except Exception as e:  # noqa: BLE001 - an unreadable/unknown config is a one-line user error
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CotdistillError(f"{source}: train.model: {path}: cannot read the model's config ({first})") from None
    names = [n for n, _ in model.named_modules() if n]
    if tc.finetune == "lora" and tc.init_adapter is None:
        missing = [t for t in tc.lora.target_modules if not lora_target_matches(names, t)]
        if missing:
            leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                             if isinstance(m, torch.nn.Linear)})
            raise CotdistillError(f"{source}: train.lora.target_modules: {missing} match no module of {tc.model} "
                                  f"(its linear layers: {', '.join(leaves)})")
    ctx = model_context(mcfg)
    if ctx is not None and tc.max_seq_len > ctx:
        raise CotdistillError(f"{source}: train.max_seq_len: {tc.max_seq_len} is longer than the context of "
                              f"{tc.model} ({ctx} tokens)")
    if ctx is not None and cfg.eval.max_new_tokens >= ctx:
        echo(f"note: eval.max_new_tokens {cfg.eval.max_new_tokens} >= the context of {tc.model} ({ctx}); "
             "generation stops at the context")
    n_params = sum(p.numel() for p in model.parameters())
    vocab = int(getattr(mcfg, "vocab_size", 0) or 0)
    total, what = _total_memory_bytes()
    need = estimate_train_bytes(n_params, tc, vocab)
    if cfg.method == "mind":
        d = cfg.mind.metanet.d_model
        need += 16 * 12 * d * d  # a transformer-block-sized MetaNet with AdamW state
    if need > total:
        raise CotdistillError(
            f"{source}: train: needs at least {_human(need)} ({n_params / 1e6:.0f}M parameters, {tc.finetune}, "
            f"questions_per_step {tc.questions_per_step} x paths_micro_batch {tc.paths_micro_batch} x "
            f"max_seq_len {tc.max_seq_len}) but this machine has {_human(total)} of {what}; lower those sizes")
    hidden = int(getattr(mcfg, "hidden_size", 0) or 0)
    layers = int(getattr(mcfg, "num_hidden_layers", 0) or 0)
    kv_heads = int(getattr(mcfg, "num_key_value_heads", 0) or getattr(mcfg, "num_attention_heads", 0) or 0)
    heads = int(getattr(mcfg, "num_attention_heads", 0) or 1)
    head_dim = int(getattr(mcfg, "head_dim", 0) or (hidden // heads if heads else 0))
    tokens = min(ctx or cfg.eval.max_new_tokens, cfg.eval.max_new_tokens + 1024)
    kv = 2 * 2 * layers * kv_heads * head_dim * tokens * cfg.eval.batch_size  # K and V, 2-byte dtypes
    if cfg.eval.backend == "hf" and 2 * n_params + kv > total:
        raise CotdistillError(f"{source}: eval.batch_size: {cfg.eval.batch_size} sequences of up to {tokens} tokens "
                              f"need about {_human(2 * n_params + kv)} but this machine has {_human(total)} of {what}")


def _aliases() -> set[str]:
    from cotdistill.models import ALIASES

    return set(ALIASES)
