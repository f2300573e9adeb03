"""``r1reward serve`` probed as an attacker and a busy RL cluster would, on loopback: the real flags, app and
uvicorn in a subprocess, on the fake engine of tests/serve_fake_server.py (no vLLM), each case bounded in
count and time. Paths outside --image-root, huge bodies, rank fan-out, decompression bombs, a full queue,
clients that leave, requests without the API key, and engine errors whose text must not reach clients."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from serve_fakes import free_port, huge_png, png_bytes, stop, wait_healthy

HERE = Path(__file__).resolve().parent
KEY = "test-key-0123"
AUTH = {"Authorization": f"Bearer {KEY}"}
ENGINE_DELAY_S = 1.0  # the fake engine's time on a call with a "SLOW" prompt
STARTUP_S = 60


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, server process, the allowed image root, the model folder)."""
    tmp = tmp_path_factory.mktemp("abuse")
    root, model = tmp / "allowed", tmp / "model"
    root.mkdir()
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    (root / "red.png").write_bytes(png_bytes())
    (root / "escape.png").symlink_to("/etc/hostname")
    port = free_port()
    log = tmp / "server.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
        "R1REWARD_API_KEY": KEY,
        "FAKE_ENGINE_DELAY": str(ENGINE_DELAY_S),
    }
    flags = ["--model", str(model), "--port", str(port), "--image-root", str(root)]
    flags += ["--max-batch", "8", "--max-queue", "8", "--batch-wait-ms", "1", "--timeout", "20"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "serve_fake_server.py"), *flags], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log, STARTUP_S)
        yield url, proc, root, model, log
    finally:
        stop(proc)


def compare(url: str, images: list[str], timeout: float = 10, headers=AUTH, **extra) -> requests.Response:
    body = {"question": "Colour?", "images": images, "response_1": "red", "response_2": "blue", **extra}
    return requests.post(f"{url}/v1/compare", json=body, headers=headers, timeout=timeout)


def metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=10).text
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024


def test_paths_outside_the_image_roots_get_one_generic_4xx(server):
    url, _, root, model, log = server
    refused = [
        "/etc/hostname",
        "/nonexistent.png",
        str(model / "model.safetensors"),
        str(root / "missing.png"),
        str(root / ".." / "model" / "model.safetensors"),
        "../model/model.safetensors",
        str(root / "escape.png"),  # a link out of the root
        str(root),  # a folder
        "~/.bashrc",
        "/etc/hostname\0.png",
    ]
    answers = [compare(url, [path]) for path in refused]
    assert answers[0].status_code == 400
    for path, answer in zip(refused, answers):
        assert (answer.status_code, answer.content) == (answers[0].status_code, answers[0].content), path
    error = answers[0].json()["error"]
    assert "hostname" not in error and "/" not in error.replace("--image-root", ""), error
    assert compare(url, [str(root / "red.png")]).status_code == 200
    assert compare(url, ["red.png"]).status_code == 200  # relative to the (first) root
    # The model folder is not named to clients; the server log keeps what was refused and why.
    models = requests.get(f"{url}/v1/models", headers=AUTH, timeout=10)
    assert models.json()["data"][0]["id"] == "model" and str(model) not in models.text
    assert "/nonexistent.png" in log.read_text()


def test_rank_fan_out_is_refused_at_once_while_health_answers(server):
    url = server[0]
    body = {"question": "q", "responses": ["x"] * 5000}
    answer: dict = {}

    def post():
        start = time.monotonic()
        try:
            answer["response"] = requests.post(f"{url}/v1/rank", json=body, headers=AUTH, timeout=5)
        except requests.RequestException as exc:
            answer["response"] = exc
        answer["seconds"] = time.monotonic() - start

    thread = threading.Thread(target=post)
    thread.start()
    health = []
    while thread.is_alive():
        start = time.monotonic()
        health.append((requests.get(f"{url}/health", timeout=5).status_code, time.monotonic() - start))
        time.sleep(0.05)
    thread.join()
    response = answer["response"]
    assert isinstance(response, requests.Response) and response.status_code == 413, response
    assert answer["seconds"] < 1.0 and "responses" in response.json()["error"]
    assert all(status == 200 and seconds < 1.0 for status, seconds in health), health


