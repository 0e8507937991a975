"""The small contract every evaluation backend implements.

A backend turns chat requests into greedy completions. ``generate`` yields *lists* of outputs as
each batch (hf, vllm) or group of finished requests (openai) completes, so the runner can append
and flush them to the per-sample JSONL right away: a crash loses at most one batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class EvalRequest:
    """One prompt: ``key`` (the example id) and the chat ``messages`` (list of role/content dicts)."""

    key: str
    messages: list[dict[str, str]]


@dataclass
class EvalOutput:
    """One completion: text without special tokens, number of generated tokens, and why it stopped
    (``stop`` = end-of-turn reached, ``length`` = hit ``max_new_tokens``, ``error`` = request failed)."""

    key: str
    text: str
    n_tokens: int = 0
    finish_reason: str = "stop"
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EvalBackend(ABC):
    """Greedy generation for evaluation. Subclasses set :attr:`name` and fill :meth:`provenance`."""

    name: str = "base"

    @abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Keys ``model``, ``model_sha``, ``adapter``, ``adapter_sha``, ``chat_template_sha``, ``dtype``
        (None where the backend cannot know them, e.g. a remote server's weights)."""

    @abstractmethod
    def generate(self, requests: list[EvalRequest], *, max_new_tokens: int, seed: int = 0) -> Iterator[list[EvalOutput]]:
        """Greedy completions for ``requests``, yielded in chunks as they finish (any order)."""

    def close(self) -> None:
        """Release the model / client."""
