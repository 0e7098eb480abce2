"""The FastAPI app: its endpoints, error handlers and metrics."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Union

from ...errors import MedmmError
from .batching import Batcher
from .conversion import record_from_fhir, record_from_json, Unprocessable, Unusable
from .middleware import LimitAndMeasure
from .schemas import MAX_OBSERVATIONS, AskIn, FhirResource, MonitorOut, ObservationIn, PatientIn, PredictOut

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ...monitor.health import HealthMonitor, MonitorConfig
    from ...records import PatientRecord
    from ..runtime import Predictor


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


def create_app(predictor: Predictor, *, api_keys: set[str] | list[str], max_body_bytes: int = 1_000_000,
               monitor_config: MonitorConfig | None = None, max_batch: int = 32, max_wait_ms: float = 2.0) -> FastAPI:
    """Build the FastAPI app. ``predictor`` is a :class:`~medmm.deploy.runtime.Predictor`;
    ``api_keys`` the accepted keys (at least one); ``/predict`` requests arriving within
    ``max_wait_ms`` are scored together, up to ``max_batch`` at once."""
    import numpy as np
    from fastapi import Body, Depends, FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from fastapi.security import APIKeyHeader
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

    from ...models.outputs import structured_outputs
    from ...monitor.health import HealthMonitor
    from ...monitor.news2 import NEWS2Error

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

    app.add_middleware(LimitAndMeasure, max_body_bytes=max_body_bytes, requests_total=requests_total,
                       latency=latency)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(MedmmError)
    async def medmm_error(request: Request, exc: MedmmError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Unprocessable)
    async def unprocessable(request: Request, exc: Unprocessable):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(Unusable)
    async def unusable(request: Request, exc: Unusable):
        detail = [{**p, "type": "unusable_entry"} for p in exc.problems]
        return JSONResponse({"detail": detail, "message": "no usable vital sign or note in the input; "
                             "nothing to predict from"}, status_code=422)

    @app.exception_handler(Exception)
    async def any_error(request: Request, exc: Exception):
        return JSONResponse({"detail": "internal error"}, status_code=500)

    batcher = Batcher(predictor, max_batch=max_batch, max_wait_ms=max_wait_ms)
    app.state.batcher = batcher

    async def score(record: PatientRecord, problems: list[dict[str, Any]] | None = None) -> PredictOut:
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
            return await score(*record_from_fhir(body.model_dump()))
        return await score(record_from_json(body))

    @app.post("/monitor/{patient_id}/observations", response_model=MonitorOut, tags=["monitor"],
              dependencies=[Depends(require_key)])
    def observe(patient_id: str, body: Union[list[ObservationIn], FhirResource] = Body(...)) -> MonitorOut:
        if len(patient_id) > 128:
            raise Unprocessable("patient_id is longer than 128 characters")
        try:
            if isinstance(body, FhirResource):
                alerts = monitor.observe_fhir(body.model_dump(), patient_id=patient_id)
            else:
                if len(body) > MAX_OBSERVATIONS:
                    raise Unprocessable(f"more than {MAX_OBSERVATIONS} observations in one request")
                try:
                    alerts = monitor.observe_many(patient_id, [(o.time, o.signal, o.value, o.unit) for o in body])
                except (MedmmError, NEWS2Error) as exc:
                    raise Unprocessable(f"observation {getattr(exc, 'observation_index', '?')}: {exc}") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise Unprocessable(f"the observations cannot be used: {exc}") from None
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


def _add_assistant_route(app: FastAPI, monitor: HealthMonitor, predictor: Predictor, require_key: Callable[..., None]) -> None:
    """``POST /assistant/{patient_id}/ask`` ``{"question": ...}``: the consultation assistant on the
    monitor's state of the patient (its observation window and registered context), so that
    "why did you alert at 03:00?" is answered from the alert the monitor raised."""
    from fastapi import Body, Depends, HTTPException

    @app.post("/assistant/{patient_id}/ask", tags=["assistant"], dependencies=[Depends(require_key)],
              responses={404: {"description": "the monitor has no such patient"},
                         422: {"description": "empty or unusable question"}})
    def ask(patient_id: str, body: AskIn = Body(...)) -> dict[str, Any]:
        from ...assistant import Assistant

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
