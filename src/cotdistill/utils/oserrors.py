"""Turn an operating-system error about a path into the one-line user error (no traceback).

An output path that is a file, a read-only folder, a symlink loop, a missing parent: Python raises an
:class:`OSError` carrying the path and errno. These are the user's to fix, so the CLI shows them as
``PATH: what is wrong`` with exit code 2 (``cli._Group`` calls :func:`as_user_error` for every command).
"""

from __future__ import annotations

import errno
import os

from cotdistill.errors import CotdistillError

_WHAT = {
    errno.EEXIST: "already exists as a file (a folder is needed here)",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "is a folder (a file is needed here)",
    errno.EACCES: "permission denied (read-only?)",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ELOOP: "too many levels of symbolic links (a symlink loop?)",
    errno.ENAMETOOLONG: "file name too long",
    errno.ENOENT: "no such file or folder",
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file size limit reached",
    errno.EADDRINUSE: "address already in use",
}


def as_user_error(e: OSError) -> CotdistillError | None:
    """The one-line :class:`CotdistillError` for ``e``, or None when it names no path and no known cause."""
    what = _WHAT.get(e.errno) or (e.strerror or "").lower() or type(e).__name__
    if e.filename is None:
        return CotdistillError(f"{what}") if e.errno in _WHAT else None
    where = os.fsdecode(e.filename)
    if e.filename2 is not None:
        where += f" -> {os.fsdecode(e.filename2)}"
    return CotdistillError(f"{where}: {what}")
