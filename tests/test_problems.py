"""One problem mechanism: readers report into a ProblemReport, attach nothing, and the cohort
moves their problems to the manifest's row without losing the file's row."""

import pandas as pd
import pytest

from medmm.cohort import Cohort
from medmm.errors import ReadError
from medmm.io.ehr import load_events, read_ehr_long
from medmm.io.notes import read_notes_table
from medmm.io.vitals import read_vitals_long
from medmm.problems import Problem, ProblemReport


def _vitals(tmp_path):
    p = tmp_path / "v.csv"
    # a monitor export as charted: a unit typo and a value transcribed with its unit
    pd.DataFrame([("2024-01-01T08:00:00", "HR", "72", "bpm"), ("2024-01-01T08:05:00", "HR", "72 bpm", "bpm"),
                  ("2024-01-01T08:10:00", "Temp", "37.1", "degK?")],
                 columns=["time", "signal", "value", "unit"]).to_csv(p, index=False)
    return p


def test_reader_reports_into_the_sink_and_attaches_nothing(tmp_path):
    p = _vitals(tmp_path)
    found = ProblemReport()
    v = read_vitals_long(p, report=found)
    assert not hasattr(v, "problems") and len(v) == 1
    assert [(q.row, q.column, q.severity, q.kind) for q in found] == [
        (1, "value", "warning", "ReadError"), (2, "unit", "warning", "ReadError")]
    assert all(q.path == str(p) and q.hint for q in found)
    with pytest.warns(UserWarning, match=r"2 problem\(s\).*pass report=ProblemReport"):
        read_vitals_long(p)
    with pytest.raises(ReadError, match="not a number") as ei:
        read_vitals_long(p, strict=True, report=ProblemReport())
    assert ei.value.row == 1


def test_event_and_note_tables_report_per_patient(tmp_path):
    ev = tmp_path / "events.csv"
    pd.DataFrame({"patient_id": ["A", "A", "B"], "time": ["2024-01-01", "not a date", None],
                  "kind": ["lab", "lab", "lab"], "code": ["2524-7"] * 3, "value": [2.0, 3.0, 4.0]}).to_csv(ev, index=False)
    a, whole = ProblemReport(), ProblemReport()
    tab = read_ehr_long(ev, patient_id="A", index_time="2024-02-01", report=a)
    assert not hasattr(tab, "problems") and [q.row for q in a] == [1]
    df = load_events(ev, report=whole)
    assert "problems" not in df.attrs and sorted(q.row for q in whole) == [1, 2]
    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"patient_id": "A", "time": "2024-01-01T08:00:00Z", "text": "stable"}\n{broken\n')
    found = ProblemReport()
    read_notes_table(notes, patient_id="A", report=found)
    assert [(q.row, "not valid JSON" in q.message) for q in found] == [(1, True)]


def test_problem_moved_to_the_manifest_row_keeps_the_file_row():
    p = Problem.from_error(ReadError("value 'x' is not a number", path="v.csv", row=7, column="value", hint="fix it"))
    moved = p.located(row=3, column="vitals_path", patient_id="P1", modality="vitals")
    assert (moved.row, moved.column, moved.patient_id) == (3, "vitals_path", "P1")
    assert moved.message == "v.csv, row 7, column 'value': value 'x' is not a number" and moved.hint == "fix it"
    assert moved.to_error().row == 3


def test_cohort_collects_reader_problems_once(tmp_path):
    _vitals(tmp_path)
    pd.DataFrame({"patient_id": ["P1", "P2"], "vitals_path": ["v.csv", "v.csv"], "label_y": [0, 1],
                  "split": ["train", "test"]}).to_csv(tmp_path / "m.csv", index=False)
    cohort = Cohort.from_manifest(tmp_path / "m.csv")
    recs = cohort.records
    assert len(recs) == 2 and not hasattr(recs[0].modalities["vitals"], "problems")
    got = [(q.row, q.column, q.patient_id, q.modality) for q in cohort.report if q.modality == "vitals"]
    assert got == [(0, "vitals_path", "P1", "vitals")] * 2 + [(1, "vitals_path", "P2", "vitals")] * 2
    assert all("v.csv, row" in q.message for q in cohort.report if q.modality == "vitals")
