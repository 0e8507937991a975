"""Small matplotlib helpers: a headless (Agg) figure factory and atomic PNG saving."""

from __future__ import annotations

import io
import os
from pathlib import Path


def new_figure(nrows: int = 1, ncols: int = 1, width: float = 7.0, height: float = 4.0):
    """A figure on the Agg backend (no display needed); returns ``(fig, axes)``, axes flattened when >1."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    # Figure() without pyplot keeps no global state, so nothing leaks between plots
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = [ax for row in axes for ax in row]
    return fig, (flat if len(flat) > 1 else flat[0])


def figure_png_bytes(fig) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Write the figure as PNG atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(figure_png_bytes(fig))
    os.replace(tmp, path)
    return path
