"""Ray Jobs side of `r1reward-launch`: reach a cluster, read its nodes, build, submit and follow a job.

An address is either the dashboard's HTTP address (http://HOST:8265, what `ray job submit` takes) or
the GCS address (HOST:6379, what `ray start --address` takes). A GCS address is turned into the
dashboard's through the GCS, as Ray's own clients do; both then go over HTTP only, so the launcher
need not be a node of the cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1reward.config import Config
from r1reward.errors import UserError

# Never uploaded: the venv and runs/ are large and machine-specific; .git is history.
EXCLUDES = [".git", ".venv", "runs", "__pycache__"]
ENV_VARS = {"TOKENIZERS_PARALLELISM": "false"}  # tokenizers' thread pool deadlocks after fork
ADDRESS_HELP = "--address takes the dashboard URL http://HOST:8265 or the GCS address HOST:6379"


@dataclass(frozen=True)
class JobSpec:
    entrypoint: str
    runtime_env: dict[str, Any]

    def describe(self, api_url: str) -> str:
        """The job as printed before it is submitted, with the equivalent `ray job submit` line."""
        submit = shlex.join(
            ["ray", "job", "submit", "--address", api_url, "--runtime-env-json", json.dumps(self.runtime_env), "--"]
        )
        return "\n".join(
            [
                f"job for the Ray cluster at {api_url}:",
                f"  entrypoint: {self.entrypoint}",
                f"  runtime_env: {json.dumps(self.runtime_env)}",
                f"  same as: {submit} {self.entrypoint}",
            ]
        )


def repo_root() -> Path:
    """The checkout r1reward runs from (an editable install), else the current directory."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "configs").is_dir() else Path.cwd()


def build_job(
    config_path: str, overrides: Sequence[str], working_dir: Path, python: str = "python", command: str = "train"
) -> JobSpec:
    """The entrypoint (`r1reward train`, or `r1reward pipeline` for the whole pipeline) runs on the head
    node inside its copy of `working_dir`, so a config inside it is named relative to it; `python -m`
    (not the `r1reward` script) then imports r1reward from that copy."""
    config = Path(config_path).resolve()
    try:
        config_arg = str(config.relative_to(working_dir.resolve()))
    except ValueError:
        config_arg = str(config)  # outside the upload: must exist at this path on the head node
    entrypoint = shlex.join([python, "-m", "r1reward", command, "--config", config_arg, *overrides])
    return JobSpec(
        entrypoint, {"working_dir": str(working_dir), "excludes": list(EXCLUDES), "env_vars": dict(ENV_VARS)}
    )


def path_notes(config: Config, working_dir: Path, command: str = "train") -> list[str]:
    """Relative paths that will not mean on the cluster what they mean here. The pipeline writes every
    stage (RL too) under pipeline.output_dir; `r1reward train` under trainer.output_dir."""
    notes = []
    for key, value in (("model.path", config.model.path), ("data.train_path", config.data.train_path)):
        parts = Path(value).parts
        if value and not Path(value).is_absolute() and parts[0] in EXCLUDES:
            notes.append(
                f"{key}={value} is under {parts[0]}/, which is not uploaded with the working dir; "
                f"use a path every node can read"
            )
    key = "pipeline.output_dir" if command == "pipeline" else "trainer.output_dir"
    out = config.pipeline.output_dir if command == "pipeline" else config.trainer.output_dir
    if not Path(out).is_absolute():
        notes.append(
            f"{key}={out} is relative: the job writes it inside its copy of the working dir "
            f"on the head node; use a path on storage all nodes share"
        )
    return notes


