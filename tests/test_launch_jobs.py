"""r1reward-launch's Ray Jobs side without a cluster: the job it builds, its notes, unreachable
addresses, and following a job (with a stand-in client; tests/test_launch_ray_cluster.py runs the
real thing)."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from r1reward.config import load_config
from r1reward.launch import jobs
from r1reward.launch.cli import _submit_and_follow

ROOT = Path(__file__).resolve().parents[1]


def launch(*args: str, **env: str) -> subprocess.CompletedProcess:
    code = "import sys; from r1reward.launch.cli import main; sys.exit(main(sys.argv[1:]))"
    base = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, env={**base, **env}
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_job_runs_the_config_from_the_uploaded_repo(monkeypatch):
    monkeypatch.chdir(ROOT)
    spec = jobs.build_job("configs/tiny-cpu.yaml", ["trainer.output_dir=/shared/my run", "x=1"], ROOT)
    assert shlex.split(spec.entrypoint) == [
        "python",
        "-m",
        "r1reward",
        "train",
        "--config",
        "configs/tiny-cpu.yaml",
        "trainer.output_dir=/shared/my run",
        "x=1",
    ]
    assert spec.runtime_env["working_dir"] == str(ROOT)
    assert {".venv", "runs", ".git"} <= set(spec.runtime_env["excludes"])
    assert spec.runtime_env["env_vars"] == {"TOKENIZERS_PARALLELISM": "false"}
    assert jobs.repo_root() == ROOT  # an editable install: the checkout is what is uploaded


def test_config_outside_the_working_dir_keeps_its_absolute_path(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("trainer: {num_steps: 1}\n")
    spec = jobs.build_job(str(config), [], ROOT, python="/opt/venv/bin/python")
    assert shlex.split(spec.entrypoint)[:6] == [
        "/opt/venv/bin/python",
        "-m",
        "r1reward",
        "train",
        "--config",
        str(config),
    ]


def test_describe_gives_a_ray_job_submit_line_that_round_trips():
    spec = jobs.build_job(str(ROOT / "configs/tiny-cpu.yaml"), ["a=b c"], ROOT)
    line = next(x for x in spec.describe("http://h:8265").splitlines() if "same as:" in x).split("same as: ")[1]
    argv = shlex.split(line)
    assert argv[:5] == ["ray", "job", "submit", "--address", "http://h:8265"]
    assert json.loads(argv[argv.index("--runtime-env-json") + 1]) == spec.runtime_env
    assert shlex.join(argv[argv.index("--") + 1 :]) == spec.entrypoint


def test_path_notes_flag_paths_the_cluster_will_not_see():
    config = load_config(str(ROOT / "configs/tiny-cpu.yaml"), [])  # runs/tiny-model, runs/tiny-cpu
    notes = jobs.path_notes(config, ROOT)
    assert any(n.startswith("model.path=runs/tiny-model is under runs/") for n in notes)
    assert any(n.startswith("trainer.output_dir=runs/tiny-cpu is relative") for n in notes)
    paper = load_config(str(ROOT / "configs/paper-qwen2.5-vl-7b.yaml"), ["trainer.output_dir=/shared/out"])
    assert jobs.path_notes(paper, ROOT) == []  # a hub model name and an absolute output dir are fine


def test_the_whole_pipeline_runs_as_a_job_with_its_own_output_folder():
    spec = jobs.build_job(
        "configs/paper-qwen2.5-vl-7b.yaml", ["pipeline.output_dir=/shared/p"], ROOT, command="pipeline"
    )
    assert shlex.split(spec.entrypoint) == [
        "python",
        "-m",
        "r1reward",
        "pipeline",
        "--config",
        "configs/paper-qwen2.5-vl-7b.yaml",
        "pipeline.output_dir=/shared/p",
    ]
    paper = load_config(str(ROOT / "configs/paper-qwen2.5-vl-7b.yaml"), [])
    notes = jobs.path_notes(paper, ROOT, command="pipeline")
    # Every stage writes under pipeline.output_dir (RL too): that is the folder that must be shared.
    assert [n.split(" is ")[0] for n in notes] == ["pipeline.output_dir=runs/r1-reward-7b-pipeline"]
    shared = load_config(str(ROOT / "configs/paper-qwen2.5-vl-7b.yaml"), ["pipeline.output_dir=/shared/p"])
    assert jobs.path_notes(shared, ROOT, command="pipeline") == []


def test_launch_plans_the_pipeline_and_prints_its_command():
    proc = launch("--nodes", "4", "--pipeline", "--dry-run", "pipeline.output_dir=/shared/p")
    assert proc.returncode == 0, proc.stderr
    command = next(line for line in proc.stdout.splitlines() if line.startswith("command:"))
    assert command == (
        "command: r1reward pipeline --config configs/paper-qwen2.5-vl-7b.yaml pipeline.output_dir=/shared/p "
        "rollout.num_workers=15 learner.num_ranks=16"
    )


@pytest.mark.parametrize("form", ["http://127.0.0.1:{port}", "127.0.0.1:{port}"])
def test_unreachable_address_is_one_line_fast(form):
    address = form.format(port=closed_port())
    proc = launch("--config", "configs/tiny-cpu.yaml", "--dry-run", RAY_ADDRESS=address)  # from the environment
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert f"cannot reach the Ray cluster at {address}" in proc.stderr and "http://HOST:8265" in proc.stderr
    assert "placement on" not in proc.stdout  # nothing planned against a cluster it could not read


def test_nodes_is_required_without_an_address():
    proc = launch("--dry-run")
    assert proc.returncode == 2 and "--nodes is required" in proc.stderr


class FakeStatus(str):
    def is_terminal(self) -> bool:
        return self in ("SUCCEEDED", "FAILED", "STOPPED")


class FakeClient:
    """The part of JobSubmissionClient the launcher uses."""

    def __init__(self, lines: list[str], final: str, broken_stream: bool = False):
        self.lines, self.final, self.broken = lines, final, broken_stream
        self.statuses = ["RUNNING", final]
        self.submitted: list[dict] = []

    def submit_job(self, **kwargs) -> str:
        self.submitted.append(kwargs)
        return "raysubmit_test"

    async def tail_job_logs(self, job_id: str):
        for line in self.lines:
            yield line
        if self.broken:
            raise ConnectionError("stream dropped")

    def get_job_status(self, job_id: str) -> FakeStatus:
        return FakeStatus(self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0])

    def get_job_info(self, job_id: str):
        return type("Info", (), {"message": "Job entrypoint command failed with exit code 2\nboom: bad model"})()


SPEC = jobs.JobSpec("python -m r1reward train", {"working_dir": "/r"})


def test_follow_prints_the_logs_and_succeeds(capsys):
    client = FakeClient(["step 1\n", "finished at step 1\n"], "SUCCEEDED")
    assert _submit_and_follow(client, "http://h:8265", SPEC) == 0
    out = capsys.readouterr().out
    assert "submitted job raysubmit_test" in out and "finished at step 1" in out
    submitted = client.submitted[0]
    assert submitted["entrypoint"] == SPEC.entrypoint and submitted["runtime_env"] == SPEC.runtime_env


def test_failed_job_is_nonzero_with_its_last_line(capsys):
    assert _submit_and_follow(FakeClient([], "FAILED"), "http://h:8265", SPEC) == 1
    assert "job raysubmit_test FAILED: boom: bad model" in capsys.readouterr().err


def test_dropped_log_stream_still_waits_for_the_end(capsys, monkeypatch):
    monkeypatch.setattr(jobs.time, "sleep", lambda s: None)
    assert jobs.follow(FakeClient(["a\n"], "SUCCEEDED", broken_stream=True), "raysubmit_test") == "SUCCEEDED"
    assert "log stream ended" in capsys.readouterr().err


def test_ctrl_c_leaves_the_job_and_says_how_to_stop_it(capsys, monkeypatch):
    def ctrl_c(seconds: float) -> None:  # where a real Ctrl-C lands: the status poll's sleep
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs.time, "sleep", ctrl_c)
    assert _submit_and_follow(FakeClient(["a\n"], "RUNNING"), "http://h:8265", SPEC) == 130
    assert "ray job stop raysubmit_test --address http://h:8265" in capsys.readouterr().err
