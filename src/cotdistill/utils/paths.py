"""Where data and caches live. Nothing here downloads."""

from __future__ import annotations

import os
from pathlib import Path

from cotdistill.errors import CotdistillError

DATA_ENV = "COTDISTILL_DATA_DIR"
CACHE_ENV = "COTDISTILL_CACHE_DIR"


def data_dir(required: bool = True) -> Path | None:
    """The local data directory: ``$COTDISTILL_DATA_DIR``, else ``../shared/data`` (from the cwd or the repo).

    Returns None when nothing is found and ``required`` is false (callers then use the Hub path).
    """
    env = os.environ.get(DATA_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_dir():
            raise CotdistillError(f"{DATA_ENV}={env}: not a directory")
        return p
    repo_root = Path(__file__).resolve().parents[3]
    for cand in (Path.cwd() / ".." / "shared" / "data", repo_root / ".." / "shared" / "data"):
        if cand.is_dir():
            return cand.resolve()
    if required:
        raise CotdistillError(
            f"no data directory: set {DATA_ENV} to a folder holding the benchmark files "
            "(layout as ../shared/data), or run online to load from the Hugging Face Hub"
        )
    return None


def cache_dir() -> Path:
    """Cache for converted models and embeddings: ``$COTDISTILL_CACHE_DIR`` or ``~/.cache/cotdistill``."""
    p = Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "cotdistill")).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p
