"""Process rank under a multi-process launch (``torchrun`` / ``accelerate launch``), read from the environment.

No process group is needed: the launchers set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` before the
process starts, so the pipeline can decide who runs what long before (and long after) training's collectives.
"""

from __future__ import annotations

import os
import time

_IMPORTED_AT = time.time()


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, "") or default)
    except ValueError:
        return default


def rank() -> int:
    """Global rank (``RANK``; ``LOCAL_RANK`` when only that is set; 0 in a single process)."""
    return _env_int("RANK", _env_int("LOCAL_RANK", 0))


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK``; the global rank when unset)."""
    return _env_int("LOCAL_RANK", rank())


def world_size() -> int:
    """Number of processes in the launch (``WORLD_SIZE``; 1 in a single process)."""
    return max(1, _env_int("WORLD_SIZE", 1))


def is_main() -> bool:
    """Whether this process is global rank 0 (always true in a single process)."""
    return rank() == 0


def process_start_time() -> float:
    """Wall-clock time this process started (to tell this launch's records from an earlier launch's)."""
    try:
        import psutil  # a dependency of accelerate

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - any failure: the import time is a close, later bound
        return _IMPORTED_AT
