"""The model bundle: data only, one loader (folder or MLflow URI), nothing of the bundle's runs."""

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from medmm.schemas import load_schema
from medmm.errors import ConfigError, ReadError
from model_helpers import build_tiny_model


class _Planted:
    """Unpickling this creates a marker file: proof that code from the bundle ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.fixture(scope="module")
def saved(tiny_loaded, tmp_path_factory):
    model = build_tiny_model(tiny_loaded)
    folder = model.save(tmp_path_factory.mktemp("bundle") / "model")
    return model, folder


def _copy(folder, dst):
    import shutil

    return Path(shutil.copytree(folder, dst))


def test_folder_round_trip_is_data_only_and_predicts_the_same(saved, tiny_loaded):
    import medmm

    model, folder = saved
    assert sorted(p.name for p in folder.iterdir()) == ["medmm_model.json", "preprocessor.json",
                                                         "preprocessor.npz", "weights.pt"]
    meta = json.loads((folder / "medmm_model.json").read_text())
    schema = load_schema("model_bundle.schema.json")
    import jsonschema

    jsonschema.validate(meta, schema)
    loaded = medmm.load_model(folder)
    assert medmm.load_model(loaded) is loaded
    recs = tiny_loaded.records
    np.testing.assert_array_equal(loaded.predict_records(recs), model.predict_records(recs))


def test_planted_pickle_json_and_weights_run_nothing(saved, tiny_loaded, tmp_path):
    import torch

    from medmm import load_model

    model, folder = saved
    marker = tmp_path / "PWNED"
    # a pickle next to a format-3 bundle is never opened
    bundle = _copy(folder, tmp_path / "with_pkl")
    (bundle / "preprocessor.pkl").write_bytes(pickle.dumps(_Planted(marker)))
    got = load_model(bundle).predict_records(tiny_loaded.records[:8])
    np.testing.assert_array_equal(got, model.predict_records(tiny_loaded.records[:8]))
    assert not marker.exists()
    # a preprocessing state that names a class of its choosing
    bad_json = _copy(folder, tmp_path / "bad_json")
    doc = json.loads((bad_json / "preprocessor.json").read_text())
    doc["steps"] = doc["state"]["steps"]
    doc["state"]["steps"]["ehr"] = {"kind": "pathlib:Path.touch", "state": {"self": str(marker)}}
    (bad_json / "preprocessor.json").write_text(json.dumps(doc))
    with pytest.raises(ReadError, match="unknown preprocessor kind 'pathlib:Path.touch'"):
        load_model(bad_json)
    # a model config that names something outside the registries
    bad_cfg = _copy(folder, tmp_path / "bad_cfg")
    meta = json.loads((bad_cfg / "medmm_model.json").read_text())
    meta["config"]["fusion"] = {"name": "os.system", "command": f"touch {marker}"}
    (bad_cfg / "medmm_model.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="unknown fusion 'os.system'"):
        load_model(bad_cfg)
    # weights that are a pickle with a payload: torch's weights_only refuses them
    bad_w = _copy(folder, tmp_path / "bad_weights")
    torch.save({"x": _Planted(marker)}, bad_w / "weights.pt")
    with pytest.raises(ReadError, match="cannot read the weights"):
        load_model(bad_w)
    # the EHR step's skops blob swapped for one naming an untrusted type
    import skops.io as sio

    bad_sk = _copy(folder, tmp_path / "bad_skops")
    with np.load(bad_sk / "preprocessor.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["ehr/transformer.skops"] = np.frombuffer(sio.dumps({"f": Path(marker)}), dtype=np.uint8)
    np.savez(bad_sk / "preprocessor.npz", **arrays)
    with pytest.raises(ReadError, match="trusted"):
        load_model(bad_sk)
    assert not marker.exists()


def test_the_model_kind_is_named_in_the_bundle_and_looked_up_in_a_registry(saved, tmp_path, capsys):
    """The bundle names its model kind; an unknown kind is refused before the weights are read, and a
    format-4 folder written before the field existed still loads as the multimodal model."""
    import medmm

    _, folder = saved
    assert json.loads((folder / "medmm_model.json").read_text())["model"] == "multimodal"
    from medmm.cli import main

    assert main(["model", "info", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("format 4  model multimodal  tasks ['tumor', 'disease']")
    for kind, ok in (("multimodel", False), (None, True)):
        dst = _copy(folder, tmp_path / f"k{kind}")
        meta = json.loads((dst / "medmm_model.json").read_text())
        if kind is None:
            del meta["model"]
        else:
            meta["model"] = kind
            (dst / "weights.pt").unlink()
        (dst / "medmm_model.json").write_text(json.dumps(meta))
        if ok:
            assert type(medmm.load_model(dst)).__name__ == "MultimodalModel"
        else:
            with pytest.raises(ReadError, match="unknown model kind 'multimodel'.*multimodal"):
                medmm.load_model(dst)


def test_old_pickle_folders_need_an_explicit_opt_in_or_an_upgrade(saved, tiny_loaded, tmp_path):
    from medmm import load_model
    from medmm.cli import main
    from medmm.models.bundle import UntrustedPickleWarning

    model, folder = saved
    old = _copy(folder, tmp_path / "v2")
    meta = json.loads((old / "medmm_model.json").read_text())
    meta["format_version"] = 2
    for k in ("format", "files", "medmm_version"):
        meta.pop(k)
    (old / "medmm_model.json").write_text(json.dumps(meta))
    (old / "preprocessor.json").unlink()
    (old / "preprocessor.npz").unlink()
    (old / "preprocessor.pkl").write_bytes(pickle.dumps(model.preprocessor))
    with pytest.raises(ReadError, match="medmm model upgrade"):
        load_model(old)
    with pytest.warns(UntrustedPickleWarning):
        trusted = load_model(old, trust_pickle=True)
    recs = tiny_loaded.records[:10]
    np.testing.assert_array_equal(trusted.predict_records(recs), model.predict_records(recs))
    assert main(["model", "upgrade", str(old)]) == 0
    assert not (old / "preprocessor.pkl").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_model(old).predict_records(recs), model.predict_records(recs))


def test_mlflow_uri_round_trip(saved, tiny_loaded, tmp_path, monkeypatch):
    import mlflow

    from medmm import load_model
    from medmm.tracking import MlflowTracker
    from medmm.train.pyfunc import log_medmm_model

    model, folder = saved
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    with MlflowTracker(experiment="bundle", tracking_uri=uri) as tracker:
        model_uri = log_medmm_model(tracker, folder, tasks=model.tasks, registered_model_name="bundle-model")
        run_id = tracker.run_id
    monkeypatch.setattr(mlflow.pyfunc, "load_model", lambda *a, **k: pytest.fail("the pyfunc loader unpickles"))
    recs = tiny_loaded.records
    want = model.predict_records(recs)
    for ref in (model_uri, f"runs:/{run_id}/model", "models:/bundle-model/1"):
        np.testing.assert_array_equal(load_model(ref, tracking_uri=uri).predict_records(recs), want)
    with pytest.raises(ReadError, match="MLflow"):
        load_model("models:/no-such-model/1", tracking_uri=uri)


def test_serving_exports_into_the_cache_never_into_the_model_folder(saved, tiny_loaded, tmp_path, monkeypatch):
    from medmm.deploy.runtime import Predictor
    from medmm.train.hub import export_cache_dir

    model, folder = saved
    monkeypatch.setenv("MEDMM_CACHE_DIR", str(tmp_path / "cache"))
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    pred = Predictor.load(folder, runtime="onnx-full")
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    cached = export_cache_dir(model) / "onnx"
    assert (cached / "model.onnx").exists()
    recs = tiny_loaded.records[:12]
    np.testing.assert_allclose(pred.predict_records(recs), model.predict_records(recs), atol=1e-4)
    # a second replica finds the export and writes nothing
    mtime = (cached / "model.onnx").stat().st_mtime_ns
    Predictor.load(folder, runtime="onnx-full")
    assert (cached / "model.onnx").stat().st_mtime_ns == mtime
    # an export folder of another model is refused
    other = build_tiny_model(tiny_loaded, seed=1)
    with pytest.raises(ConfigError, match="another model"):
        Predictor.from_model(other, runtime="onnx-full", export_dir=cached)


def test_misspelt_names_fail_at_config_load_before_any_file_or_torch(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("cohort: {manifest: does/not/exist.csv}\nmodel:\n  fusion: {name: atention}\n")
    code = ("import sys, time; from medmm.config import load_config; from medmm.errors import ConfigError\n"
            f"t = time.perf_counter()\n"
            "for over in ([], ['model.fusion.name=concat', 'model.encoders.vitals.name=gru_d']):\n"
            f"    try: load_config({str(cfg)!r}, over)\n"
            "    except ConfigError as e: print(e.column, '|', e.message)\n"
            "print(time.perf_counter() - t, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("model.fusion.name |") and "did you mean 'attention'" in lines[0]
    assert lines[1].startswith("model.encoders.vitals.name |") and "did you mean 'grud'" in lines[1]
    seconds, torch_loaded = lines[2].split()
    assert float(seconds) < 1.0 and torch_loaded == "False"


def test_config_checks_encoder_modality_heads_and_preprocessing_options():
    from medmm.config import load_config

    base = {"cohort": {"manifest": "m.csv"}}
    cases = [(["model.encoders.image.name=gru"], r"reads series modalities \(vitals\), not image"),
             (["model.tasks.grade.kind=multiclas"], "did you mean 'multiclass'"),
             (["model.modalities=[image, note]"], "did you mean 'notes'"),
             (["preprocess.ehr.min_freq=3"], "did you mean 'min_frequency'"),
             (["preprocess.image.size_mode=crop"], "did you mean 'crop_pad'"),
             (["model.encoders.notes.name=text_transformer", "model.encoders.notes.preprocess.max_vocb=9"],
              "TokenPreprocessor has no setting 'max_vocb'")]
    for over, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            load_config(base, over)
    cfg = load_config(base, ["model.dim=8", "model.encoders.image.name=tiny_cnn3d", "model.encoders.image.channels=[4, 8]"])
    assert cfg.model.get("dim") == 8 and cfg.model["encoders"]["image"]["channels"] == [4, 8]


def test_catalog_names_are_the_registries():
    from medmm import catalog
    from medmm.models import ENCODERS, FUSIONS, HEADS

    assert set(catalog.BUILTIN["encoder"]) == set(ENCODERS)
    for name, meta in catalog.BUILTIN["encoder"].items():
        assert {k: ENCODERS.meta[name].get(k) for k in meta} == meta
    assert set(catalog.BUILTIN["fusion"]) == set(FUSIONS) and set(catalog.BUILTIN["head"]) == set(HEADS)


def test_create_model_from_an_experiment_config(tiny_loaded):
    import medmm
    from medmm.config import load_config
    from medmm.errors import NotFittedError
    from medmm.models import ModelConfig, build_preprocessor

    cfg = load_config({"cohort": {"manifest": "m.csv"}, "tasks": ["tumor"],
                       "model": {"dim": 8, "fusion": {"name": "gated"}, "encoders": {"vitals": {"name": "tcn"}}}})
    mc = cfg.model_config_for(("tumor",))
    pre = build_preprocessor(mc).fit(tiny_loaded.split("train"))
    model = medmm.create_model(cfg, pre)
    assert model.tasks == ("tumor",) and model.config.dim == 8 and type(model.encoders["vitals"]).__name__ == "TemporalCNN"
    probs = model.predict_records(tiny_loaded.records)
    assert probs.shape == (len(tiny_loaded.records), 1) and np.isfinite(probs).all()
    assert medmm.create_model(mc, pre, dim=16).config.dim == 16
    with pytest.raises(ConfigError, match="did you mean 'concat'"):
        medmm.create_model({"fusion": {"name": "concatt"}}, pre, tasks=("tumor",))
    with pytest.raises(NotFittedError):
        medmm.create_model(ModelConfig(), build_preprocessor(ModelConfig()))
    with pytest.raises(ConfigError, match="preprocessor or input_shapes"):
        medmm.create_model(ModelConfig())
