"""The rationale store: one append-only JSONL file of teacher records (DESIGN.md "Records").

- Appends go through :func:`cotdistill.utils.io.append_jsonl` (whole lines, flushed and fsynced), under an
  advisory file lock so two writers never interleave.
- :class:`StoreWriter` groups appends (one write + fsync per ``flush_every`` records or ``flush_interval_s``
  seconds, and on close): a SIGKILL loses at most the unflushed batch, never a line already flushed, and a
  resumed run re-creates exactly the lost keys.
- A crash can leave one torn last line. Readers skip it; the first append of a new writer moves the
  fragment to ``torn/`` and truncates it, so later lines never follow a broken one.
- Several records may share a key (a failed request, then its retry). The latest ``ok`` record of a key
  wins; a key without any ``ok`` record is represented by its latest ``error`` record.
- Raw teacher text (``raw_response``) is kept apart from parsing (``parsed_answer``, ``correct``), so a new
  answer parser never forces regeneration.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.utils.io import append_jsonl, read_jsonl, stable_hash

RECORDS_FILE = "records.jsonl"

# fields every record carries (INTERFACES.md); importers and synthesis fill all of them
RECORD_FIELDS = (
    "key", "question_id", "question", "gold", "kind", "source", "teacher", "teacher_model", "backend",
    "perspective", "sample_idx", "prompt", "prompt_version", "gen_params", "raw_response", "parsed_answer",
    "correct", "usage", "status", "error", "created_at",
)


def record_key(
    *,
    question_id: str,
    backend: str,
    teacher_model: str,
    perspective: str,
    prompt_version: str | None,
    gen_params: dict[str, Any],
    seed: int | None,
    sample_idx: int,
    prompt_hash: str | None = None,
) -> str:
    """The record key: a stable hash of everything that determines a teacher output.

    (question id, backend + model, perspective id, prompt template version and rendered-prompt hash,
    sampling parameters, seed, sample index). The prompt hash makes edits to the system prompt or to a
    user-defined perspective's style line produce new keys instead of silently reusing old text.
    """
    return stable_hash(
        {
            "question_id": question_id, "backend": backend, "model": teacher_model, "perspective": perspective,
            "prompt_version": prompt_version, "prompt_hash": prompt_hash, "gen_params": gen_params,
            "seed": seed, "sample_idx": int(sample_idx),
        },
        length=24,
    )


class RationaleStore:
    """Append-only store of rationale records in ``dir/records.jsonl``."""

    def __init__(self, dir: str | os.PathLike):
        self.dir = Path(dir)
        self.path = self.dir / RECORDS_FILE
        self._repaired = False

    def __repr__(self) -> str:
        return f"RationaleStore({str(self.dir)!r})"

    # ------------------------------------------------------------------ writing

    @contextmanager
    def _locked(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _repair_tail(self) -> None:
        """Move a torn (unterminated) last line aside so the next append starts on a fresh line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            # find the start of the torn line
            block = min(size, 1 << 20)
            pos = size
            tail = b""
            while pos > 0:
                start = max(0, pos - block)
                f.seek(start)
                chunk = f.read(pos - start)
                tail = chunk + tail
                nl = chunk.rfind(b"\n")
                if nl >= 0:
                    cut = start + nl + 1
                    break
                pos = start
            else:
                cut = 0
            f.seek(cut)
            fragment = f.read()
            torn = self.dir / "torn"
            torn.mkdir(exist_ok=True)
            (torn / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.txt").write_bytes(fragment)
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append records (each with a ``key``) in one flushed, fsynced write. Returns the count written."""
        records = list(records)
        for r in records:
            if not r.get("key"):
                raise CotdistillError(f"{self.path}: record without a key (question_id={r.get('question_id')})")
        if not records:
            return 0
        with self._locked():
            if not self._repaired:
                self._repair_tail()
                self._repaired = True
            return append_jsonl(self.path, records, fsync=True)

    # ------------------------------------------------------------------ reading

    def iter_raw(self) -> Iterator[dict[str, Any]]:
        """Every line of the file in order (a torn last line is skipped); a line whose key is not text is damage."""
        for r in read_jsonl(self.path):
            if r.get("key") is not None and not isinstance(r["key"], str):
                raise CotdistillError(f"{self.path}: record key {r['key']!r}: not a string; the store is damaged")
            yield r

    def latest(self) -> dict[str, dict[str, Any]]:
        """key -> winning record (latest ok, else latest error), in order of each key's first appearance."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.iter_raw():
            k = r.get("key")
            if not k:
                continue
            prev = out.get(k)
            if prev is None or r.get("status") == "ok" or prev.get("status") != "ok":
                out[k] = r
        return out

    def iter_records(self, status: str | None = "ok") -> Iterator[dict[str, Any]]:
        """Winning record of each key, filtered by ``status`` (``"ok"``, ``"error"``, or None for all)."""
        for r in self.latest().values():
            if status is None or r.get("status") == status:
                yield r

    def done_keys(self) -> set[str]:
        """Keys with an ``ok`` record (skipped by a resumed run)."""
        return {k for k, r in self.latest().items() if r.get("status") == "ok"}

    def failed_keys(self) -> set[str]:
        """Keys whose requests failed and never succeeded (re-sent by the next run)."""
        return {k for k, r in self.latest().items() if r.get("status") != "ok"}

    def stats(self) -> dict[str, Any]:
        """Counts: lines, keys, ok, failed, correct/incorrect/unscored, and ok records per teacher/perspective."""
        lines = 0
        latest: dict[str, dict[str, Any]] = {}
        for r in self.iter_raw():
            lines += 1
            k = r.get("key")
            prev = latest.get(k)
            if prev is None or r.get("status") == "ok" or prev.get("status") != "ok":
                latest[k] = r
        ok = [r for r in latest.values() if r.get("status") == "ok"]
        return {
            "path": str(self.path),
            "lines": lines,
            "keys": len(latest),
            "ok": len(ok),
            "failed": len(latest) - len(ok),
            "correct": sum(r.get("correct") is True for r in ok),
            "incorrect": sum(r.get("correct") is False for r in ok),
            "unscored": sum(r.get("correct") is None for r in ok),
            "questions": len({r.get("question_id") for r in ok}),
            "by_teacher": dict(Counter(str(r.get("teacher")) for r in ok)),
            "by_perspective": dict(Counter(str(r.get("perspective")) for r in ok)),
        }

    def __len__(self) -> int:
        return len(self.done_keys())


class StoreWriter:
    """Group commit for :meth:`RationaleStore.append`: buffer records, write + fsync them as one batch.

    A batch is flushed when it holds ``flush_every`` records, when its oldest record is ``flush_interval_s``
    seconds old (the caller polls :meth:`due_in`; :meth:`add` also checks), and on :meth:`close` / leaving the
    ``with`` block (also on an exception or Ctrl-C). A SIGKILL therefore loses at most the unflushed batch:
    fewer than ``flush_every`` records, all younger than ``flush_interval_s``. Each flush is one
    :meth:`RationaleStore.append`, so lines are whole; a crash inside the write leaves at most one torn last
    line, which readers skip and the next writer moves aside. ``flush_every=1`` is one fsync per record.
    """

    def __init__(self, store: RationaleStore, *, flush_every: int = 64, flush_interval_s: float = 1.0):
        if flush_every < 1 or flush_interval_s < 0:
            raise ValueError("flush_every must be >= 1 and flush_interval_s >= 0")
        self.store = store
        self.flush_every = int(flush_every)
        self.flush_interval_s = float(flush_interval_s)
        self._pending: list[dict[str, Any]] = []
        self._oldest = 0.0
        self.written = 0  # records flushed so far
        self.flushes = 0

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Records buffered but not yet on disk."""
        return len(self._pending)

    def add(self, record: dict[str, Any]) -> None:
        """Buffer one record (must carry a ``key``); flush if the batch is full or old enough."""
        if not record.get("key"):
            raise CotdistillError(
                f"{self.store.path}: record without a key (question_id={record.get('question_id')})"
            )
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append(record)
        if len(self._pending) >= self.flush_every or self.due_in() == 0.0:
            self.flush()

    def due_in(self) -> float | None:
        """Seconds until the time-based flush is due (0.0: now); None when nothing is buffered."""
        if not self._pending:
            return None
        return max(0.0, self._oldest + self.flush_interval_s - time.monotonic())

    def flush(self) -> int:
        """Write and fsync the buffered records as one append; returns how many were written."""
        if not self._pending:
            return 0
        # taken before writing: a failed write raises and is never retried here (a retry could duplicate
        # lines that did land); its keys are simply not in the store, so the next run re-sends them
        batch, self._pending = self._pending, []
        n = self.store.append(batch)
        self.written += n
        self.flushes += 1
        return n

    def close(self) -> None:
        """Flush what is buffered."""
        self.flush()
