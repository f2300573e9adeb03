"""End to end: ``r1reward serve --ray-serve --replicas 2`` on a local Ray (the command starts it) with the
tiny model. Concurrent clients keep requests in flight while one replica's process is killed: every
request gets a reply (200, or 503 with Retry-After and one JSON line; no 500, no connection dropped), a
request in flight on the dead replica gets the 503, Ray Serve starts a new replica in its place and the
clients are served again; SIGTERM stops the command and every replica."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import psutil
import pytest
import requests

from r1reward.serve.ray_serve import LOST
from serve_fakes import data_uri, free_port, stop, tail, wait_healthy

pytestmark = pytest.mark.slow
REPLICA = "ServeReplica:r1reward:RewardReplica"  # the title Ray gives a replica's process
STARTUP_S = 400
CLIENTS = 4


def replica_processes(command: subprocess.Popen) -> list[psutil.Process]:
    """The replicas under the command: its local Ray's raylet starts them as workers."""
    found = []
    for child in psutil.Process(command.pid).children(recursive=True):
        try:
            if REPLICA in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # exited meanwhile
            pass
    return found


def wait_until(condition, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {limit_s:g} s")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def served(tiny_model_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-ray") / "server.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own
    command = [sys.executable, "-m", "r1reward", "serve", "--model", str(tiny_model_dir), "--port", str(port)]
    command += ["--ray-serve", "--replicas", "2", "--max-tokens", "48", "--batch-wait-ms", "20", "--timeout", "120"]
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log, STARTUP_S)
        wait_until(lambda: len(replica_processes(proc)) == 2, 60, "2 replica processes")
        yield f"http://127.0.0.1:{port}", proc, log
    finally:
        stop(proc, 120)


class Load:
    """CLIENTS threads posting /v1/compare back to back (each request its own seed), recording every
    reply or exception."""

    def __init__(self, url: str) -> None:
        self.url, self.replies, self.stopping = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]

    def _client(self, i: int) -> None:
        n = 0
        while not self.stopping.is_set():
            body = {"question": "Which colour?", "images": [data_uri()], "response_1": "red", "response_2": "blue"}
            sent = time.monotonic()
            try:
                reply = requests.post(f"{self.url}/v1/compare", json={**body, "seed": 1000 * i + n}, timeout=180)
                self.replies.append((sent, reply.status_code, reply.headers.get("retry-after"), reply.text))
            except requests.RequestException as exc:
                self.replies.append((sent, "no reply", None, repr(exc)))
            n += 1

    def answered_since(self, when: float) -> int:
        return sum(1 for sent, status, *_ in list(self.replies) if sent > when and status == 200)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(200)
        assert not any(thread.is_alive() for thread in self.threads), "a client still waits for its reply"


def test_a_killed_replica_loses_no_request_and_comes_back(served):
    url, proc, log = served
    with Load(url) as load:
        wait_until(lambda: load.answered_since(0) >= 2 * CLIENTS, 120, "answers before the kill")
        victim, logged = replica_processes(proc)[0], len(log.read_text())
        killed = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(
            lambda: {p.pid for p in replica_processes(proc)} - {victim.pid} and len(replica_processes(proc)) == 2,
            120,
            "new replica process",
        )
        # The command logs the replicas' states as they change: one starting in place of the dead one, then two.
        back_in_log = re.compile(r"replicas [^\n]*STARTING[\s\S]*replicas RUNNING 2$", re.M)
        wait_until(lambda: back_in_log.search(log.read_text()[logged:]), 300, "'replicas RUNNING 2' after a restart")
        back = time.monotonic()
        wait_until(lambda: load.answered_since(back) >= 2 * CLIENTS, 120, "answers after the replica came back")
    statuses = Counter(status for _, status, *_ in load.replies)
    assert set(statuses) <= {200, 503}, (statuses, [r for r in load.replies if r[1] not in (200, 503)][:3])
    refused = [r for r in load.replies if r[1] == 503]
    for _, _, retry_after, text in refused:
        assert retry_after is not None and int(retry_after) >= 1, text
        assert "\n" not in text and "Traceback" not in text and "Error" not in text, text
    # Requests were in flight on the killed replica: they got the proxy's 503, not a bare 500.
    assert any(LOST in text and sent < killed for sent, _, _, text in refused), statuses
    assert load.answered_since(killed) > 0 and statuses[200] > len(refused), statuses
    assert proc.poll() is None, tail(log)


def test_sigterm_stops_the_command_and_its_replicas(served):
    url, proc, log = served
    replicas = replica_processes(proc)
    assert len(replicas) == 2
    proc.terminate()
    assert proc.wait(120) == 0, tail(log)
    assert "r1reward serve: stopped" in log.read_text()
    gone, alive = psutil.wait_procs(replicas, timeout=60)
    assert not alive, [p.pid for p in alive]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/health", timeout=5)
