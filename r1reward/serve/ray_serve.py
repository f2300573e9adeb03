"""``r1reward serve --ray-serve``: the app of serve/app.py as a Ray Serve deployment, one engine per replica.

Each replica loads its own engine and builds the app from the command's flags (``cli.build_app``), so its
limits, API key and error hygiene are those of the one-process server. Ray Serve's proxy listens on
--host:--port and routes each request to a replica; the controller calls every replica's ``check_health``
(the engine loop runs) and starts a new replica when one dies or fails it. With --min-replicas or
--max-replicas, Serve scales between those bounds on the requests in flight.

A request in flight on a replica that dies would get the proxy's plain "500 Internal Server Error";
``ReplicaLost`` (middleware in the proxy) answers it with 503 and Retry-After instead: an answer depends
only on the request and its seed, so the client's retry on another replica gets the same answer.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from r1reward.errors import UserError

log = logging.getLogger("r1reward.serve")
APP_NAME, DEPLOYMENT = "r1reward", "RewardReplica"
# Ray Serve's proxy calls the function at this import path (read from its environment) for middleware.
PROXY_CALLBACK_VAR = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "r1reward.serve.ray_serve:proxy_middlewares"
RETRY_AFTER_S = 1  # the other replicas take the retry while the lost one restarts
LOST = "the replica serving this request stopped; retry the request"
# With autoscaling, Serve adds a replica when replicas average more requests in flight than this. The
# batcher merges concurrent requests into one engine call, so a replica is busy only well above 1.
TARGET_ONGOING_REQUESTS = 16
HEALTH_CHECK_PERIOD_S = 5.0
HEALTH_CHECK_TIMEOUT_S = 30.0  # an engine call holds the replica's engine thread, not its event loop
STARTUP_S = 900.0  # every replica loads its engine (a 7B model reads ~15 GB)


class ReplicaLost:
    """ASGI middleware for Ray Serve's proxy: a request the proxy returns without any response (the
    replica died while it ran) gets 503 with Retry-After and the JSON error line of the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, receive, send_tracked)
        if started:
            return
        log.warning("no answer from a replica for %s %s: answered 503", scope.get("method"), scope["path"])
        body = json.dumps({"error": LOST}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def proxy_middlewares() -> list[Any]:
    """Called by each Ray Serve proxy (PROXY_CALLBACK) at its start."""
    from starlette.middleware import Middleware

    return [Middleware(ReplicaLost)]


def deployment_options(args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    """``serve.deployment`` options of the command's flags: one engine (a GPU, or one CPU slot) per
    replica; a fixed count, or autoscaling bounds."""
    gpus = (1.0 if cuda else 0.0) if args.gpus_per_worker is None else args.gpus_per_worker
    max_queue = 4 * args.max_batch if args.max_queue is None else args.max_queue
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": 1, "num_gpus": gpus},
        # Every request is at least one generation, so the app's own queue bound (503 + Retry-After)
        # refuses before Serve would hold a request back from a replica.
        "max_ongoing_requests": max_queue,
        "max_queued_requests": max_queue,  # beyond: the proxy answers 503 + Retry-After
        "health_check_period_s": HEALTH_CHECK_PERIOD_S,
        "health_check_timeout_s": HEALTH_CHECK_TIMEOUT_S,
    }
    low, high = args.min_replicas, args.max_replicas
    if low is None and high is None:
        options["num_replicas"] = args.replicas or 1
        return options
    initial = args.replicas or low or 1
    options["autoscaling_config"] = {
        "min_replicas": low or 1,
        "initial_replicas": initial,
        "max_replicas": high or initial,
        "target_ongoing_requests": TARGET_ONGOING_REQUESTS,
    }
    return options


def _deployment() -> Any:
    from ray import serve

    @serve.deployment(name=DEPLOYMENT)
    @serve.ingress()  # the app is built in the replica once its engine is up (__serve_build_asgi_app__)
    class RewardReplica:
        def __init__(self, args: argparse.Namespace) -> None:
            from r1reward.eval.cli import load_reward_model

            self.args, self.service = args, None
            self.model = load_reward_model(args)

        def __serve_build_asgi_app__(self) -> Any:
            from r1reward.serve.from_flags import build_app

            self.service, app = build_app(self.args, self.model)
            return app

        def check_health(self) -> None:
            # Serve calls this every HEALTH_CHECK_PERIOD_S; raising it has the replica replaced.
            if self.service is not None and not self.service.healthy:
                raise RuntimeError("the engine loop is not running")

        def __del__(self) -> None:
            if getattr(self, "model", None) is not None:  # None when loading the engine failed
                self.model.close()

    return RewardReplica


def _wait_running(deadline_s: float, stop: threading.Event) -> None:
    """Returns once the app's replicas all run (or on ``stop``); a UserError when Serve gives up on them
    or ``deadline_s`` passes first."""
    from ray import serve

    deadline = time.monotonic() + deadline_s
    while not stop.is_set():
        app = serve.status().applications.get(APP_NAME)
        state = str(app.status) if app is not None else "NOT_STARTED"
        if state.endswith("RUNNING"):
            return
        if state.endswith("DEPLOY_FAILED"):
            lines = [line for line in (app.message or "").splitlines() if line.strip()]
            raise UserError(f"Ray Serve could not start the replicas: {lines[-1] if lines else state}")
        if time.monotonic() > deadline:
            raise UserError(f"Ray Serve: the replicas were not running within {deadline_s:g} s (state {state})")
        stop.wait(1.0)


def replica_states() -> str:
    """The replicas' states, e.g. ``RUNNING 1, STARTING 1`` (Serve's names)."""
    from ray import serve

    app = serve.status().applications.get(APP_NAME)
    deployment = app.deployments.get(DEPLOYMENT) if app is not None else None
    if deployment is None:
        return "none"
    counts = sorted(deployment.replica_states.items(), key=lambda kv: str(kv[0]))
    return ", ".join(f"{str(state).rsplit('.', 1)[-1]} {count}" for state, count in counts if count) or "none"


def serve_on_ray(args: argparse.Namespace) -> int:
    """Deploy, serve until SIGTERM or Ctrl-C, then delete the app (and stop the Ray this command started)."""
    import ray
    from ray import serve

    from r1reward.eval.generation import cuda_available, eval_plan
    from r1reward.placement.ray_init import ensure_ray
    from r1reward.serve.from_flags import describe

    cuda = cuda_available()
    options = deployment_options(args, cuda)
    scaling = options.get("autoscaling_config")
    most = scaling["max_replicas"] if scaling else options["num_replicas"]
    plan = eval_plan(most, options["ray_actor_options"]["num_gpus"])
    owns_ray = ensure_ray(plan.config, plan=plan)
    stop = threading.Event()
    # After ray.init, which installs its own SIGTERM handler.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": args.host, "port": args.port},
            controller_options={"runtime_env": {"env_vars": {PROXY_CALLBACK_VAR: PROXY_CALLBACK}}},
        )
        app = _deployment().options(**options).bind(args)
        serve.run_many([serve.RunTarget(app, name=APP_NAME, route_prefix="/")], wait_for_applications_running=False)
        _wait_running(STARTUP_S, stop)
        replicas = (
            f"{scaling['min_replicas']}..{scaling['max_replicas']} Ray Serve replicas"
            if scaling
            else f"{most} Ray Serve replica(s)"
        )
        print(describe(args, f"{replicas}, one engine each"), flush=True)
        seen = ""
        while not stop.wait(2.0):  # until SIGTERM or Ctrl-C; says when replicas die and come back
            now = replica_states()
            if now != seen:
                print(f"r1reward serve: replicas {now}", flush=True)
                seen = now
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if owns_ray:
            serve.shutdown()
            ray.shutdown()
        elif serve.status().applications.get(APP_NAME) is not None:
            serve.delete(APP_NAME, _blocking=False)
    print("r1reward serve: stopped", flush=True)
    return 0
