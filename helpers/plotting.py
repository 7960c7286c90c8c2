"""Figures drawn without pyplot that a notebook still shows as pictures.

The helpers build their figures with :class:`matplotlib.figure.Figure` directly, not with
``pyplot``: no global state, so a background thread (the live dashboard of lesson 05) can
draw, and nothing opens a window or changes the backend. But IPython's inline backend
registers its PNG printer for figures only once ``pyplot`` has made one in the kernel; before
that, ``display(fig)`` of a directly built figure shows the text ``<Figure size 1000x750 with
3 Axes>``, in JupyterLab and in papermill's output alike. A :class:`NotebookFigure` knows how
to show itself as a PNG (``_repr_png_``), so it displays either way.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure

__all__ = ["NotebookFigure", "png_bytes"]


def png_bytes(fig: Figure, dpi: float | None = None) -> bytes:
    """``fig`` as PNG bytes, cropped to what is drawn (as the inline backend shows it)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


class NotebookFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that IPython displays as a PNG."""

    def _repr_png_(self) -> bytes:
        return png_bytes(self)
