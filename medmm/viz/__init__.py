"""Jupyter-friendly views of patient data (matplotlib; imported only when used).

* :class:`ImageViewer` / :func:`show_image`: orthogonal slices in RAS+ display
  orientation, CT window presets, a mask or lesion overlay;
* :func:`plot_vitals`: one panel per vital sign with the NEWS2 bands shaded;
* :class:`NotesView` / :func:`highlight_findings`: notes with extracted findings
  highlighted (affirmed, possible, negated marked as such).

Each view has ``_repr_html_`` so it renders inline when it is the last value of a cell.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ImageViewer": "medmm.viz.image:ImageViewer",
    "show_image": "medmm.viz.image:show_image",
    "WINDOW_PRESETS": "medmm.viz.image:WINDOW_PRESETS",
    "plot_vitals": "medmm.viz.vitals:plot_vitals",
    "VitalsView": "medmm.viz.vitals:VitalsView",
    "news2_bands": "medmm.viz.vitals:news2_bands",
    "NotesView": "medmm.viz.notes:NotesView",
    "highlight_findings": "medmm.viz.notes:highlight_findings",
    "figure_html": "medmm.viz.common:figure_html",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'medmm.viz' has no attribute {name!r}")
    module, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
