"""The HTTP routes of ``r1reward serve``.

    POST /v1/compare   {question, images, response_1, response_2, k?, swap?, seed?}
                       -> {winner, votes, vote_share, agreement, reasoning, k, seed, swap[, votes_swapped]}
    POST /v1/rank      {question, images, responses: [N >= 2], k?, seed?, both_orders?}
                       -> {order, scores, wins, k, seed, both_orders}
    POST /get_reward   OpenRLHF: {query: [...], prompts?, labels?} -> {rewards, scores} (see serve/openrlhf.py)
    GET  /health, /v1/models, /metrics (Prometheus text)

Every error is a JSON ``{"error": "one line"}``: 400 for a bad body (missing field, wrong type, k out of
range, fewer than 2 responses, an unreadable image or bad base64), 413 for a request larger than
--max-batch prompts, 504 when the engine does not answer within --timeout, 500 for anything else.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from r1reward.serve.schemas import CompareRequest, GetRewardRequest, RankRequest, ServeError, one_line
from r1reward.serve.service import RewardService

log = logging.getLogger("r1reward.serve")
ENDPOINTS = ("/v1/compare", "/v1/rank", "/get_reward", "/health", "/v1/models", "/metrics")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": one_line(message)}, status_code=status)


def validation_message(exc: ValidationError) -> str:
    """The first problem of a request body as ``field: reason`` (and how many more there are)."""
    errors = exc.errors()
    if not errors:
        return "invalid request body"
    first = errors[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    text = f"{loc}: {first.get('msg', 'invalid')}" if loc else str(first.get("msg", "invalid body"))
    return text + (f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else "")


async def parse_body(request: Request, schema: type[BaseModel]) -> Any:
    """The body as ``schema``, whatever its content type says (curl -d sends a form type); 400 if not."""
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ServeError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ServeError(400, f"the body must be a JSON object, not {type(data).__name__}")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ServeError(400, validation_message(exc)) from None


async def _answer(
    request: Request, schema: type[BaseModel], call: Callable[[Any], Awaitable[dict[str, Any]]]
) -> JSONResponse:
    try:
        return JSONResponse(await call(await parse_body(request, schema)))
    except ServeError as exc:
        return _error(exc.status, exc.message)
    except Exception as exc:  # never let one request take the server down
        log.exception("request failed")
        return _error(500, f"{type(exc).__name__}: {exc}")


def create_app(service: RewardService) -> FastAPI:
    """The app; its lifespan starts and stops the service's batcher (the model stays the caller's)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(title="r1reward serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    metrics = service.metrics

    @app.middleware("http")
    async def measure(request: Request, call_next):
        endpoint = request.url.path if request.url.path in ENDPOINTS else "other"
        start = time.perf_counter()
        metrics.in_flight.inc()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            metrics.in_flight.dec()
            if endpoint != "/metrics":
                metrics.observe_request(endpoint, status, time.perf_counter() - start)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        return _error(500, f"{type(exc).__name__}: {exc}")

    @app.post("/v1/compare")
    async def compare(request: Request) -> JSONResponse:
        return await _answer(request, CompareRequest, service.compare)

    @app.post("/v1/rank")
    async def rank(request: Request) -> JSONResponse:
        return await _answer(request, RankRequest, service.rank)

    @app.post("/get_reward")
    async def get_reward(request: Request) -> JSONResponse:
        return await _answer(request, GetRewardRequest, service.get_reward)

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
