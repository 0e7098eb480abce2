"""Shared helpers: a matplotlib Figure (no pyplot state) and its inline HTML."""

from __future__ import annotations

import base64
import io
from typing import Any

__all__ = ["new_figure", "figure_png", "figure_html"]


_FORMATTER_SET = False


def _register_ipython_png() -> None:
    """In IPython, show a bare Figure (one pyplot never saw) as a PNG when it is a cell's value."""
    global _FORMATTER_SET
    if _FORMATTER_SET:
        return
    _FORMATTER_SET = True
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    from matplotlib.figure import Figure

    png = ip.display_formatter.formatters["image/png"]
    if Figure in png.type_printers:  # the inline backend already shows figures
        return
    png.for_type(Figure, lambda fig: figure_png(fig))


def new_figure(*args: Any, **kwargs: Any):
    """A matplotlib Figure that is not registered with pyplot (no global state, no leaks);
    in a notebook it displays as a PNG."""
    from matplotlib.figure import Figure

    _register_ipython_png()
    return Figure(*args, **kwargs)


def figure_png(fig: Any, *, dpi: int = 96) -> bytes:
    """PNG bytes of a figure (bytes pass through). A figure with a layout engine (constrained
    layout) is saved as laid out, in one render; one without is cropped to what it draws."""
    if isinstance(fig, (bytes, bytearray)):
        return bytes(fig)
    buf = io.BytesIO()
    laid_out = getattr(fig, "get_layout_engine", lambda: None)() is not None
    fig.savefig(buf, format="png", dpi=dpi, **({} if laid_out else {"bbox_inches": "tight"}))
    return buf.getvalue()


def figure_html(fig: Any, *, dpi: int = 96, alt: str = "figure") -> str:
    """``<img>`` with the figure inlined as a base64 PNG."""
    data = base64.b64encode(figure_png(fig, dpi=dpi)).decode()
    return f'<img alt="{alt}" src="data:image/png;base64,{data}"/>'