def test_a_body_over_max_body_mb_gets_413(server):
    url = server[0]
    big = b'{"question": "' + b"a" * (20 * 2**20) + b'"}'
    response = requests.post(f"{url}/v1/compare", data=big, headers=AUTH, timeout=30)
    assert response.status_code == 413 and "--max-body-mb" in response.json()["error"]
    chunked = requests.post(
        f"{url}/get_reward",
        data=iter([big[i : i + 2**20] for i in range(0, len(big), 2**20)]),
        headers=AUTH,
        timeout=30,
    )  # no Content-Length: counted as it arrives
    assert chunked.status_code == 413
    assert requests.get(f"{url}/health", timeout=5).status_code == 200


@pytest.mark.parametrize("side", [20_000, 12_000])
def test_a_decompression_bomb_gets_4xx_without_the_server_growing(server, side):
    """20,000^2 pixels PIL refuses by itself; 12,000^2 (144 M pixels) PIL would only warn about and decode."""
    url, proc = server[0], server[1]
    bomb = "data:image/png;base64," + base64.b64encode(huge_png(side, side)).decode()
    before = peak_rss_mb(proc.pid)
    response = compare(url, [bomb], timeout=60)
    grown = peak_rss_mb(proc.pid) - before
    assert response.status_code == 400 and "--max-image-pixels" in response.json()["error"], response.text
    assert grown < 200, f"the server's peak memory grew by {grown:.0f} MB"


def test_requests_without_the_api_key_get_401(server):
    url, _, root = server[:3]
    image = [str(root / "red.png")]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = compare(url, image, headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer", headers
        assert KEY not in response.text
    assert requests.get(f"{url}/v1/models", timeout=5).status_code == 401
    assert requests.post(f"{url}/get_reward", json={"query": ["a"]}, timeout=5).status_code == 401
    assert requests.get(f"{url}/health", timeout=5).status_code == 200
    assert requests.get(f"{url}/metrics", timeout=5).status_code == 200
    assert compare(url, image).status_code == 200


def test_a_full_queue_answers_503_with_retry_after(server):
    url = server[0]
    first: dict = {}
    busy = threading.Thread(target=lambda: first.update(r=compare(url, [], question="SLOW", k=8, timeout=20)))
    busy.start()
    deadline = time.monotonic() + 5
    while metric(url, "r1reward_serve_queued_generations") < 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    response = compare(url, [], k=1)
    busy.join(30)
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1, response.text
    assert "--max-queue" in response.json()["error"]
    assert first["r"].status_code == 200 and compare(url, [], k=1).status_code == 200


def test_the_jobs_of_clients_that_left_are_dropped_before_they_run(server):
    url = server[0]
    calls_before = metric(url, "r1reward_serve_batch_prompts_count")
    dropped_before = metric(url, "r1reward_serve_dropped_jobs_total")
    first: dict = {}
    busy = threading.Thread(target=lambda: first.update(r=compare(url, [], question="SLOW", timeout=20)))
    busy.start()
    time.sleep(0.2)  # the engine is busy with the first request
    with pytest.raises(requests.Timeout):
        compare(url, [], question="left early", timeout=0.3)
    busy.join(30)
    deadline = time.monotonic() + 5
    while metric(url, "r1reward_serve_dropped_jobs_total") == dropped_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first["r"].status_code == 200
    assert metric(url, "r1reward_serve_dropped_jobs_total") == dropped_before + 1
    time.sleep(0.3)
    assert metric(url, "r1reward_serve_batch_prompts_count") == calls_before + 1  # the first request's call only


def test_clients_never_see_exception_text(server):
    url, _, _, _, log = server
    refused = compare(url, [], response_1="POISON")
    crashed = compare(url, [], response_1="CRASH")
    undecodable = compare(url, ["data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode()])
    assert (refused.status_code, crashed.status_code, undecodable.status_code) == (400, 500, 400)
    for response in (refused, crashed, undecodable):
        error = response.json()["error"]
        assert "prompt too long" not in error and "/opt/secret" not in error and "Error" not in error, error
    assert "/opt/secret/engine.py" in log.read_text() and "prompt too long" in log.read_text()
