"""Logging set-up for the command line: cotdistill's level, the libraries' verbosity, rank 0 only for info.

Library code logs (``logging.getLogger(__name__)``) and never prints; the CLI calls :func:`setup_logging` once.
transformers and datasets read ``TRANSFORMERS_VERBOSITY`` / ``DATASETS_VERBOSITY`` when first imported, so they are
set here through the environment (the CLI imports neither before a command runs); if they are already imported,
their own setters are called as well.
"""

from __future__ import annotations

import logging
import os
import sys

from cotdistill.utils import dist

LEVELS = ("debug", "info", "warning", "error")


class _RankZeroInfo(logging.Filter):
    """Under a multi-process launch only rank 0 logs below WARNING (one progress story, not one per GPU)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or dist.rank() == 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (test runners and typer's CliRunner swap it;
    a handler holding the old stream would write to a closed file)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: str = "info", verbose: int = 0) -> None:
    """Configure logging for a CLI run.

    ``level`` is cotdistill's own level; ``verbose`` (``-v`` count) raises it to debug and the libraries' from
    warning to info (``-v``) or debug (``-vv``). Messages go to stderr as ``LEVEL name: message``.
    """
    level = level.lower()
    if level not in LEVELS:
        raise ValueError(f"--log-level: {level!r}: expected one of {', '.join(LEVELS)}")
    ours = logging.DEBUG if verbose else getattr(logging, level.upper())
    libs = {0: "warning", 1: "info"}.get(verbose, "debug")
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RankZeroInfo())
    root = logging.getLogger()
    for h in list(root.handlers):  # a second call (tests, notebooks) replaces ours instead of doubling lines
        if getattr(h, "_cotdistill", False):
            root.removeHandler(h)
    handler._cotdistill = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(getattr(logging, libs.upper()))
    logging.getLogger("cotdistill").setLevel(ours)
    os.environ["TRANSFORMERS_VERBOSITY"] = libs
    os.environ["DATASETS_VERBOSITY"] = libs
    if "transformers" in sys.modules:
        import transformers

        transformers.utils.logging.set_verbosity(getattr(logging, libs.upper()))
    if "datasets" in sys.modules:
        import datasets

        datasets.utils.logging.set_verbosity(getattr(logging, libs.upper()))