def connect(address: str) -> tuple[Any, str]:
    """A JobSubmissionClient for `address` and the dashboard URL it resolved to; UserError if unreachable."""
    from ray.dashboard.utils import get_address_for_submission_client
    from ray.job_submission import JobSubmissionClient

    # Ray's packaging and log-stream chatter would bury the plan and the job printed above it.
    ray_logger = logging.getLogger("ray")
    for item in [ray_logger, *ray_logger.handlers]:  # handlers too: some child loggers set INFO themselves
        item.setLevel(logging.ERROR)
    # Ray's clients let RAY_API_SERVER_ADDRESS / RAY_ADDRESS override their argument: make ours win,
    # then pin the resolved URL so later clients do not ask the GCS again.
    os.environ.pop("RAY_API_SERVER_ADDRESS", None)
    os.environ["RAY_ADDRESS"] = address
    try:
        if "://" not in address and address != "auto":
            _check_port(address)  # Ray retries an unreachable GCS for ~40 s; fail fast and quietly
        api_url = get_address_for_submission_client(address)
        os.environ["RAY_API_SERVER_ADDRESS"] = api_url
        return JobSubmissionClient(api_url), api_url
    except Exception as e:  # ConnectionError, ValueError, RuntimeError, gRPC errors: all one message
        text = str(e).strip()
        if "AuthToken" in text or "authentication token" in text.lower():  # Ray turns tokens on by default
            raise UserError(
                f"the Ray cluster at {address} wants an authentication token: set RAY_AUTH_MODE=token "
                f"and put the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token"
            ) from None
        raise UserError(f"cannot reach the Ray cluster at {address} ({_first_line(e)}); {ADDRESS_HELP}") from None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _check_port(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"no port in {address!r}")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
        pass


def live_nodes(api_url: str) -> list[dict[str, float]]:
    """Total resources of each alive node, head first (the state API, over HTTP)."""
    from ray.util.state import list_nodes

    try:
        nodes = list_nodes(
            address=api_url, filters=[("state", "=", "ALIVE")], limit=10_000, raise_on_missing_output=False
        )
    except Exception as e:
        raise UserError(f"cannot read the nodes of the Ray cluster at {api_url}: {_first_line(e)}") from None
    nodes.sort(key=lambda n: (not n.is_head_node, n.start_time_ms or 0, n.node_id))
    return [{k: float(v) for k, v in n.resources_total.items() if isinstance(v, (int, float))} for n in nodes]


def submit(client: Any, spec: JobSpec) -> str:
    try:
        return client.submit_job(
            entrypoint=spec.entrypoint, runtime_env=spec.runtime_env, metadata={"r1reward": "train"}
        )
    except Exception as e:  # e.g. a working dir over Ray's upload limit
        raise UserError(f"the cluster refused the job: {_first_line(e)}") from None


def follow(client: Any, job_id: str, poll_s: float = 2.0, drain_s: float = 10.0) -> str:
    """Print the job's logs as they come until it ends; returns its final status (SUCCEEDED, ...).

    The log stream runs in a thread of its own and this thread polls the job's status: a Ctrl-C then
    lands in a plain `time.sleep` and propagates as KeyboardInterrupt (the caller leaves the job
    running). Inside `asyncio.run` it would only cancel the stream's task, which Ray's log client can
    swallow, and the launcher would follow the job to its end. After the job ends, the stream gets
    `drain_s` to print its last lines."""

    def stream() -> None:
        async def tail() -> None:
            async for lines in client.tail_job_logs(job_id):
                print(lines, end="", flush=True)

        try:
            asyncio.run(tail())
        except Exception as e:  # a dropped log stream must not lose the job: the status is still polled
            print(
                f"r1reward-launch: log stream ended ({type(e).__name__}: {e}); waiting for the job "
                f"(`ray job logs {job_id}` shows its logs)",
                file=sys.stderr,
                flush=True,
            )

    logs = threading.Thread(target=stream, name=f"logs of {job_id}", daemon=True)
    logs.start()
    while not (status := client.get_job_status(job_id)).is_terminal():
        time.sleep(poll_s)
    logs.join(timeout=drain_s)
    return str(status)


def failure_message(client: Any, job_id: str) -> str:
    message = (client.get_job_info(job_id).message or "").strip()
    return message.splitlines()[-1] if message else "see `ray job logs`"
