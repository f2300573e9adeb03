"""The HTTP routes of ``r1reward serve``.

    POST /v1/compare   {question, images, response_1, response_2, k?, swap?, seed?}
                       -> {winner, votes, vote_share, agreement, reasoning, k, seed, swap[, votes_swapped]}
    POST /v1/rank      {question, images, responses: [2 <= N <= --max-responses], k?, seed?, both_orders?}
                       -> {order, scores, wins, k, seed, both_orders}
    POST /get_reward   OpenRLHF: {query: [...], prompts?, labels?} -> {rewards, scores} (see serve/openrlhf.py)
    GET  /health, /metrics (Prometheus text): open to all; /v1/models, /openapi.json

Every error is a JSON ``{"error": "one line"}``: 400 for a bad body (missing field, wrong type, k out of
range, fewer than 2 responses, an image that is refused or cannot be decoded), 401 without the API key
(``Authorization: Bearer KEY`` when the server has one), 413 for a body over --max-body-mb or a request
of more than --max-batch generations or --max-responses responses, 503 with Retry-After when the queue
is full, 504 when the engine does not answer within --timeout, 500 for anything else. Error lines carry
no exception text and no server path; the server log has them.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from r1reward.serve.schemas import CompareRequest, GetRewardRequest, RankRequest, ServeError, one_line
from r1reward.serve.service import RewardService

log = logging.getLogger("r1reward.serve")
ENDPOINTS = ("/v1/compare", "/v1/rank", "/get_reward", "/health", "/v1/models", "/metrics")
OPEN = ("/health", "/metrics")  # answered without the API key (probes and scrapers)
MAX_BODY_BYTES = 16 * 2**20
INTERNAL = "internal error (details in the server log)"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status, headers=headers)


def validation_message(exc: ValidationError) -> str:
    """The first problem of a request body as ``field: reason`` (and how many more there are)."""
    errors = exc.errors()
    if not errors:
        return "invalid request body"
    first = errors[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    text = f"{loc}: {first.get('msg', 'invalid')}" if loc else str(first.get("msg", "invalid body"))
    return text + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else "")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to pass ``limit`` bytes (Content-Length, or counted as it
    arrives when the client streams it)."""
    too_large = ServeError(413, f"the body is larger than --max-body-mb {limit / 2**20:g}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_body(request: Request, schema: type[BaseModel], limit: int = MAX_BODY_BYTES) -> Any:
    """The body as ``schema``, whatever its content type says (curl -d sends a form type); 400 if not."""
    raw = await read_body(request, limit)
    try:
        # A large body is parsed off the event loop, which keeps answering /health meanwhile.
        data = json.loads(raw) if len(raw) < 2**20 else await run_in_threadpool(json.loads, raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ServeError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ServeError(400, f"the body must be a JSON object, not {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ServeError(400, validation_message(exc)) from None


async def _client_left(request: Request) -> None:
    """Returns when the client has disconnected (the body has been read: the next message is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        await asyncio.sleep(0.1)


async def _answer(
    request: Request, schema: type[BaseModel], call: Callable[[Any], Awaitable[dict[str, Any]]], limit: int
) -> JSONResponse:
    try:
        body = await parse_body(request, schema, limit)
        # A client that leaves cancels its request, so that its job is dropped before it reaches the engine.
        answer, left = asyncio.ensure_future(call(body)), asyncio.ensure_future(_client_left(request))
        try:
            await asyncio.wait((answer, left), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (answer, left):
                if not task.done():
                    task.cancel()
        if not answer.done() or answer.cancelled():
            return _error(499, "the client closed the connection")  # nginx's code; no one reads it
        return JSONResponse(answer.result())
    except ServeError as exc:
        return _error(exc.status, exc.message, exc.headers)
    except Exception:  # never let one request take the server down
        log.exception("request failed")
        return _error(500, INTERNAL)


def _body_schema(schema: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI entry of a route that parses its body itself (see parse_body)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema.model_json_schema()}},
        }
    }


class Guard:
    """ASGI middleware before every route: the API key (401 without it, except on OPEN paths) and the
    request metrics. Plain ASGI, so that a route sees the client's own receive (disconnects included)."""

    def __init__(self, app: ASGIApp, metrics: Any, api_key: str | None) -> None:
        self.app, self.metrics = app, metrics
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    def _authorized(self, scope: Scope) -> bool:
        if self.expected is None or scope["path"] in OPEN:
            return True
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        return hmac.compare_digest(given, self.expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status = [500]

        async def send_measured(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        start = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            if self._authorized(scope):
                await self.app(scope, receive, send_measured)
            else:
                refuse = _error(401, "missing or wrong API key: send Authorization: Bearer KEY")
                refuse.headers["WWW-Authenticate"] = "Bearer"
                await refuse(scope, receive, send_measured)
        finally:
            self.metrics.in_flight.dec()
            if endpoint != "/metrics":
                self.metrics.observe_request(endpoint, status[0], time.perf_counter() - start)


def create_app(service: RewardService, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The app; its lifespan starts and stops the service's batcher (the model stays the caller's). With
    ``api_key``, every route but /health and /metrics needs ``Authorization: Bearer api_key``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(title="r1reward serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(Guard, metrics=service.metrics, api_key=api_key)
    metrics = service.metrics

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error(500, INTERNAL)

    @app.post("/v1/compare", openapi_extra=_body_schema(CompareRequest))
    async def compare(request: Request) -> JSONResponse:
        return await _answer(request, CompareRequest, service.compare, max_body_bytes)

    @app.post("/v1/rank", openapi_extra=_body_schema(RankRequest))
    async def rank(request: Request) -> JSONResponse:
        return await _answer(request, RankRequest, service.rank, max_body_bytes)

    @app.post("/get_reward", openapi_extra=_body_schema(GetRewardRequest))
    async def get_reward(request: Request) -> JSONResponse:
        return await _answer(request, GetRewardRequest, service.get_reward, max_body_bytes)

    @app.get("/health")
    async def health() -> JSONResponse:
        if not service.healthy:
            return _error(503, "the engine loop is not running")
        return JSONResponse({"status": "ok", "model": service.name})

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [service.card()]})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return app
