"""Jupyter-friendly views of patient data (matplotlib; imported only when used).

* :class:`ImageViewer` / :func:`show_image`: orthogonal slices in RAS+ display
  orientation, CT window presets, a mask or lesion overlay;
* :func:`plot_vitals`: one panel per vital sign with the NEWS2 bands shaded;
* :class:`NotesView` / :func:`highlight_findings`: notes with extracted findings
  highlighted (affirmed, possible, negated marked as such).

Each view has ``_repr_html_`` so it renders inline when it is the last value of a cell.
"""

from __future__ import annotations

from .._lazy import lazy_attributes

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


__getattr__, __dir__, _ = lazy_attributes("medmm.viz", _LAZY)
