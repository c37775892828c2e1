"""The edge server's HTTP interface (FastAPI): one bitstream per request in, one JSON answer out.

Routes::

    POST /v1/infer    body: one bitstream (application/octet-stream); headers: X-Splitbench-Fingerprint (the
                      bundle's model fingerprint), optional X-Request-Id (echoed back)
                      → {"request_id", "predictions": {task: answer}, "batch_size", "timing_ms": {...}}
    GET  /v1/model    the model: run, method, fingerprint, tasks, classes, the streams it reads (+ the bundle's
                      manifest when served from a bundle)
    GET  /v1/stats    requests answered and refused, and how many batches ran at each size
    GET  /v1/health   {"status": "ok"}, never behind the token (for load balancers and startup probes)

Every refusal is a JSON ``{"error": "<one line>"}`` with a status that says whose fault it is: 400 a bitstream the
parser refuses (its message), 401/403 no or a wrong token, 408 a body that does not arrive in time, 409 a
bundle of another model, 413 a body over the limit (checked on Content-Length and again on the bytes that
stream in), 503 + Retry-After a full queue, 504 an answer later than the per-request timeout. Nothing on the
request path unpickles or evaluates anything: a body is bytes handed to the bitstream parser.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from splitbench.compression.bitstream import BitstreamError
from splitbench.runtime.batcher import DynamicBatcher, QueueFull, Result
from splitbench.runtime.protocol import (
    FINGERPRINT_HEADER,
    HEALTH,
    INFER,
    MAX_REQUEST_ID,
    MODEL,
    REQUEST_ID_HEADER,
    STATS,
)
from splitbench.runtime.server import BatchAnswer


class Model(Protocol):
    """What the HTTP server needs of a model (:class:`~splitbench.runtime.server.Server`, or a test double)."""

    fingerprint: str

    def check(self, payload: bytes, max_bytes: int) -> None: ...

    def answer(self, payloads: list[bytes]) -> BatchAnswer: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ServeSettings:
    """How the server batches and what it refuses (the ``splitbench serve`` options)."""

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_batch: int = 16
    max_delay_ms: float = 5.0
    max_body_bytes: int = 1 << 20
    queue_size: int = 256
    timeout_s: float = 10.0


class HttpError(Exception):
    """A refusal: its status, one line for the client, and headers (Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def _refusal(error: HttpError) -> JSONResponse:
    return JSONResponse({"error": error.message}, error.status, headers=error.headers)


def check_token(token: str | None, authorization: str | None) -> None:
    """401 without a bearer token, 403 with a wrong one; compared in constant time."""
    if token is None:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise HttpError(401, "this server needs 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise HttpError(403, "wrong token")


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body, refused past ``limit`` bytes (413, on Content-Length first, then on what streams in) or when it
    takes over ``timeout_s`` to arrive (408: a client too slow to hold a connection)."""
    length = request.headers.get("content-length")
    if length is not None and not length.isdigit():
        raise HttpError(400, "Content-Length is not a number", {"Connection": "close"})
    if length is not None and int(length) > limit:
        raise HttpError(413, f"body of {length} bytes is over this server's limit of {limit}", {"Connection": "close"})

    async def receive() -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HttpError(413, f"body is over this server's limit of {limit} bytes", {"Connection": "close"})
        return bytes(body)

    try:
        return await asyncio.wait_for(receive(), timeout_s)
    except asyncio.TimeoutError:
        raise HttpError(408, f"the body did not arrive within {timeout_s:g} s", {"Connection": "close"}) from None


def request_id(request: Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is None:
        return uuid.uuid4().hex
    if not 0 < len(given) <= MAX_REQUEST_ID or not given.isprintable():
        raise HttpError(400, f"{REQUEST_ID_HEADER} must be 1 to {MAX_REQUEST_ID} printable characters")
    return given


def _ms(seconds: float) -> float:
    return round(1000 * seconds, 3)


def create_app(model: Model, settings: ServeSettings, manifest: dict[str, Any] | None = None) -> FastAPI:
    """The server's app around ``model``: the batcher starts and stops with the app (its lifespan)."""
    counts: Counter[str] = Counter()  # answered, and refusals by status
    state: dict[str, DynamicBatcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher = DynamicBatcher(model.answer, settings.max_batch, settings.max_delay_ms / 1000, settings.queue_size)
        batcher.start()
        state["batcher"] = batcher
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="splitbench edge server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    async def authorized(request: Request) -> None:
        check_token(settings.token, request.headers.get("authorization"))

    guarded = [Depends(authorized)]

    @app.exception_handler(HttpError)
    async def refused(request: Request, error: HttpError) -> JSONResponse:
        counts[str(error.status)] += 1
        return _refusal(error)

    @app.get(HEALTH)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(MODEL, dependencies=guarded)
    async def describe() -> dict[str, Any]:
        info = model.describe()
        return {**info, "manifest": manifest} if manifest is not None else info

    @app.get(STATS, dependencies=guarded)
    async def stats() -> dict[str, Any]:
        sizes = state["batcher"].batch_sizes
        return {"requests": dict(counts), "batch_sizes": {str(k): v for k, v in sorted(sizes.items())},
                "settings": {"max_batch": settings.max_batch, "max_delay_ms": settings.max_delay_ms,
                             "queue_size": settings.queue_size, "max_body_bytes": settings.max_body_bytes}}

    @app.post(INFER, dependencies=guarded)
    async def infer(request: Request) -> Response:
        arrived = time.perf_counter()
        rid = request_id(request)
        theirs = request.headers.get(FINGERPRINT_HEADER)
        if theirs is None:
            raise HttpError(400, f"missing {FINGERPRINT_HEADER}: send the fingerprint of the bundle that coded it")
        if not hmac.compare_digest(theirs.encode(), model.fingerprint.encode()):
            raise HttpError(409, f"bitstream coded by another model (fingerprint {theirs[:12]}…, this server's "
                            f"{model.fingerprint[:12]}…); export the bundle from the run this server serves")
        try:
            body = await read_body(request, settings.max_body_bytes, settings.timeout_s)
        except ClientDisconnect:
            counts["disconnected"] += 1
            return Response(status_code=499)  # nobody is there to read it
        try:
            model.check(body, settings.max_body_bytes)
            future = state["batcher"].submit(body)
        except BitstreamError as error:
            raise HttpError(400, str(error)) from None
        except QueueFull as error:
            raise HttpError(503, f"{error}; retry later", {"Retry-After": "1"}) from None
        try:
            result: Result = await asyncio.wait_for(future, settings.timeout_s)
        except asyncio.TimeoutError:
            raise HttpError(504, f"no answer within {settings.timeout_s:g} s") from None
        if isinstance(result.answer, BitstreamError):  # refused by the entropy decoder, past the checks
            raise HttpError(400, str(result.answer))
        counts["answered"] += 1
        timing = {"queue": _ms(result.queue_s), "decode": _ms(result.decode_s), "network": _ms(result.network_s),
                  "total": _ms(time.perf_counter() - arrived)}
        return JSONResponse({"request_id": rid, "predictions": result.answer, "batch_size": result.batch_size,
                             "bytes": len(body), "timing_ms": timing}, headers={REQUEST_ID_HEADER: rid})

    return app
