"""The ASGI middleware: body-size limit, request counts and latency, no stack trace out."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram
    from starlette.types import ASGIApp, Message, Receive, Scope, Send


class LimitAndMeasure:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` costs about a millisecond of CPU a
    request): refuses bodies over ``max_body_bytes`` with a 413 (by Content-Length, or by counting
    a chunked upload as it arrives), counts requests by endpoint and status, observes latency, and
    turns anything that escapes the app into a plain 500 without a stack trace."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, requests_total: Counter, latency: Histogram) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.requests_total = requests_total
        self.latency = latency

    async def _reply(self, send: Send, status: int, detail: str) -> None:
        import orjson

        body = orjson.dumps({"detail": detail})
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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

            async def receive() -> Message:  # noqa: F811 - the app reads the buffered body
                nonlocal replayed
                if replayed:
                    return {"type": "http.disconnect"}
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

        status: list[int] = []

        async def send_and_note(message: Message) -> None:
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
