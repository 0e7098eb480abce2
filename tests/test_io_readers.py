"""One contract for the notes / vitals / EHR readers: every registered format is run through it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medmm.errors import MedmmError, ReadError
from medmm.io import infer_format, list_readers, read_modality
from medmm.problems import Problem, ProblemReport
from medmm.records import Notes, Tabular, Vitals

sys.path.insert(0, str(Path(__file__).parent))
from fhir_factory import patient_bundle, write_bundle  # noqa: E402

INDEX = pd.Timestamp("2024-06-01T12:00:00")
PID = "p1"


def _notes_rows():
    return [{"patient_id": PID, "time": "2024-05-01T08:00:00", "note_type": "nursing", "text": "No fever."}]


def _vitals_rows():
    return [("2024-05-31T08:00:00", "HR", 72.0, "bpm"), ("2024-05-31T09:00:00", "Temp", 98.6, "degF")]


def _ehr_events():
    return pd.DataFrame([(PID, None, "static", "sex", "sex", "F", ""),
                         (PID, "2024-05-01T00:00:00", "lab", "2524-7", "lactate", "1.5", "mmol/L")],
                        columns=["patient_id", "time", "kind", "code", "name", "value", "unit"])


def _make(tmp: Path, modality: str, fmt: str) -> Path:
    if (modality, fmt) == ("notes", "text"):
        (p := tmp / "n.txt").write_text("No fever.")
    elif (modality, fmt) == ("notes", "jsonl"):
        (p := tmp / "n.jsonl").write_text("\n".join(json.dumps(r) for r in _notes_rows()))
    elif (modality, fmt) == ("notes", "table"):
        pd.DataFrame(_notes_rows()).to_csv(p := tmp / "n.csv", index=False)
    elif fmt == "fhir":
        p = write_bundle(tmp / f"{modality}.json", patient_bundle(PID))
    elif (modality, fmt) == ("vitals", "long_csv"):
        pd.DataFrame(_vitals_rows(), columns=["time", "signal", "value", "unit"]).to_csv(p := tmp / "v.csv",
                                                                                         index=False)
    elif (modality, fmt) == ("vitals", "long_parquet"):
        pd.DataFrame(_vitals_rows(), columns=["time", "signal", "value", "unit"]).to_parquet(p := tmp / "v.parquet")
    elif (modality, fmt) == ("vitals", "wide_csv"):
        pd.DataFrame({"time": ["2024-05-31T08:00:00"], "HR [bpm]": [72]}).to_csv(p := tmp / "v.wide.csv",
                                                                                 index=False)
    elif (modality, fmt) == ("vitals", "wfdb"):
        import wfdb

        wfdb.wrsamp("num", fs=1, units=["bpm"], sig_name=["HR"], p_signal=np.full((60, 1), 70.0) + np.arange(60)[:, None] / 10,
                    fmt=["16"], write_dir=str(tmp), base_datetime=dt.datetime(2024, 5, 31, 8))
        p = tmp / "num.hea"
    elif (modality, fmt) == ("vitals", "ecg_wfdb"):
        import wfdb

        fs = 250
        t = np.arange(fs * 10) / fs
        ecg = sum(np.exp(-(((t - b) / 0.012) ** 2)) for b in np.arange(0.4, 10, 0.75))
        wfdb.wrsamp("rec_ecg", fs=fs, units=["mV"], sig_name=["II"], p_signal=ecg[:, None], fmt=["16"],
                    write_dir=str(tmp), base_datetime=dt.datetime(2024, 5, 31, 8))
        p = tmp / "rec_ecg.hea"
    elif (modality, fmt) == ("vitals", "ecg_dicom"):
        import shutil

        from pydicom.data import get_testdata_file

        p = Path(shutil.copy(get_testdata_file("waveform_ecg.dcm", download=False), tmp / "x.ecg.dcm"))
    elif (modality, fmt) == ("ehr", "wide_csv"):
        pd.DataFrame({"patient_id": [PID], "age [years]": [60]}).to_csv(p := tmp / "ehr.csv", index=False)
    elif (modality, fmt) == ("ehr", "wide_parquet"):
        pd.DataFrame({"patient_id": [PID], "age [years]": [60]}).to_parquet(p := tmp / "ehr.parquet")
    elif (modality, fmt) == ("ehr", "long_csv"):
        _ehr_events().to_csv(p := tmp / "e.events.csv", index=False)
    elif (modality, fmt) == ("ehr", "long_parquet"):
        _ehr_events().to_parquet(p := tmp / "e.events.parquet")
    else:  # pragma: no cover
        raise AssertionError(f"no sample for {modality}/{fmt}")
    return p


_NAME_OF_KIND = {"text": "notes", "series": "vitals", "table": "ehr"}  # readers are keyed by kind
MINE = [(_NAME_OF_KIND[k], f) for k, f in list_readers() if k in _NAME_OF_KIND]
TYPES = {"notes": Notes, "vitals": Vitals, "ehr": Tabular}


@pytest.mark.parametrize("modality,fmt", MINE, ids=[f"{m}-{f}" for m, f in MINE])
def test_reader_contract(tmp_path, modality, fmt):
    path = _make(tmp_path, modality, fmt)
    # the file name tells the format (a WFDB ECG is a .hea like any record: the reader sees the leads)
    assert infer_format(modality, path) == ("wfdb" if fmt == "ecg_wfdb" else fmt)
    index = pd.Timestamp("2030-01-01") if fmt == "ecg_dicom" else INDEX
    found = ProblemReport()
    value = read_modality(modality, path, fmt, patient_id=PID, index_time=index, report=found)
    assert isinstance(value, TYPES[modality])
    assert not hasattr(value, "problems")  # problems go to the report, never onto the value
    assert all(isinstance(p, Problem) and p.path for p in found)
    if modality == "image":
        assert value.source is not None and "report" not in dict(value.source.options)
    if modality == "vitals":
        f = value.frame
        assert list(f.columns) == ["time", "signal", "value", "unit"] and len(f)
        assert f["time"].dtype == "datetime64[ns]" and (f["time"] <= index).all()
        assert f["time"].is_monotonic_increasing
    if modality == "notes":
        assert all(n.time is None or n.time <= index for n in value.notes)
    # a garbage file of the same name gives a MedmmError naming the file, never a library error
    garbage = tmp_path / "garbage" / path.name
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00\xff garbage \xfe")
    if fmt in ("wfdb", "ecg_wfdb"):
        (garbage.parent / (path.name[:-4] + ".dat")).write_bytes(b"\x00")
    with pytest.raises(MedmmError) as ei:
        read_modality(modality, garbage, fmt, patient_id=PID, index_time=index)
    assert str(garbage.parent) in str(ei.value)
    with pytest.raises(ReadError, match="does not exist"):
        read_modality(modality, tmp_path / "missing" / path.name, fmt, patient_id=PID, index_time=index)
    if fmt == "ecg_wfdb":  # the generic WFDB reader gives the same derived heart rate
        assert read_modality("vitals", path, index_time=index).frame.equals(value.frame)


def test_fhir_docref_base64_roundtrip_in_contract_files(tmp_path):
    b = patient_bundle(PID)
    docs = [e["resource"] for e in b["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    texts = [base64.b64decode(d["content"][0]["attachment"]["data"]).decode() for d in docs]
    notes = read_modality("notes", write_bundle(tmp_path / "b.json", b))
    assert [n.text for n in notes.notes] == texts
