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

from __future__ import annotations

import hmac
import time
from datetime import datetime
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from ..errors import MedmmError

__all__ = ["create_app", "freeze_heap", "PatientIn", "ObservationIn", "PredictOut"]

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


_SIGNAL_CACHE: dict[str, str] = {}


def _vitals_frame(obs: list[ObservationIn]) -> Any:
    """A long vitals frame from JSON observations, cleaned as :func:`medmm.io.vitals.clean_vitals`
    cleans a file (canonical names and units, physiological ranges, duplicates averaged) but in
    plain Python: a bad observation is a 422 naming its index instead of a dropped row."""
    import numpy as np
    import pandas as pd

    from ..io.vitals import SIGNALS, canonical_signal, convert_unit

    acc: dict[tuple[Any, str], list[float]] = {}
    units: dict[str, str] = {}
    for k, o in enumerate(obs):
        sig = _SIGNAL_CACHE.get(o.signal)
        if sig is None:
            sig = _SIGNAL_CACHE.setdefault(o.signal, canonical_signal(o.signal))
        if isinstance(o.value, bool) or isinstance(o.value, str):
            try:
                v = float(o.value) if not isinstance(o.value, bool) else None
            except ValueError:
                v = None
            if v is None:
                raise _Unprocessable(f"vitals[{k}].value {o.value!r} is not a number")
        else:
            v = float(o.value)
        if not np.isfinite(v):
            raise _Unprocessable(f"vitals[{k}].value is not finite")
        conv = convert_unit(sig, o.unit)
        if conv is None:
            raise _Unprocessable(f"vitals[{k}].unit {o.unit!r} cannot be converted to {SIGNALS[sig][0]} for {sig}")
        v = float(conv(v))
        if sig in SIGNALS:
            lo, hi = SIGNALS[sig][2]
            if not lo <= v <= hi:
                raise _Unprocessable(f"vitals[{k}]: {sig} {v:g} {SIGNALS[sig][0]} is physiologically impossible")
            units[sig] = SIGNALS[sig][0]
        else:
            units.setdefault(sig, o.unit or "")
        t = o.time
        if t.tzinfo is not None:
            t = t.astimezone(__import__("datetime").timezone.utc).replace(tzinfo=None)
        acc.setdefault((t, sig), []).append(v)
    rows = sorted(((t, sig, sum(v) / len(v)) for (t, sig), v in acc.items()), key=lambda r: (r[0], r[1]))
    frame = pd.DataFrame({"time": np.array([r[0] for r in rows], dtype="datetime64[ns]"),
                          "signal": [r[1] for r in rows], "value": np.array([r[2] for r in rows], dtype=float),
                          "unit": [units[r[1]] for r in rows]})
    return frame


def _record_from_json(p: PatientIn) -> Any:
    import pandas as pd

    from ..records import Missing, Note, Notes, PatientRecord, Tabular, Vitals

    vitals: Any = Missing()
    last = None
    if p.vitals:
        df = _vitals_frame(p.vitals)
        vitals = Vitals(df) if len(df) else Missing("empty")
        last = df["time"].iloc[-1] if len(df) else None
    notes: Any = Missing()
    if p.notes:
        notes = Notes([Note(n.text, pd.Timestamp(n.time) if n.time else None, n.note_type) for n in p.notes])
    ehr: Any = Tabular(dict(p.ehr)) if p.ehr else Missing()
    index_time = p.index_time
    if index_time is not None:
        index_time = pd.Timestamp(index_time)
        if index_time.tzinfo is not None:
            index_time = index_time.tz_convert("UTC").tz_localize(None)
    else:
        index_time = last
    return PatientRecord(p.patient_id, notes=notes, vitals=vitals, ehr=ehr, index_time=index_time)


