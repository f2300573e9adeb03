"""r1reward serve --ray-serve without a cluster: its flags, the deployment options they make, and the proxy
middleware that answers for a replica that died mid-request."""

from __future__ import annotations

import argparse

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from r1reward.errors import UserError
from r1reward.serve import cli as serve_cli
from r1reward.serve.ray_serve import ReplicaLost, deployment_options, proxy_middlewares


def parse(tmp_path, *flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_cli.add_command(parser.add_subparsers(dest="command"), lambda name: lambda fn: fn)
    return parser.parse_args(["serve", "--model", str(tmp_path), "--port", "0", "--ray-serve", *flags])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--workers", "2"], "--workers"),
        (["--replicas", "0"], "--replicas"),
        (["--min-replicas", "3", "--max-replicas", "2"], "--min-replicas (3)"),
        (["--replicas", "4", "--max-replicas", "2"], "--replicas (4)"),
        (["--replicas", "1", "--min-replicas", "2"], "--replicas (1)"),
    ],
)
def test_bad_replica_flags_get_one_line(tmp_path, flags, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        serve_cli._check(parse(tmp_path, *flags))
    assert "\n" not in str(err.value)


def test_replica_flags_need_ray_serve(tmp_path):
    parser = argparse.ArgumentParser()
    serve_cli.add_command(parser.add_subparsers(dest="command"), lambda name: lambda fn: fn)
    args = parser.parse_args(["serve", "--model", str(tmp_path), "--port", "0", "--replicas", "2"])
    with pytest.raises(UserError, match="--ray-serve"):
        serve_cli._check(args)


def test_fixed_replicas_one_engine_each(tmp_path):
    options = deployment_options(parse(tmp_path, "--replicas", "2"), cuda=False)
    assert options["num_replicas"] == 2 and "autoscaling_config" not in options
    assert options["ray_actor_options"] == {"num_cpus": 1, "num_gpus": 0}
    # Every request the app would take reaches it: the app's own queue answers 503 first.
    assert options["max_ongoing_requests"] >= 4 * 256
    gpu = deployment_options(parse(tmp_path, "--replicas", "2"), cuda=True)
    assert gpu["ray_actor_options"]["num_gpus"] == 1
    fraction = deployment_options(parse(tmp_path, "--gpus-per-worker", "0.5"), cuda=True)
    assert fraction["ray_actor_options"]["num_gpus"] == 0.5


def test_autoscaling_bounds(tmp_path):
    options = deployment_options(parse(tmp_path, "--replicas", "2", "--max-replicas", "4"), cuda=False)
    scaling = options["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["initial_replicas"], scaling["max_replicas"]) == (1, 2, 4)
    assert "num_replicas" not in options
    only_min = deployment_options(parse(tmp_path, "--min-replicas", "2", "--replicas", "3"), cuda=False)
    assert (only_min["autoscaling_config"]["min_replicas"], only_min["autoscaling_config"]["max_replicas"]) == (2, 3)


def _proxied(route_answers: bool) -> TestClient:
    """A stand-in for Ray Serve's proxy app: a route that answers, or one that returns without a
    response (what the proxy does when the replica died mid-request)."""

    async def ok(request):
        return JSONResponse({"winner": 1})

    async def lost(scope, receive, send):
        return None

    inner = Starlette(routes=[Route("/v1/compare", ok, methods=["POST"])]) if route_answers else lost
    return TestClient(ReplicaLost(inner))


def test_a_lost_replica_becomes_503_with_retry_after():
    response = _proxied(route_answers=False).post("/v1/compare", json={})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    error = response.json()["error"]
    assert "retry" in error and "\n" not in error


def test_an_answer_passes_through_unchanged():
    response = _proxied(route_answers=True).post("/v1/compare", json={})
    assert response.status_code == 200 and response.json() == {"winner": 1}
    assert "retry-after" not in response.headers


def test_the_proxy_callback_returns_the_middleware():
    (middleware,) = proxy_middlewares()
    assert middleware.cls is ReplicaLost
