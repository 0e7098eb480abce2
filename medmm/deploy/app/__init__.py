"""The medmm service: a FastAPI app around a :class:`~medmm.deploy.runtime.Predictor` and a
:class:`~medmm.monitor.health.HealthMonitor`.

Endpoints (all but ``/health`` and the OpenAPI schema need the ``X-API-Key`` header):

* ``POST /predict``: a patient record as JSON (vitals observations, notes, EHR features) or a
  FHIR R4 Bundle (vital-sign Observations by LOINC and DocumentReference notes); returns the
  probability of each task, which modalities the model saw and the problems of the entries it
  could not use. A Bundle with problems and nothing usable is refused (422, the problems listed).
* ``POST /monitor/{patient_id}/observations``: observations (plain or a FHIR Observation or
  Bundle) fed to the health monitor; returns the alerts raised and the patient's NEWS2 and risk.
* ``GET /monitor/{patient_id}``: the patient's current monitor state.
* ``POST /assistant/{patient_id}/ask``: a question about the patient answered from the monitor's
  state, every statement cited (:mod:`medmm.assistant`).
* ``GET /health``: liveness and the model loaded (no patient data).
* ``GET /metrics``: Prometheus text format (request counts and latencies, alerts).

Bad input gets a 4xx with a JSON ``detail`` (what was wrong and where), never a stack trace;
bodies above ``max_body_bytes`` get 413.
"""

from .routes import create_app, freeze_heap
from .schemas import ObservationIn, PatientIn, PredictOut

__all__ = ["create_app", "freeze_heap", "PatientIn", "ObservationIn", "PredictOut"]
