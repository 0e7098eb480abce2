"""Image viewer, vitals plots with NEWS2 bands, notes highlighting, rich HTML displays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medmm.records import Image, Missing, Note, Notes, PatientRecord, Tabular, Vitals


def _lps_image():
    """A 10x12x8 volume on an LPS-ordered grid (as DICOM stores it) with one bright voxel."""
    data = np.zeros((10, 12, 8), np.float32)
    data[2, 3, 5] = 1000.0
    affine = np.diag([-1.0, -2.0, 3.0, 1.0])  # i -> left (L), j -> posterior (P), k -> superior
    return Image(data, affine), (2, 3, 5)


def test_viewer_reorients_to_ras_and_centres_on_the_mask():
    from medmm.viz.image import ImageViewer, to_ras

    img, (i, j, k) = _lps_image()
    ras, spacing = to_ras(img.data, img.affine)
    assert ras.shape == (10, 12, 8) and spacing == (1.0, 2.0, 3.0)
    # the bright voxel's world position is unchanged: R index = 9 - i, A index = 11 - j
    assert tuple(np.argwhere(ras == 1000.0)[0]) == (9 - i, 11 - j, k)
    mask = np.zeros_like(img.data)
    mask[i, j, k] = 1
    v = ImageViewer(img, window="bone", mask=mask)
    assert v.point == (9 - i, 11 - j, k)
    assert (v.vmin, v.vmax) == (400 - 900, 400 + 900)
    sl = v.slices()
    assert sl["axial"][0].max() == 1000.0 and sl["coronal"][0].max() == 1000.0 and sl["sagittal"][0].max() == 1000.0
    assert sl["axial"][1].sum() == 1
    assert sl["coronal"][2] == pytest.approx(3.0)  # z spacing over x spacing
    fig = v.figure()
    assert len(fig.axes) == 3 and [a.get_title() for a in fig.axes] == ["axial", "coronal", "sagittal"]
    assert v._repr_html_().startswith('<img alt="image slices" src="data:image/png;base64,')


def test_window_presets_and_errors():
    from medmm.errors import ConfigError
    from medmm.viz.image import ImageViewer, window_limits

    data = np.arange(1000, dtype=float)
    assert window_limits(data, "lung") == (-1350, 150)
    assert window_limits(data, (50, 100)) == (0, 100)
    lo, hi = window_limits(data, "auto")
    assert 5 < lo < 15 and 985 < hi < 995
    with pytest.raises(ConfigError, match="window preset"):
        window_limits(data, "nope")
    img, _ = _lps_image()
    with pytest.raises(ConfigError, match="mask shape"):
        ImageViewer(img, mask=np.zeros((3, 3, 3)))


def test_news2_bands_follow_the_chart():
    from medmm.viz.vitals import news2_bands

    def score_at(signal, v):
        return next(s for a, b, s in news2_bands(signal, 0, 250) if a <= v < b)

    assert [score_at("heart_rate", v) for v in (35, 45, 70, 100, 120, 140)] == [3, 1, 0, 1, 2, 3]
    assert [score_at("resp_rate", v) for v in (7, 10, 16, 22, 30)] == [3, 1, 0, 2, 3]
    assert [score_at("pulse", v) for v in (35, 70)] == [3, 0]  # an alias
    t = news2_bands("temperature", 34, 41)
    assert [s for *_, s in t] == [3, 1, 0, 1, 2]
    assert news2_bands("glucose", 0, 10) == []
    assert news2_bands("consciousness", 0, 10) == []  # a NEWS2 parameter, but not a plotted number


def test_news2_bands_for_the_readers_signal_names():
    """Names medmm.io.vitals gives (pulse_rate, abp_sys) and raw headers get the chart's bands."""
    from medmm.io.vitals import canonical_signal
    from medmm.viz.vitals import news2_bands

    def score_at(signal, v):
        return next(s for a, b, s in news2_bands(signal, 0, 250) if a <= v < b)

    assert canonical_signal("pulse") == "pulse_rate"
    for name in ("pulse_rate", "Heart Rate", "HR", "pulse"):
        assert [score_at(name, v) for v in (35, 45, 70, 100, 120, 140)] == [3, 1, 0, 1, 2, 3], name
    for name in ("abp_sys", "ABP Sys", "sbp", "NBP Sys"):
        assert [score_at(name, v) for v in (85, 95, 105, 150, 230)] == [3, 2, 1, 0, 3], name
    assert news2_bands("abp_dia", 0, 250) == []  # diastolic is not charted