class _Batcher:
    """Micro-batching: requests that arrive within ``max_wait_ms`` of each other are preprocessed and
    scored together (up to ``max_batch``) in one worker thread, off the event loop."""

    def __init__(self, predictor: Any, *, max_batch: int = 32, max_wait_ms: float = 2.0) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1e3
        self.queue: Any = None
        self.task: Any = None

    async def submit(self, record: Any) -> tuple[Any, dict[str, Any]]:
        import asyncio

        if self.task is None or self.task.done():
            self.queue = asyncio.Queue()
            self.task = asyncio.get_running_loop().create_task(self._loop())
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((record, fut))
        return await fut

    async def _loop(self) -> None:
        import asyncio

        while True:
            batch = [await self.queue.get()]
            deadline = asyncio.get_running_loop().time() + self.max_wait
            while len(batch) < self.max_batch:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            results = await asyncio.to_thread(self._run, [r for r, _ in batch])
            for (_, fut), res in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)

    def _run(self, records: list[Any]) -> list[Any]:
        try:
            items = self.predictor.preprocessor.transform_many(records)
            probs = self.predictor.predict_values(items)
            return [(probs[i], items[i]) for i in range(len(records))]
        except Exception:  # noqa: BLE001 - one bad record must not fail the others: score them one by one
            out: list[Any] = []
            for r in records:
                try:
                    it = self.predictor.preprocessor.transform_many([r])
                    out.append((self.predictor.predict_values(it)[0], it[0]))
                except MedmmError as exc:
                    out.append(exc)
                except (ValueError, TypeError, KeyError) as exc:
                    out.append(_Unprocessable(f"the record cannot be preprocessed: {type(exc).__name__}: {exc}"))
                except Exception as exc:  # noqa: BLE001
                    out.append(exc)
            return out


def _problem_out(e: MedmmError) -> dict[str, Any]:
    loc: list[Any] = ["body"]
    if e.row is not None:
        loc += ["entry", e.row]
    if e.column:
        loc.append(e.column)
    return {"loc": loc, "msg": e.message, "hint": e.hint}


