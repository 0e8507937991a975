"""Stage: analysis (latent space, forgetting, training dynamics). Entry point: :func:`analyze_run`."""

from __future__ import annotations

from typing import Any


def analyze_run(run_dir, cfg=None, **kwargs: Any) -> dict:
    """Run every analysis a run folder supports; see :func:`cotdistill.analysis.run.analyze_run`."""
    from cotdistill.analysis.run import analyze_run as _run

    return _run(run_dir, cfg, **kwargs)


__all__ = ["analyze_run"]
