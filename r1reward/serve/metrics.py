"""Prometheus metrics of ``r1reward serve`` (``GET /metrics``), in a registry of their own."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServeMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "r1reward_serve_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "r1reward_serve_request_seconds", "request latency by endpoint", ["endpoint"], buckets=_SECONDS, registry=r
        )
        self.in_flight = Gauge("r1reward_serve_requests_in_flight", "requests being answered", registry=r)
        self.queued = Gauge(
            "r1reward_serve_queued_generations", "generations waiting for or in an engine call", registry=r
        )
        self.dropped_jobs = Counter(
            "r1reward_serve_dropped_jobs", "requests dropped before their engine call: the client left", registry=r
        )
        self.batch_prompts = Histogram(
            "r1reward_serve_batch_prompts", "prompts per engine call", buckets=_SIZES, registry=r
        )
        self.batch_requests = Histogram(
            "r1reward_serve_batch_requests", "client requests per engine call", buckets=_SIZES, registry=r
        )
        self.engine_seconds = Histogram(
            "r1reward_serve_engine_seconds", "duration of one engine call", buckets=_SECONDS, registry=r
        )
        self.votes = Counter(
            "r1reward_serve_votes", "sampled judgements by parsed vote (1, 2 or unparsed)", ["vote"], registry=r
        )
        # A policy that learns to write control tokens shows here (they reach the judge as plain text).
        self.special_tokens = Counter(
            "r1reward_serve_special_tokens", "special-token strings neutralised in judged texts", registry=r
        )

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def observe_batch(self, requests: int, prompts: int, seconds: float) -> None:
        self.batch_requests.observe(requests)
        self.batch_prompts.observe(prompts)
        self.engine_seconds.observe(seconds)

    def observe_votes(self, votes: Iterable[int | None]) -> None:
        for vote in votes:
            self.votes.labels(str(vote) if vote in (1, 2) else "unparsed").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
