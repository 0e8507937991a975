"""Safe file writing: atomic replaces, flushed appends, and refusal to clobber finished work."""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cotdistill.errors import CotdistillError
from cotdistill.utils.redact import redact_text

_UMASK = os.umask(0)
os.umask(_UMASK)

# write errors that mean "no room": a full disk, a full quota, a file-size limit (ulimit -f / RLIMIT_FSIZE)
_NO_SPACE = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file size limit reached"}


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old or the new file, never half of one.

    URL credentials and key-shaped tokens are masked first (:mod:`cotdistill.utils.redact`): every file
    cotdistill writes goes through these helpers, so no secret reaches disk whatever form the config gave it.
    """
    text = redact_text(text)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode a plain open() would
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            raise CotdistillError(f"{path}: write failed: {_NO_SPACE[e.errno]} ({os.strerror(e.errno)}); "
                                  "the previous file is unchanged") from None
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    """Atomically write ``obj`` as pretty JSON (keys kept in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, records: Iterable[dict], fsync: bool = True) -> int:
    """Append records as JSON lines in one write, flushed (and fsynced) before returning.

    Each call writes whole lines only, so a crash leaves at most one torn last line, which
    :func:`read_jsonl` skips. A write that fails (disk full, file-size limit, I/O error) is undone:
    the file is cut back to its size before the call, so no partial line stays behind; a full disk
    or quota, or a file-size limit, becomes a one-line :class:`CotdistillError` naming the file.
    Returns the number of records written. Credentials are masked as in :func:`atomic_write_text`.
    """
    lines = [redact_text(json.dumps(r, ensure_ascii=False, default=str)) + "\n" for r in records]
    if not lines:
        return 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size0 = path.stat().st_size if path.exists() else 0
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write("".join(lines))
            f.flush()
            if fsync:
                os.fsync(f.fileno())
    except OSError as e:
        try:  # the kernel may have taken part of the write: cut it off (shrinking needs no space)
            os.truncate(path, size0)
        except OSError:
            pass
        if e.errno in _NO_SPACE:
            raise CotdistillError(
                f"{path}: write failed: {_NO_SPACE[e.errno]} ({os.strerror(e.errno)}); nothing partial was "
                "kept: free space (or raise the limit) and re-run the same command to resume"
            ) from None
        raise
    return len(lines)


MAX_LINE_BYTES = 64 << 20  # one JSONL record; anything longer is damage (or hostile), never a record cotdistill wrote


def iter_text_lines(path: str | os.PathLike, max_bytes: int | None = None) -> Iterator[tuple[int, str, bool]]:
    """``(line number, text without the newline, terminated)`` for each line of a UTF-8 file, streamed.

    A line longer than ``max_bytes`` or one that is not UTF-8 is a one-line error naming the file and line: a
    1 GB line is refused after reading ``max_bytes`` of it, never loaded whole (nor handed to a tokenizer).
    ``max_bytes`` defaults to :data:`MAX_LINE_BYTES`.
    """
    path = Path(path)
    max_bytes = MAX_LINE_BYTES if max_bytes is None else max_bytes
    with open(path, "rb") as f:
        for i in itertools.count(1):
            raw = f.readline(max_bytes + 1)
            if not raw:
                return
            terminated = raw.endswith(b"\n")
            if len(raw) > max_bytes and not (terminated and len(raw) == max_bytes + 1):
                raise CotdistillError(f"{path}:{i}: line longer than {max_bytes:,} bytes; not a record (the file "
                                      "is damaged, or split the input into smaller records)")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CotdistillError(f"{path}:{i}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                                      f"{e.start + 1}); save the file as UTF-8") from None
            yield i, text.rstrip("\n"), terminated


def read_jsonl(path: str | os.PathLike, skip_torn_tail: bool = True) -> Iterator[dict]:
    """Yield records of a JSONL file; a torn (unterminated, unparsable) last line from a crash is skipped.

    A malformed line anywhere else, or a line that is valid JSON but not an object (a record is always an
    object), raises a one-line error naming the file and line number; so does a line over
    :data:`MAX_LINE_BYTES` (:func:`iter_text_lines`).
    """
    path = Path(path)
    if not path.exists():
        return
    for i, line, terminated in iter_text_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if skip_torn_tail and not terminated:  # only the last line can be unterminated
                return
            raise CotdistillError(f"{path}:{i}: not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise CotdistillError(f"{path}:{i}: not a JSON object (a {type(rec).__name__}); the file is damaged "
                                  "or not one cotdistill wrote")
        yield rec


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of a JSON-serialisable object with sorted keys: equal content, equal hash."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def refuse_overwrite(path: str | os.PathLike, what: str = "output") -> None:
    """Raise if ``path`` exists and is non-empty: finished runs and user data are never overwritten."""
    path = Path(path)
    if path.exists() and (path.is_file() or any(path.iterdir())):
        raise CotdistillError(f"{path}: {what} already exists; choose another path or remove it first")
