"""``r1reward serve`` fuzzed from its own OpenAPI schema (schemathesis on hypothesis): bodies that fit the
schema and bodies that break it, with and without the API key, on the fake engine. No answer may be a 5xx,
every error is one JSON line, and no request may hang."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from r1reward.data.images import ImagePolicy
from r1reward.eval.api import RewardModel
from r1reward.serve.app import create_app
from r1reward.serve.service import RewardService
from serve_fakes import FakeEngine, FakeProcessor, png_bytes

KEY = "fuzz-key"
ANSWER_S = 5.0  # no request may take longer on the fake engine


def _app(root):
    (root / "red.png").write_bytes(png_bytes())
    model = RewardModel(FakeEngine(), FakeProcessor(), seed=1)
    service = RewardService(
        model, "fake", max_batch=64, wait_s=0.001, timeout_s=ANSWER_S, images=ImagePolicy(roots=(root,))
    )
    return create_app(service, api_key=KEY)


IMAGE_ROOT = Path(tempfile.mkdtemp(prefix="r1reward-fuzz-"))  # removed at the module's end
schema = schemathesis.openapi.from_asgi("/openapi.json", _app(IMAGE_ROOT), headers={"Authorization": f"Bearer {KEY}"})


@pytest.fixture(scope="module", autouse=True)
def _remove_image_root():
    yield
    shutil.rmtree(IMAGE_ROOT, ignore_errors=True)


def test_the_schema_describes_every_body(tmp_path):
    paths = _app(tmp_path).openapi()["paths"]
    for path in ("/v1/compare", "/v1/rank", "/get_reward"):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["required"], path


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_from_the_schema_gets_a_5xx_or_hangs(case):
    for headers in ({"Authorization": f"Bearer {KEY}"}, {}):
        start = time.monotonic()
        response = case.call(headers=headers)
        seconds = time.monotonic() - start
        case.validate_response(response, checks=[not_a_server_error])
        assert seconds < ANSWER_S, f"{case.method} {case.path}: {seconds:.1f} s"
        if response.status_code >= 400:
            error = response.json()["error"]
            assert isinstance(error, str) and "\n" not in error and "Traceback" not in error
        if not headers and case.path not in ("/health", "/metrics"):
            assert response.status_code == 401