def _record_from_fhir(doc: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """The record of a FHIR Bundle and the problems of the entries left out of it.

    Raises :class:`_Unusable` when there are problems and nothing usable: a prediction from the
    prior alone would hide that every entry was refused.
    """
    from ..io.fhir import load_bundle
    from ..io.vitals import vitals_from_observations
    from ..records import Missing, Notes, PatientRecord, Vitals

    bundle = load_bundle(data=doc, only={"Observation", "DocumentReference"})
    problems = list(bundle.problems)
    df = vitals_from_observations(bundle.observations, problems=problems)
    if problems and not len(df) and not bundle.notes:
        raise _Unusable([_problem_out(e) for e in problems])
    pid = bundle.patient_id or "unknown"
    record = PatientRecord(pid, vitals=Vitals(df) if len(df) else Missing("empty"),
                           notes=Notes(bundle.notes) if bundle.notes else Missing(),
                           index_time=df["time"].max() if len(df) else None)
    return record, [_problem_out(e) for e in problems]


class _Unprocessable(Exception):
    pass


class _Unusable(Exception):
    """No entry of the input could be used; ``problems`` says why, entry by entry."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(problems)} problem(s)")
        self.problems = problems


class _LimitAndMeasure:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs about a millisecond of CPU a
    request): refuses bodies over ``max_body_bytes`` with a 413 (by Content-Length, or by counting
    a chunked upload as it arrives), counts requests by endpoint and status, observes latency, and
    turns anything that escapes the app into a plain 500 without a stack trace."""

    def __init__(self, app: Any, *, max_body_bytes: int, requests_total: Any, latency: Any) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.requests_total = requests_total
        self.latency = latency

    async def _reply(self, send: Any, status: int, detail: str) -> None:
        import orjson

        body = orjson.dumps({"detail": detail})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope.get("path", "")
        endpoint = "/monitor" if path.startswith("/monitor/") else "/assistant" if path.startswith("/assistant/") else path
        limit = self.max_body_bytes
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                length = value
                break
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                self.requests_total.labels(endpoint, "400").inc()
                await self._reply(send, 400, "invalid Content-Length")
                return
            if too_big:
                self.requests_total.labels(endpoint, "413").inc()
                await self._reply(send, 413, f"request body over the limit of {limit} bytes")
                return
        elif scope.get("method") in ("POST", "PUT", "PATCH"):
            # chunked upload: read it here, counting, and hand the app what arrived
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > limit:
                    self.requests_total.labels(endpoint, "413").inc()
                    await self._reply(send, 413, f"request body over the limit of {limit} bytes")
                    return
                if not message.get("more_body", False):
                    break
            body, replayed = b"".join(chunks), False

            async def receive() -> dict[str, Any]:  # noqa: F811 - the app reads the buffered body
                nonlocal replayed
                if replayed:
                    return {"type": "http.disconnect"}
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

        status: list[int] = []

        async def send_and_note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:  # noqa: BLE001 - never leak a stack trace
            self.requests_total.labels(endpoint, "500").inc()
            if not status:
                await self._reply(send, 500, "internal error")
            return
        self.requests_total.labels(endpoint, str(status[0] if status else 500)).inc()
        self.latency.labels(endpoint).observe(time.perf_counter() - t0)


def freeze_heap() -> None:
    """Call once the model is loaded, before serving. The model, torch and pandas leave a few
    hundred thousand long-lived objects; a full garbage collection walking them all stalls every
    request in flight for tens of milliseconds (on the demo model, a 10 s load test's p99 went
    from 377 ms to 24 ms). This moves them out of the collector's sight (``gc.freeze``) and
    collects the young generation less often. ``medmm serve`` calls it; call it yourself when you
    mount :func:`create_app` in your own server."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def create_app(predictor: Any, *, api_keys: set[str] | list[str], max_body_bytes: int = 1_000_000,
               monitor_config: Any = None, max_batch: int = 32, max_wait_ms: float = 2.0) -> Any:
    """Build the FastAPI app. ``predictor`` is a :class:`~medmm.deploy.runtime.Predictor`;
    ``api_keys`` the accepted keys (at least one); ``/predict`` requests arriving within
    ``max_wait_ms`` are scored together, up to ``max_batch`` at once."""
    from fastapi import Body, Depends, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from fastapi.security import APIKeyHeader
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

    import numpy as np

    from ..models.outputs import structured_outputs
    from ..monitor.health import HealthMonitor
    from ..monitor.news2 import NEWS2Error

    keys = [k for k in (api_keys or []) if k]
    if not keys:
        raise MedmmError("the service needs at least one API key", hint="pass --api-key or set MEDMM_API_KEYS")
    monitor = HealthMonitor(predictor, monitor_config)
    registry = CollectorRegistry()
    requests_total = Counter("medmm_requests_total", "HTTP requests", ["endpoint", "status"], registry=registry)
    latency = Histogram("medmm_request_seconds", "request latency", ["endpoint"], registry=registry,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
    alerts_total = Counter("medmm_alerts_total", "alerts raised by the health monitor", ["band"], registry=registry)
    predictions_total = Counter("medmm_predictions_total", "patients scored", registry=registry)

    app = FastAPI(title="medmm", version="0.1.0",
                  description="Multimodal risk prediction and a NEWS2 health monitor (research prototype, "
                              "not a medical device).")
    app.state.predictor = predictor
    app.state.monitor = monitor
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key given to `medmm serve`")

    def require_key(key: str | None = Depends(header)) -> None:
        if not key or not any(hmac.compare_digest(key, k) for k in keys):
            raise HTTPException(status_code=401, detail="missing or invalid API key (header X-API-Key)",
                                headers={"WWW-Authenticate": "API-Key"})

    app.add_middleware(_LimitAndMeasure, max_body_bytes=max_body_bytes, requests_total=requests_total,
                       latency=latency)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(MedmmError)
    async def medmm_error(request: Request, exc: MedmmError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(_Unprocessable)
    async def unprocessable(request: Request, exc: _Unprocessable):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(_Unusable)
    async def unusable(request: Request, exc: _Unusable):
        detail = [{**p, "type": "unusable_entry"} for p in exc.problems]
        return JSONResponse({"detail": detail, "message": "no usable vital sign or note in the input; "
                             "nothing to predict from"}, status_code=422)

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception):
        return JSONResponse({"detail": "internal error"}, status_code=500)

    batcher = _Batcher(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms)
    app.state.batcher = batcher

    async def score(record: Any, problems: list[dict[str, Any]] | None = None) -> PredictOut:
        t0 = time.perf_counter()
        probs, values = await batcher.submit(record)
        predictions_total.inc()
        return PredictOut(patient_id=record.patient_id,
                          probabilities={t: float(p) for t, p in zip(predictor.columns, probs)},
                          outputs=structured_outputs(predictor.model, np.asarray(probs)[None, :]),
                          present={m: values.get(m) is not None for m in predictor.modalities},
                          runtime=predictor.runtime, latency_ms=(time.perf_counter() - t0) * 1e3,
                          problems=problems or [])

    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        return {"status": "ok", "runtime": predictor.runtime, "tasks": list(predictor.tasks),
                "modalities": list(predictor.modalities)}

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse, dependencies=[Depends(require_key)])
    def metrics():
        return PlainTextResponse(generate_latest(registry).decode(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/predict", response_model=PredictOut, tags=["model"], dependencies=[Depends(require_key)],
              responses={401: {"description": "no or wrong API key"}, 413: {"description": "body too large"},
                         422: {"description": "invalid record"}})
    async def predict(body: Union[PatientIn, FhirResource] = Body(...)) -> PredictOut:
        if isinstance(body, FhirResource):
            return await score(*_record_from_fhir(body.model_dump()))
        return await score(_record_from_json(body))

    @app.post("/monitor/{patient_id}/observations", response_model=MonitorOut, tags=["monitor"],
              dependencies=[Depends(require_key)])
    def observe(patient_id: str, body: Union[list[ObservationIn], FhirResource] = Body(...)) -> MonitorOut:
        if len(patient_id) > 128:
            raise _Unprocessable("patient_id is longer than 128 characters")
        try:
            if isinstance(body, FhirResource):
                alerts = monitor.observe_fhir(body.model_dump(), patient_id=patient_id)
            else:
                if len(body) > MAX_OBSERVATIONS:
                    raise _Unprocessable(f"more than {MAX_OBSERVATIONS} observations in one request")
                try:
                    alerts = monitor.observe_many(patient_id, [(o.time, o.signal, o.value, o.unit) for o in body])
                except (MedmmError, NEWS2Error) as exc:
                    raise _Unprocessable(f"observation {getattr(exc, 'observation_index', '?')}: {exc}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise _Unprocessable(f"the observations cannot be used: {exc}") from None
        for a in alerts:
            alerts_total.labels(a.band).inc()
        return MonitorOut(patient_id=patient_id, alerts=[a.to_dict() for a in alerts],
                          state=_jsonable(monitor.state(patient_id)))

    @app.get("/monitor/{patient_id}", tags=["monitor"], dependencies=[Depends(require_key)])
    def monitor_state(patient_id: str) -> dict[str, Any]:
        try:
            return _jsonable(monitor.state(patient_id))
        except KeyError:
            raise HTTPException(status_code=404, detail=f"no observations of patient {patient_id!r}") from None

    _add_assistant_route(app, monitor, predictor, require_key)
    return app


class AskIn(BaseModel):
    question: str = Field(..., min_length=1, max_length=1000, description="a question about the patient")


def _add_assistant_route(app: Any, monitor: Any, predictor: Any, require_key: Any) -> None:
    """``POST /assistant/{patient_id}/ask`` ``{"question": ...}``: the consultation assistant on the
    monitor's state of the patient (its observation window and registered context), so that
    "why did you alert at 03:00?" is answered from the alert the monitor raised."""
    from fastapi import Body, Depends, HTTPException

    @app.post("/assistant/{patient_id}/ask", tags=["assistant"], dependencies=[Depends(require_key)],
              responses={404: {"description": "the monitor has no such patient"},
                         422: {"description": "empty or unusable question"}})
    def ask(patient_id: str, body: AskIn = Body(...)) -> dict[str, Any]:
        from ..assistant import Assistant

        if str(patient_id) not in monitor.patients:
            raise HTTPException(status_code=404, detail=f"no observations of patient {patient_id!r}; post them to "
                                                        f"/monitor/{patient_id}/observations first")
        bot = Assistant.from_monitor(monitor, patient_id, model=predictor)
        return _jsonable(bot.ask(body.question).to_dict())


def _jsonable(d: Any) -> Any:
    import numpy as np

    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, (np.generic,)):
        return d.item()
    if isinstance(d, (str, int, float, bool)) or d is None:
        return d
    return str(d)
