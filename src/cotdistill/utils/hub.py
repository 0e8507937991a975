"""Uploads to the Hugging Face Hub through ``huggingface_hub`` (students as model repos, exports as dataset repos).

The token is ``huggingface_hub``'s own (``HF_TOKEN`` or ``hf auth login``); cotdistill never reads or stores it.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from cotdistill.errors import CotdistillError

log = logging.getLogger(__name__)

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# written by cotdistill next to the files that matter; the Hub gets the files, not the run's bookkeeping
_IGNORE = [".*", "*.tmp", "*.lock", "__pycache__/*"]


def push_folder(folder: str | os.PathLike, repo_id: str, *, repo_type: str = "model", private: bool = True,
                commit_message: str | None = None, where: str = "repo_id") -> str:
    """Create ``repo_id`` if needed and upload ``folder`` to it as one commit; return the commit URL.

    ``repo_type``: ``model`` (a student folder) or ``dataset`` (an export folder with its dataset card).
    Errors (bad id, no token, network) are one-line :class:`CotdistillError` naming ``where``.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise CotdistillError(f"{folder}: nothing to upload (not a folder, or empty)")
    if not (folder / "README.md").is_file():
        raise CotdistillError(f"{folder}: README.md missing; the Hub reads the card's metadata from it")
    if repo_type not in ("model", "dataset"):
        raise CotdistillError(f"{where}: repo type {repo_type!r}: expected model or dataset")
    if not repo_id or not _REPO_ID.match(repo_id):
        raise CotdistillError(f"{where}: {repo_id!r} is not a Hub repo id (`name` or `user/name`)")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type=repo_type,
                                 commit_message=commit_message or f"Upload {folder.name} with cotdistill",
                                 ignore_patterns=_IGNORE)
    except Exception as e:  # HfHubHTTPError, missing token, no network: one line, never the token
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CotdistillError(f"{where}: upload of {folder} to {repo_type} repo {repo_id} failed "
                              f"({type(e).__name__}: {first})") from None
    url = getattr(info, "commit_url", None) or str(info)
    log.info("uploaded %s to %s repo %s: %s", folder, repo_type, repo_id, url)
    return url
