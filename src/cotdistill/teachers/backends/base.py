"""The teacher backend interface: requests in, results out (in any order, each tagged with its key).

A backend has a stable ``name`` (the backend kind, part of record keys via the record builder) and
``generate(requests) -> Iterator[GenResult]``. It never raises for a single failed request: the failure
comes back as a result with ``error`` set, so the caller can record it and retry it on the next run.
Only configuration problems (missing API key, missing package) raise :class:`CotdistillError`.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any



@dataclass
class GenRequest:
    """One chat completion to make. ``seed`` is per request (derived from the teacher seed and key)."""

    key: str
    messages: list[dict[str, Any]]
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 2048
    seed: int | None = None


@dataclass
class GenResult:
    """The outcome of one request: ``text`` on success, ``error`` (one line) on failure.

    ``reasoning`` is a chain of thought the server returned apart from ``text`` (a reasoning parser's
    ``reasoning_content``); ``<think>`` blocks still inside ``text`` are split off when the record is stored.
    """

    key: str
    text: str | None = None
    reasoning: str | None = None
    error: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    finish_reason: str | None = None
    attempts: int = 1
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the request produced text."""
        return self.error is None and self.text is not None


class TeacherBackend(ABC):
    """Base class of teacher backends; see the module docstring for the contract."""

    name: str = "base"

    def __init__(self) -> None:
        self.stop_event = threading.Event()  # set by the caller (Ctrl-C) to stop sending new requests

    @abstractmethod
    def generate(self, requests: list[GenRequest]) -> Iterator[GenResult]:
        """Yield one result per request as each finishes (any order)."""

    def provenance(self) -> dict[str, Any]:
        """Backend facts stored with every record (never secrets)."""
        return {"backend": self.name}

    def close(self) -> None:
        """Release clients, models or engines."""