def test_plot_vitals_shades_bands():
    from medmm.viz.vitals import VitalsView, plot_vitals

    times = pd.date_range("2024-01-01", periods=6, freq="h")
    frame = pd.DataFrame({"time": list(times) * 2, "signal": ["heart_rate"] * 6 + ["glucose"] * 6,
                          "value": [80, 95, 115, 125, 135, 100, 5, 6, 7, 6, 5, 6],
                          "unit": ["bpm"] * 6 + ["mmol/L"] * 6})
    fig = plot_vitals(Vitals(frame), index_time=times[-1])
    hr, glu = fig.axes[1], fig.axes[0]  # panels in signal order: glucose, heart_rate
    assert "heart_rate" in hr.get_ylabel()
    assert len(hr.patches) >= 3 and len(glu.patches) == 0  # bands only where NEWS2 charts the signal
    assert "data:image/png" in VitalsView(Vitals(frame))._repr_html_()


def test_notes_highlight_negated_possible_and_affirmed():
    from medmm.viz.notes import NotesView, highlight_findings

    text = "FINDINGS:\nNo suspicious lesion is seen. Possible mass in the liver. Patient has <fever>."
    h = highlight_findings(text)
    assert "class='finding negated'" in h and ">lesion</span>" in h
    assert "class='finding possible'" in h and ">mass</span>" in h
    assert "&lt;" in h and "<fever>" not in h  # escaped
    view = NotesView(Notes([Note(text)]))
    df = view.findings()
    assert dict(zip(df.text, df.polarity))["lesion"] == "negated"
    assert "finding negated" in view._repr_html_()


def test_record_and_cohort_html(tiny_loaded):
    img, _ = _lps_image()
    rec = PatientRecord("P1", image=img, notes=Notes([Note("No lesion.")]), ehr=Tabular({"age": 70}, {"age": "years"}),
                        vitals=Missing("read_error"), labels={"tumor": 1.0}, split="test")
    h = rec._repr_html_()
    assert "PatientRecord P1" in h and "<summary>image</summary>" in h and "data:image/png" in h
    assert "finding negated" in h and "<summary>ehr</summary>" in h and "<summary>vitals</summary>" not in h
    real = next(r for r in tiny_loaded.records if r.present["vitals"])
    h = real._repr_html_()
    assert "<summary>vitals</summary>" in h and "latest:" in h
    c = tiny_loaded._repr_html_()
    assert "presence patterns" in c and "problem report" in c and f"{len(tiny_loaded)} patients" in c


def test_lesion_overlay_is_a_ball_in_voxels_or_mm():
    from medmm.viz.image import ImageViewer, sphere_mask

    m = sphere_mask((11, 11, 11), (5, 5, 5), 2)
    assert m.sum() == 33 and m[5, 5, 5] and m[7, 5, 5] and not m[8, 5, 5]
    mm = sphere_mask((11, 11, 11), (5, 5, 5), 4.0, spacing=(2, 2, 2))
    assert (mm == m).all()
    img, (i, j, k) = _lps_image()
    v = ImageViewer(img, lesion=((i, j, k), 1.5))
    assert v.point == (9 - i, 11 - j, k) and v.mask.sum() == sphere_mask(img.shape, (i, j, k), 1.5).sum()


def test_problem_report_html_lists_every_problem():
    from medmm.cohort import ProblemReport

    r = ProblemReport(source="m.csv")
    r.add("warning", "odd <value>", row=3, column="sex")
    r.add("error", "file missing", row=1, column="image_path", patient_id="P1")
    h = r._repr_html_()
    assert "1 error(s)" in h and "1 warning(s)" in h and "m.csv" in h
    assert h.index("file missing") < h.index("odd &lt;value&gt;")  # errors first, escaped
    assert ProblemReport()._repr_html_() == "<p>No problems found.</p>"


def test_figure_png_one_helper_for_viz_and_reports():
    """A constrained-layout report figure is saved as laid out (its full size, one render); a bare
    figure is cropped to what it draws; PNG bytes pass through."""
    import io as _io

    from PIL import Image as PILImage

    from medmm.evaluate import report
    from medmm.viz.common import figure_png, new_figure

    assert report.figure_png is figure_png
    laid = new_figure(figsize=(4, 3), layout="constrained")
    laid.add_subplot().plot([0, 1], [0, 1])
    png = figure_png(laid, dpi=50)
    assert PILImage.open(_io.BytesIO(png)).size == (200, 150)
    assert figure_png(png) == png
    bare = new_figure(figsize=(4, 3))
    bare.text(0.5, 0.5, "x")
    w, h = PILImage.open(_io.BytesIO(figure_png(bare, dpi=50))).size
    assert w < 200 and h < 150
