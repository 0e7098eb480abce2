"""Shared helpers: a matplotlib Figure (no pyplot state) and its inline HTML."""

from __future__ import annotations

import base64
import io
from typing import Any

__all__ = ["new_figure", "figure_png", "figure_html"]


def new_figure(*args: Any, **kwargs: Any):
    """A matplotlib Figure that is not registered with pyplot (no global state, no leaks)."""
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def figure_png(fig: Any, *, dpi: int = 96) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def figure_html(fig: Any, *, dpi: int = 96, alt: str = "figure") -> str:
    """``<img>`` with the figure inlined as a base64 PNG."""
    data = base64.b64encode(figure_png(fig, dpi=dpi)).decode()
    return f'<img alt="{alt}" src="data:image/png;base64,{data}"/>'
