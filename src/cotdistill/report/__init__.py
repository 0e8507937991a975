"""Stage: report. One self-contained HTML page per run folder: :func:`write_report`."""

from __future__ import annotations


def write_report(run_dir, output=None):
    """Write ``RUN_DIR/report.html`` (or ``output``); see :func:`cotdistill.report.html.write_report`."""
    from cotdistill.report.html import write_report as _write

    return _write(run_dir, output)


__all__ = ["write_report"]
