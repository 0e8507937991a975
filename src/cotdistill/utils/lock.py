"""One writer per output folder: an exclusive lock file holding the writer's pid.

``with folder_lock(out, "cotdistill eval"):`` takes ``out/.cotdistill.lock`` with ``flock`` (the kernel drops it
when the process dies, so a killed writer never leaves a stale lock) and writes the pid into it; a second
process gets a one-line error naming the folder and that pid instead of silently appending duplicate lines.
The file is removed on release (and the folder too if the lock created it and it is still empty), so a folder
is left as the writer found it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cotdistill.errors import CotdistillError

LOCK_NAME = ".cotdistill.lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the ``with`` block.

    ``what`` names the writer in the message the second process gets (``cotdistill eval``, ``cotdistill run``).
    Raises :class:`CotdistillError` at once when another live process holds it (never waits: a run can take
    hours). Re-entrant within one process is not supported (a nested call on the same folder refuses).
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise CotdistillError(f"{folder}: another {what} (pid {pid}) is writing to this folder; wait for it to "
                                  "finish or choose another output folder") from None
        # the previous holder may have unlinked the file between our open and our flock: then retry on a new one
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)  # closing drops the flock
        if created:  # a writer that failed before writing anything leaves no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
