"""Every preprocessor's fitted state round-trips as JSON + arrays (no pickle) with identical outputs."""

import json

import numpy as np
import pandas as pd
import pytest

from medmm.errors import ReadError
from medmm.records import Missing, Note, Notes, Tabular, Vitals


def _roundtrip(pre, tmp_path):
    """Through the files a bundle holds: preprocessor.json (parsed as strict JSON) and a pickle-free .npz."""
    from medmm.preprocess.state import read_state, save_state

    js, npz = save_state(pre, tmp_path)
    json.loads(js.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    with np.load(npz, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    return read_state(tmp_path)


def _present(records, m):
    return [getattr(r, m) for r in records if not isinstance(getattr(r, m), Missing)]


def test_image_state(tiny_loaded, tmp_path):
    from medmm.preprocess.image import ImagePreprocessor

    images = _present(tiny_loaded.records, "image")[:3]
    pre = ImagePreprocessor(spatial_size=(12, 10, 8), window=(-100, 300), spacing=(1.5, 1.5, 2.0),
                            size_mode="crop_pad", augment={"flip_prob": 0.3}, seed=4).fit()
    back = _roundtrip(pre, tmp_path)
    assert back.deterministic_config() == pre.deterministic_config() and back.augment == pre.augment
    for im in images:
        np.testing.assert_array_equal(back.transform(im), pre.transform(im))
    aug = [p.augment_array(pre.transform(images[0]), seed=11) for p in (pre, back)]
    np.testing.assert_array_equal(*aug)


def test_tfidf_and_findings_state(tiny_loaded, tmp_path):
    from medmm.preprocess.text import TextPreprocessor

    notes = _present(tiny_loaded.records, "notes")
    pre = TextPreprocessor(max_features=300, ngram_range=(1, 2), min_df=2).fit(notes[:25])
    assert pre.finding_names_
    back = _roundtrip(pre, tmp_path)
    odd = Notes([Note("FINDINGS: No evidence of mass.\nIMPRESSION: ?pneumonia, r/o effusion. "
                      "Pt denies SOB. Ünïcode and a never-seen-word zyxwv.")])
    batch = notes + [odd]
    np.testing.assert_array_equal(back.transform_many(batch), pre.transform_many(batch))
    assert back.output_shape == pre.output_shape


def test_tabular_column_transformer_state(tiny_loaded, tmp_path):
    from medmm.preprocess.tabular import TabularPreprocessor

    rows = _present(tiny_loaded.records, "ehr")
    pre = TabularPreprocessor(min_frequency=3).fit(rows)
    back = _roundtrip(pre, tmp_path)
    cols = pre.numeric_ + pre.categorical_
    messy = rows + [Tabular({}), Tabular({c: "  " for c in cols}),
                    Tabular({**rows[0].values, **{c: "never-seen" for c in pre.categorical_}}),
                    Tabular({**rows[1].values, pre.numeric_[0]: "12,5"})]  # the scikit-learn path
    np.testing.assert_array_equal(back.transform_many(messy), pre.transform_many(messy))
    np.testing.assert_array_equal(back._sklearn_transform(messy), pre._sklearn_transform(messy))


def test_a_fitted_state_saves_to_the_same_bytes_twice(tiny_loaded, tmp_path):
    """skops names archive members by id() and stamps the time: the bundle's bytes (and the Ray
    engine's resume key, a digest of them) must not change when the same model is saved again."""
    import copy
    import time as _time

    from medmm.preprocess.state import save_state
    from medmm.preprocess.tabular import TabularPreprocessor

    pre = TabularPreprocessor(min_frequency=3).fit(_present(tiny_loaded.records, "ehr"))
    assert pre.transformer_ is not None  # a fitted ColumnTransformer, saved as a skops archive
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first = save_state(pre, tmp_path / "a")
    _time.sleep(2.1)  # a zip stamps times to the even second
    second = save_state(copy.deepcopy(pre), tmp_path / "b")
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_vitals_grid_and_summary_state(tiny_loaded, tmp_path):
    from medmm.preprocess.vitals import VitalsPreprocessor
    from medmm.preprocess.vitals_summary import VitalsSummarizer

    recs = [r for r in tiny_loaded.records if not isinstance(r.vitals, Missing)]
    grid = VitalsPreprocessor(hours=24, step_hours=1.5).fit([r.vitals for r in recs[:20]])
    back = _roundtrip(grid, tmp_path / "grid")
    # a device artefact: a signal never seen in training, charted after the index time
    extra = Vitals(pd.DataFrame({"time": pd.to_datetime(["2021-01-01 10:00", "2021-01-01 11:00"]),
                                 "signal": ["etco2", "heart_rate"], "value": [35.0, 250.0], "unit": ["mmHg", "bpm"]}))
    for v, t in [(r.vitals, r.index_time) for r in recs] + [(extra, "2021-01-01 10:30")]:
        np.testing.assert_array_equal(back.transform(v, index_time=t), grid.transform(v, index_time=t))
    summ = VitalsSummarizer(hours=12, stats=("count", "last", "slope_per_hour"), min_records=2).fit(
        [r.vitals for r in recs])
    sback = _roundtrip(summ, tmp_path / "summary")
    for r in recs[:5]:
        a, b = summ.transform(r.vitals, index_time=r.index_time), sback.transform(r.vitals, index_time=r.index_time)
        assert list(a.values) == list(b.values)
        np.testing.assert_array_equal(np.array(list(a.values.values())), np.array(list(b.values.values())))


def test_token_and_sentence_embedding_state(tiny_loaded, tmp_path, monkeypatch):
    from medmm.preprocess import notes_nlp
    from medmm.preprocess.tokens import SentenceEmbeddingPreprocessor, TokenPreprocessor

    notes = _present(tiny_loaded.records, "notes")
    tok = TokenPreprocessor(max_len=40, max_vocab=50, truncate="tail").fit(notes)
    back = _roundtrip(tok, tmp_path / "tok")
    assert back.vocabulary_ == tok.vocabulary_
    for n in notes:
        np.testing.assert_array_equal(back.transform(n), tok.transform(n))

    def fake_encode(self, texts):  # a deterministic stand-in for the packaged MiniLM weights
        return np.array([[len(t) % 7, t.count("e"), self.batch_size] for t in texts], dtype=np.float32)

    monkeypatch.setattr(notes_nlp.SentenceEncoder, "encode", fake_encode)
    emb = SentenceEmbeddingPreprocessor(chunk_words=5, dim=3,
                                        encoder=notes_nlp.SentenceEncoder(batch_size=4)).fit(notes)
    eback = _roundtrip(emb, tmp_path / "emb")
    assert isinstance(eback.encoder, notes_nlp.SentenceEncoder) and eback.encoder.batch_size == 4
    for n in notes[:5]:
        np.testing.assert_array_equal(eback.transform(n), emb.transform(n))
    custom = SentenceEmbeddingPreprocessor(encoder=type("E", (), {"dim": 3, "encode": fake_encode})())
    with pytest.raises(Exception, match="custom encoder"):
        custom.get_state()


def test_multimodal_state(tiny_loaded, tmp_path):
    from medmm.models.multimodal import ModelConfig, build_preprocessor

    cfg = ModelConfig(encoders={"image": {"name": "tiny_cnn3d", "preprocess": {"spatial_size": (8, 8, 8)}},
                                "notes": {"name": "text_transformer", "preprocess": {"max_len": 32}},
                                "vitals": {"name": "gru"}, "ehr": {"name": "mlp"}})
    train = tiny_loaded.split("train")
    pre = build_preprocessor(cfg).fit(train)
    back = _roundtrip(pre, tmp_path)
    assert back.modalities == pre.modalities and back.output_shapes() == pre.output_shapes()
    for a, b in zip(pre.transform_many(tiny_loaded.records), back.transform_many(tiny_loaded.records)):
        assert a.keys() == b.keys()
        for m in a:
            assert (a[m] is None) == (b[m] is None)
            if a[m] is not None:
                np.testing.assert_array_equal(a[m], b[m])


def test_a_state_names_only_medmm_preprocessors(tmp_path):
    from medmm.preprocess.state import read_state

    (tmp_path / "preprocessor.json").write_text(json.dumps({"kind": "os:system", "state": {"cmd": "touch x"}}))
    with pytest.raises(ReadError, match="unknown preprocessor kind 'os:system'"):
        read_state(tmp_path)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "preprocessor.npz", "w") as z:
        z.write(tmp_path / "obj.npy", "x.npy")
    (tmp_path / "preprocessor.json").write_text(json.dumps({"kind": "vitals_grid", "state": {}}))
    with pytest.raises(ReadError, match="pickle"):
        read_state(tmp_path)
