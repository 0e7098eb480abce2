"""The serving fast paths of the preprocessors equal the reference paths they replace."""

import pickle

import numpy as np
import pandas as pd

from medmm.records import Missing, Notes, Note, PatientRecord, Tabular, Vitals


def _train_rows(tiny_loaded):
    return [r.ehr for r in tiny_loaded.records if not isinstance(r.ehr, Missing)]


def test_tabular_fast_path_equals_the_column_transformer(tiny_loaded):
    from medmm.preprocess.tabular import TabularPreprocessor

    rows = _train_rows(tiny_loaded)
    pre = TabularPreprocessor().fit(rows)
    assert pre._fast() is not None, "the numpy mirror failed its own check against scikit-learn"
    cols = pre.numeric_ + pre.categorical_
    messy = [
        Tabular({}),  # everything missing
        Tabular({c: "  " for c in cols}),  # blank strings
        Tabular({c: str(v) for c, v in rows[0].values.items()}),  # numbers as text
        Tabular({**rows[1].values, **{c: 1e9 for c in pre.numeric_}}),  # far above the range
        Tabular({**rows[2].values, **{c: -1e9 for c in pre.numeric_}}),  # far below
        Tabular({**rows[3].values, **{c: "never-seen" for c in pre.categorical_}}),  # unseen categories
    ]
    for batch in (rows, rows[:1], messy):
        np.testing.assert_allclose(pre.transform_many(batch), pre._sklearn_transform(batch), atol=1e-5)
    assert pre.transform(rows[0]).shape == pre.output_shape


def test_tabular_fast_path_defers_what_it_cannot_parse_and_survives_pickling(tiny_loaded):
    from medmm.preprocess.tabular import TabularPreprocessor

    rows = _train_rows(tiny_loaded)
    pre = TabularPreprocessor().fit(rows)
    col = pre.numeric_[0]
    odd = [Tabular({**rows[0].values, col: True}), Tabular({**rows[0].values, col: "12,5"})]
    assert pre._fast().transform(odd[:1]) is None and pre._fast().transform(odd[1:]) is None
    np.testing.assert_allclose(pre.transform_many(odd), pre._sklearn_transform(odd), atol=1e-6)
    clone = pickle.loads(pickle.dumps(pre))
    assert "_fast_" not in clone.__dict__  # rebuilt and re-checked after loading, never trusted from disk
    np.testing.assert_allclose(clone.transform_many(rows), pre._sklearn_transform(rows), atol=1e-5)


def test_tabular_refit_rebuilds_the_fast_path(tiny_loaded):
    from medmm.preprocess.tabular import TabularPreprocessor

    rows = _train_rows(tiny_loaded)
    pre = TabularPreprocessor().fit(rows)
    pre.transform_many(rows)  # builds the mirror of this fit
    col = pre.numeric_[0]
    scaled = [Tabular({**r.values, col: float(r.values[col]) * 100 if r.values.get(col) is not None else None})
              for r in rows]
    pre.fit(scaled)
    np.testing.assert_allclose(pre.transform_many(rows), pre._sklearn_transform(rows), atol=1e-5)


def test_tabular_fast_path_is_refused_when_it_disagrees(tiny_loaded, monkeypatch):
    from medmm.preprocess import tabular

    rows = _train_rows(tiny_loaded)
    pre = tabular.TabularPreprocessor().fit(rows)
    monkeypatch.setattr(tabular._FastTabular, "_numeric", lambda self, x: np.zeros((len(x), 99)))
    assert tabular._FastTabular.build(pre) is None


def _loop_reference(pre, vitals, index_time):
    """The plain per-step loop the vectorised VitalsPreprocessor.transform replaced."""
    df = vitals.frame
    end = pd.Timestamp(index_time) if index_time is not None else df["time"].max()
    hb = (end - df["time"]).dt.total_seconds().to_numpy() / 3600.0
    keep = (hb >= 0) & (hb <= pre.hours)
    t, c = pre.n_steps, len(pre.signals_)
    out = np.zeros((t, 3 * c), dtype=np.float32)
    col = {s: i for i, s in enumerate(pre.signals_)}
    sums, counts = np.zeros((t, c)), np.zeros((t, c))
    for s, v, h in zip(df["signal"].to_numpy()[keep], df["value"].to_numpy(float)[keep], hb[keep]):
        if s in col:
            b = min(int((pre.hours - h) / pre.step_hours), t - 1)
            j = col[s]
            sums[b, j] += (v - pre.mean_[j]) / pre.std_[j]
            counts[b, j] += 1
    last, since = np.zeros(c), np.full(c, pre.hours)
    for step in range(t):
        obs = counts[step] > 0
        last[obs] = sums[step, obs] / counts[step, obs]
        since = np.where(obs, 0.0, since + (pre.step_hours if step else 0.0))
        out[step, :c], out[step, c:2 * c] = last, obs
        out[step, 2 * c:] = np.minimum(since, pre.hours) / pre.hours
    return out


def test_vitals_grid_equals_the_step_loop(tiny_loaded):
    from medmm.preprocess.vitals import VitalsPreprocessor

    recs = [r for r in tiny_loaded.records if not isinstance(r.vitals, Missing)]
    pre = VitalsPreprocessor(hours=24, step_hours=3).fit([r.vitals for r in recs])
    rng = np.random.default_rng(0)
    for r in recs:
        for it in (r.index_time, None):
            np.testing.assert_allclose(pre.transform(r.vitals, index_time=it), _loop_reference(pre, r.vitals, it),
                                       atol=1e-6)
    # a sparse series with an unknown signal and observations outside the window
    times = pd.to_datetime("2024-01-02") - pd.to_timedelta(rng.uniform(-5, 40, 12), unit="h")
    frame = pd.DataFrame({"time": times, "signal": rng.choice(pre.signals_ + ["unknown"], 12),
                          "value": rng.normal(80, 10, 12), "unit": ""})
    sparse = Vitals(frame.sort_values("time").reset_index(drop=True))
    for it in ("2024-01-02", None):
        np.testing.assert_allclose(pre.transform(sparse, index_time=it), _loop_reference(pre, sparse, it), atol=1e-6)


def test_multimodal_transform_many_equals_transform(tiny_loaded):
    from medmm.preprocess import MultimodalPreprocessor
    from medmm.preprocess.image import ImagePreprocessor

    recs = tiny_loaded.records[:12]
    pre = MultimodalPreprocessor(image=ImagePreprocessor(spatial_size=(16, 16, 16))).fit(recs)
    extra = [PatientRecord("empty"), PatientRecord("note-only", notes=Notes([Note("No mass. Stable.")]))]
    many = pre.transform_many(list(recs) + extra)
    for r, got in zip(list(recs) + extra, many):
        want = pre.transform(r)
        assert got.keys() == want.keys()
        for m in want:
            if want[m] is None:
                assert got[m] is None, (r.patient_id, m)
            else:
                np.testing.assert_allclose(got[m], want[m], atol=1e-6, err_msg=f"{r.patient_id} {m}")
