"""The service's request and response bodies (pydantic), with their size limits."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

MAX_OBSERVATIONS = 20_000
MAX_NOTES = 200
MAX_TEXT = 200_000


class ObservationIn(BaseModel):
    """One vital-sign observation."""

    model_config = ConfigDict(extra="forbid")
    time: datetime = Field(description="ISO 8601 time of the observation")
    signal: str = Field(min_length=1, max_length=64, description="signal name, e.g. heart_rate, HR, spo2, "
                        "resp_rate, sbp, temperature, consciousness (ACVPU), on_oxygen, o2_flow")
    value: Union[float, str, bool] = Field(description="numeric value (ACVPU letter for consciousness)")
    unit: str | None = Field(default=None, max_length=32, description="unit, converted to medmm's canonical unit")


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    time: datetime | None = None
    note_type: str = Field(default="note", max_length=64)


class PatientIn(BaseModel):
    """A patient record: any subset of modalities (an absent one is simply left out)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "patient_id": "P001", "index_time": "2024-05-01T08:00:00",
        "vitals": [{"time": "2024-05-01T07:00:00", "signal": "heart_rate", "value": 92, "unit": "bpm"}],
        "notes": [{"text": "Findings: a 2 cm mass in the left lobe."}],
        "ehr": {"age": 64, "sex": "F", "lactate": 2.1}}]})
    patient_id: str = Field(min_length=1, max_length=128)
    index_time: datetime | None = Field(default=None, description="prediction time (default: the last observation)")
    vitals: list[ObservationIn] | None = Field(default=None, max_length=MAX_OBSERVATIONS)
    notes: list[NoteIn] | None = Field(default=None, max_length=MAX_NOTES)
    ehr: dict[str, Union[float, int, str, bool, None]] | None = Field(default=None, max_length=2000)


class FhirResource(BaseModel):
    """A FHIR R4 resource (Bundle or Observation); its content is checked by medmm's FHIR reader."""

    model_config = ConfigDict(extra="allow")
    resourceType: Literal["Bundle", "Observation"]


class ProblemOut(BaseModel):
    """An input entry that could not be used (left out of the prediction)."""

    loc: list[Union[str, int]] = Field(description="where: body, entry index, field")
    msg: str
    hint: str | None = None


class PredictOut(BaseModel):
    patient_id: str
    probabilities: dict[str, float]
    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "per task: {kind, probability} (binary), {probabilities, predicted_class} (multiclass), {value, unit} "
        "(regression), {risk_score, risk: {horizon: risk by then}, time_unit} (survival)"))
    present: dict[str, bool]
    runtime: str
    latency_ms: float
    problems: list[ProblemOut] = Field(default_factory=list, description="entries left out, and why")


class MonitorOut(BaseModel):
    patient_id: str
    alerts: list[dict[str, Any]]
    state: dict[str, Any]


class AskIn(BaseModel):
    question: str = Field(..., min_length=1, max_length=1000, description="a question about the patient")
