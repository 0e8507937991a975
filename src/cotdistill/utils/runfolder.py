"""A folder is cotdistill's, or nothing is written into it.

Before the first write into a run folder (``run``, ``train``, ``synthesize``), :func:`claim_folder` checks it:
a missing or empty folder is created and marked with ``.cotdistill`` (a small JSON file: kind, version, time);
a marked folder is used as is; a folder made by a cotdistill version older than the marker is recognised by
what only cotdistill writes there and marked; anything else (a home folder, a project holding the user's own
``config.yaml``) is refused in one line before a single byte is written.

An evaluation output folder (``kind="eval"``) may also be a folder of the user's (results next to the data
they came from), but never one holding a ``summary.json`` that is not cotdistill's: evaluation would replace it.
Its other file names are checked by the evaluation itself (a result file of the wrong shape is refused).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cotdistill.errors import CotdistillError

MARKER = ".cotdistill"

# files/folders only cotdistill writes: a folder holding one is a run/eval folder from before the marker
_LEGACY_RUN = ("stages.json", "rationales/records.jsonl", "student/cotdistill_train.json", "checkpoints",
               "dynamics.jsonl")


_STORE_FILES = {"records.jsonl", "synthesis_summary.json", "torn"}  # what a rationale store folder holds


def _inside_run(folder: Path) -> bool:
    """True inside a marked run folder: its subfolders (EDIT's ``edit_init``, MoDE's experts) are cotdistill's."""
    return any((parent / MARKER).is_file() for parent in folder.resolve().parents)


def _foreign_summary(folder: Path) -> bool:
    """True when ``folder/summary.json`` exists and is not an evaluation summary cotdistill wrote."""
    p = folder / "summary.json"
    if not p.is_file():
        return False
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return not (isinstance(rec, dict) and isinstance(rec.get("benchmarks"), dict) and "model" in rec)


def _is_legacy(folder: Path, kind: str) -> bool:
    if _inside_run(folder):
        return True
    if kind == "eval":
        return not _foreign_summary(folder)
    if any((folder / rel).exists() for rel in _LEGACY_RUN):
        return True
    store = folder / "rationales"  # a store being started (its lock only) or one without records yet
    return store.is_dir() and all(p.name in _STORE_FILES or p.name.startswith(".") for p in store.iterdir())


def claim_folder(folder: str | os.PathLike, kind: str = "run", *, mark: bool = True) -> Path:
    """Make sure ``folder`` may receive cotdistill's files; create and mark it when missing or empty.

    ``kind``: ``run`` (a run folder) or ``eval`` (an evaluation output folder); used in the marker and message.
    ``mark=False`` only checks (nothing is created): for callers whose first write may still be refused.
    Raises :class:`CotdistillError` for a path that is a file, or a non-empty folder that is not cotdistill's.
    """
    folder = Path(folder)
    marker = folder / MARKER
    if folder.is_dir() and marker.is_file():
        return folder
    if folder.exists() and not folder.is_dir():
        raise CotdistillError(f"{folder}: {kind} folder: is a file, not a folder")
    if folder.is_dir():
        entries = [p.name for p in folder.iterdir() if not p.name.startswith(MARKER)]  # our lock is no content
        if entries and not _is_legacy(folder, kind):
            shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
            why = "holds a summary.json that is not cotdistill's" if kind == "eval" else f"not empty ({shown})"
            raise CotdistillError(
                f"{folder}: {kind} folder: {why} and is not a cotdistill {kind} folder (no {MARKER}); "
                "nothing was written: choose a new or empty folder (run.output_dir / run.name, --output)")
    if not mark:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    from cotdistill import __version__
    from cotdistill.utils.io import atomic_write_text

    atomic_write_text(marker, json.dumps({"kind": kind, "cotdistill_version": __version__,
                                          "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    return folder
