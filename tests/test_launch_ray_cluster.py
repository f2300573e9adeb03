"""r1reward-launch against a real multi-node Ray cluster on this machine: a head and three workers,
each a `ray start --block` of its own with free ports, a --temp-dir under one private root, and a
token of its own (token auth, as Ray sets up by default). The tiny training asks for CPUs only, so
1 + 3 x 2 CPUs hold its 4 bundles; the nodes declare no GPUs, so the paper's plan must not fit.

Teardown touches only what this module started: the `ray start` processes (SIGTERM, then their
process groups) and any process whose command line names our temp root. Never `ray stop`: another
Ray may be running on this machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from helpers import StreamLines, wait_for_exit

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: ray, r1reward-launch, python
NODE_PORT_FLAGS = [
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
]
HEAD_CPUS, WORKER_CPUS, WORKERS = 1, 2, 3
JOB_ID = re.compile(r"raysubmit_\w+")
# How long a test waits for one event (a line, an exit, a status) before failing: generous, because
# two cores shared by several test runs can stall a Ray job's start for minutes.
EVENT_DEADLINE_S = 600


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]  # all bound at once, so the ports are distinct
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait(what: str, check, timeout_s: float, procs: list[subprocess.Popen]):
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            logs = [p.log_path.read_text()[-2000:] for p in procs if p.poll() is not None]
            raise RuntimeError(f"a `ray start` exited while waiting for {what}: {logs}")
        try:
            result = check()
            if result:
                return result
        except Exception as e:
            last = e
        time.sleep(2)
    raise TimeoutError(f"{what} not ready after {timeout_s:g} s (last error: {last!r})")


def _api(cluster: dict, path: str, **params):
    """The dashboard's REST API with this cluster's token. (Not Ray's client classes: they cache the
    token of whichever cluster this pytest process met first.)"""
    import requests

    r = requests.get(
        cluster["dashboard"] + path,
        params=params,
        timeout=30,
        headers={"Authorization": f"Bearer {cluster['env']['RAY_AUTH_TOKEN']}"},
    )
    r.raise_for_status()
    return r.json()


def _alive_nodes(cluster: dict) -> int:
    data = _api(cluster, "/api/v0/nodes", filter_keys="state", filter_predicates="=", filter_values="ALIVE")
    return len(data["data"]["result"]["result"])


def _job_status(cluster: dict, job_id: str) -> str:
    return _api(cluster, f"/api/jobs/{job_id}")["status"]


def _our_leftovers(temp: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if temp.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _stop(procs: list[subprocess.Popen], temp: str) -> None:
    for p in reversed(procs):  # workers first, head last
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # `ray start --block` then stops its node's processes
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)  # start_new_session: the group is this node's alone
        except (ProcessLookupError, PermissionError):
            pass
    for pid in _our_leftovers(temp):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def cluster():
    if not (BIN / "ray").exists():
        pytest.skip(f"no ray binary beside {sys.executable}")
    temp = tempfile.mkdtemp(prefix="r1r-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    # PATH starts with the venv, as on a cluster whose image (or activated venv) provides `python`.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    # Token auth (Ray's default once a token exists), with a token of this cluster's own.
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        TOKENIZERS_PARALLELISM="false",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_raylet_start_wait_time_s="120",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=uuid.uuid4().hex,
    )
    gcs, dash, client_port, *ports = _free_ports(3 + len(NODE_PORT_FLAGS) * (1 + WORKERS))
    # Worker ports 0: random, so nothing collides with another Ray on this machine.
    common = [
        "--block",
        "--num-gpus",
        "0",
        "--object-store-memory",
        str(100 * 2**20),
        "--min-worker-port",
        "0",
        "--max-worker-port",
        "0",
        "--disable-usage-stats",
    ]

    def node(i: int) -> list[str]:
        return [x for flag, port in zip(NODE_PORT_FLAGS, ports[i * 6 : (i + 1) * 6]) for x in (flag, str(port))]

    procs: list[subprocess.Popen] = []

    def start(args: list[str], name: str) -> None:
        # A temp dir per node: nodes sharing one would each forward every node's worker logs.
        path = Path(temp) / f"{name}.log"
        with open(path, "w") as log:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "ray"), "start", *args, *common, "--temp-dir", str(Path(temp) / name)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        procs[-1].log_path = path

    info = {"gcs": f"127.0.0.1:{gcs}", "dashboard": f"http://127.0.0.1:{dash}", "env": env, "temp": temp}
    try:
        start(
            [
                "--head",
                "--port",
                str(gcs),
                "--include-dashboard",
                "true",
                "--dashboard-port",
                str(dash),
                "--ray-client-server-port",
                str(client_port),
                "--num-cpus",
                str(HEAD_CPUS),
                *node(0),
            ],
            "h",
        )
        _wait("the head's Jobs API", lambda: _api(info, "/api/jobs/") is not None, 180, procs)
        for i in range(1, WORKERS + 1):  # one at a time: together they outrun the GCS on 2 cores
            start([f"--address=127.0.0.1:{gcs}", "--num-cpus", str(WORKER_CPUS), *node(i)], f"w{i}")
            _wait(f"{i + 1} alive nodes", lambda nodes=i + 1: _alive_nodes(info) == nodes, 120, procs)
        yield info
    finally:
        _stop(procs, temp)
        leftovers = _our_leftovers(temp)
        shutil.rmtree(temp, ignore_errors=True)
        assert not leftovers, f"processes of the test cluster still alive: {leftovers}"


def _launch(cluster, *args: str, address: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(cluster["env"])
    if address is None:
        env["RAY_ADDRESS"] = cluster["gcs"]  # the GCS address, through the environment
    else:
        args = ("--address", address, *args)
    return subprocess.run(
        [str(BIN / "r1reward-launch"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _tiny(model_dir: Path, data_dir: Path, output_dir: Path) -> list[str]:
    return [
        "--config",
        "configs/tiny-cpu.yaml",
        f"model.path={model_dir}",
        f"data.train_path={data_dir / 'train.parquet'}",
        f"trainer.output_dir={output_dir}",
        "trainer.num_steps=1",
        "trainer.rollout_batch_size=4",
        "learner.train_batch_size=4",
        "rollout.max_new_tokens=16",
    ]


def _rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines() if line[:1].isdigit() or line.startswith("total")]


def test_dry_run_plans_on_the_live_nodes_and_submits_nothing(cluster, tiny_model_dir, synthetic_dir, tmp_path):
    proc = _launch(cluster, "--nodes", "4", "--dry-run", *_tiny(tiny_model_dir, synthetic_dir, tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"placement on the live cluster at {cluster['dashboard']}" in proc.stdout
    # First fit over the live nodes, head (1 CPU) first, then the 2-CPU workers.
    assert _rows(proc.stdout) == [
        ["0", "rollout", "1", "0", "1"],
        ["0", "(free)", "0", "0"],
        ["1", "learner", "2", "0", "2"],
        ["1", "(free)", "0", "0"],
        ["2", "reward", "1", "0", "1"],
        ["2", "(free)", "0", "1"],
        ["3", "(free)", "0", "2"],
        ["total", "4", "0", "4"],
    ]
    entry = next(line for line in proc.stdout.splitlines() if line.strip().startswith("entrypoint:"))
    assert entry.split("entrypoint:")[1].strip().startswith("python -m r1reward train --config configs/tiny-cpu.yaml ")
    assert entry.endswith("rollout.num_workers=1 learner.num_ranks=2")
    env_line = next(line for line in proc.stdout.splitlines() if line.strip().startswith("runtime_env:"))
    runtime_env = json.loads(env_line.split("runtime_env:")[1])
    assert runtime_env["working_dir"] == str(ROOT)
    assert {".venv", "runs", ".git"} <= set(runtime_env["excludes"])
    assert runtime_env["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"
    assert _api(cluster, "/api/jobs/") == []  # a dry run submits nothing

    # The dashboard address works as well as the GCS one, and gives the same plan.
    same = _launch(cluster, "--dry-run", *_tiny(tiny_model_dir, synthetic_dir, tmp_path), address=cluster["dashboard"])
    assert same.returncode == 0, same.stderr
    assert _rows(same.stdout) == _rows(proc.stdout)


def test_live_cluster_too_small_is_one_line(cluster):
    # The paper's plan fits 4 x 8 GPUs on paper, but these nodes declare no GPUs.
    proc = _launch(cluster, "--nodes", "4", "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "needs 32 GPUs" in proc.stderr and "has 0 GPUs on 4 nodes" in proc.stderr
    assert cluster["dashboard"] in proc.stderr
    more = _launch(cluster, "--nodes", "5", "--dry-run", "--config", "configs/tiny-cpu.yaml")
    assert more.returncode == 2 and "has 4 alive nodes" in more.stderr


def test_submitted_tiny_training_succeeds(cluster, tiny_model_dir, synthetic_dir, tmp_path):
    start = time.monotonic()
    proc = _launch(
        cluster,
        "--nodes",
        "4",
        *_tiny(tiny_model_dir, synthetic_dir, tmp_path / "run"),
        address=cluster["dashboard"],
        timeout=1200,
    )
    print(f"submitted training took {time.monotonic() - start:.0f} s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_id = JOB_ID.search(proc.stdout).group(0)
    assert _job_status(cluster, job_id) == "SUCCEEDED"
    assert "finished at step 1" in proc.stdout  # the job's own log, followed by the launcher
    assert (tmp_path / "run" / "checkpoints" / "step_1" / "trainer_state.json").is_file()
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["step"] == 1


def test_failed_job_returns_nonzero(cluster, synthetic_dir, tmp_path):
    proc = _launch(
        cluster,
        *_tiny(tmp_path / "no-such-model", synthetic_dir, tmp_path / "run"),
        address=cluster["dashboard"],
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAILED" in proc.stderr
    assert "model.path does not exist" in proc.stdout  # the job's error, in its followed log


def test_ctrl_c_leaves_the_job_running_and_says_how_to_stop_it(cluster, tiny_model_dir, synthetic_dir, tmp_path):
    env = {**cluster["env"]}
    proc = subprocess.Popen(
        [
            str(BIN / "r1reward-launch"),
            "--address",
            cluster["dashboard"],
            *_tiny(tiny_model_dir, synthetic_dir, tmp_path / "run"),
            # Long enough to be running when the Ctrl-C lands (one tiny step takes about 3 s now, so a
            # one-step job could finish first); `ray job stop` below ends it.
            "trainer.num_steps=1000",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A suite started in the background (`make test &`) passes SIGINT on as ignored, and the launcher
        # would then never see the Ctrl-C; a user's terminal delivers it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    out = StreamLines(proc.stdout, "r1reward-launch's stdout")
    err = StreamLines(proc.stderr, "r1reward-launch's stderr")
    try:
        # Events, not sleeps: the launcher prints the job id, then follows the job's log. The first line of
        # that log shows it is following, which is where a Ctrl-C must land. Deadlines are generous
        # because a loaded machine can take minutes to start the job; each wait says what it waited for.
        submitted, match = out.wait_for(JOB_ID.pattern, EVENT_DEADLINE_S)
        job_id = match.group(0)
        out.wait_for(".", EVENT_DEADLINE_S, start=submitted + 1)
        proc.send_signal(signal.SIGINT)
        code = wait_for_exit(proc, EVENT_DEADLINE_S, "r1reward-launch after Ctrl-C")
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = err.all_text()
    assert code == 130, out.text()[-3000:] + stderr[-3000:]
    assert _job_status(cluster, job_id) in ("PENDING", "RUNNING")
    stop = stderr.split("Stop it with: ")[1].split()
    assert stop[:4] == ["ray", "job", "stop", job_id]
    done = subprocess.run(
        [str(BIN / "ray"), *stop[1:]], env=env, capture_output=True, text=True, timeout=EVENT_DEADLINE_S
    )
    assert done.returncode == 0, done.stderr
    _wait(
        "the job to stop",
        lambda: _job_status(cluster, job_id) in ("STOPPED", "FAILED", "SUCCEEDED"),
        EVENT_DEADLINE_S,
        [],
    )
    assert _job_status(cluster, job_id) == "STOPPED"
