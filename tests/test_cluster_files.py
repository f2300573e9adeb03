"""cluster/: each file parses, names a real entry point with arguments that entry point accepts, uses
an existing config that loads with its overrides, and asks for nodes the config's plan fits."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from r1reward.cli import build_parser as train_parser
from r1reward.config import load_config
from r1reward.launch.cli import build_parser as launch_parser
from r1reward.placement.plan import fit_to_nodes, make_plan

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def _launch_line(text: str) -> list[str]:
    line = next(x for x in text.splitlines() if "r1reward-launch --" in x)
    return shlex.split(line.split("r1reward-launch", 1)[1])


def _plan_fits(config_path: str, overrides: list[str], nodes: list[dict[str, float]]) -> None:
    assert (ROOT / config_path).is_file(), config_path
    config = load_config(str(ROOT / config_path), overrides)  # unknown keys or bad values raise here
    fit_to_nodes(make_plan(config), nodes)  # PlacementError if it does not fit


def test_ray_cluster_yaml_is_valid_for_ray_up_and_fits_the_paper_plan():
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    text = (CLUSTER / "ray-cluster.yaml").read_text()
    config = yaml.safe_load(text)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # what `ray up` checks first
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    # The dashboard runs jobs (any code) for whoever reaches it: the head's localhost only (`ray dashboard`).
    assert any("ray start --head" in c and "--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])
    assert "0.0.0.0" not in text
    nodes = [types["head"]["resources"]] + [types["gpu_worker"]["resources"]] * types["gpu_worker"]["min_workers"]
    assert len(nodes) == 4 and config["max_workers"] == 3

    args = launch_parser().parse_args(_launch_line(text))
    assert args.nodes == 4 and args.address == "http://127.0.0.1:8265"  # `ray dashboard` forwards here
    _plan_fits(args.config, args.overrides, [{k: float(v) for k, v in n.items()} for n in nodes])


def test_rayjob_manifest_trains_the_paper_config_on_its_gpu_pods():
    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "r1reward"]
    args = train_parser().parse_args(argv[3:])
    assert args.command == "train"
    spec = job["spec"]["rayClusterSpec"]
    head_cpus = float(spec["headGroupSpec"]["rayStartParams"]["num-cpus"])
    nodes = [{"CPU": head_cpus, "GPU": 0.0}]
    for group in spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        nodes += [{"CPU": float(limits["cpu"]), "GPU": float(limits["nvidia.com/gpu"])}] * group["replicas"]
    assert sum(n["GPU"] for n in nodes) == 32
    # The operator must reach the dashboard over the pod network, so it is behind Ray token auth.
    assert spec["authOptions"] == {"mode": "token"} and spec["rayVersion"] >= "2.52"
    # The image (cluster/Dockerfile) holds this repository at /app.
    assert "COPY --chown=ray:users configs ./configs" in (CLUSTER / "Dockerfile").read_text()
    _plan_fits(args.config.removeprefix("/app/"), args.overrides, nodes)
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"


def _shim(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def test_slurm_script_starts_head_and_workers_then_launches(tmp_path):
    script = CLUSTER / "slurm.sbatch"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    header = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", script.read_text(), re.M))
    assert header["nodes"] == "4" and header["gpus-per-node"] == "8"
    # Stand-ins for Slurm, the venv's python and the launcher: each records how it was called.
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "activate").write_text("")
    record = f'echo "$(basename "$0") AUTH=$RAY_AUTH_MODE $*" >> {log}\n'
    _shim(bin_dir, "scontrol", "printf 'n1\\nn2\\nn3\\nn4\\n'\n")
    _shim(bin_dir, "srun", record + 'case "$*" in *hostname*) echo "10.0.0.1 fe80::1";; esac\n')
    _shim(bin_dir, "sleep", "")
    _shim(bin_dir, "python", 'case "$*" in *list_nodes*) echo 4;; *) echo 0123abcd;; esac\n')
    _shim(bin_dir, "r1reward-launch", record)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_SUBMIT_DIR": str(ROOT),
        "SLURM_JOB_NODELIST": "n[1-4]",
        "VENV": str(tmp_path / "venv"),
        "OUTPUT_DIR": "/shared/out",
    }
    proc = subprocess.run(
        ["bash", str(script), "trainer.num_steps=10"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    head = next(c for c in calls if "ray start --head" in c)
    assert "-w n1" in head and "--port=6379" in head and "--num-gpus=8" in head and "AUTH=token" in head
    workers = next(c for c in calls if "ray start --block --address=10.0.0.1:6379" in c)
    assert "--nodes=3" in workers and "--exclude=n1" in workers
    launch = shlex.split(next(c for c in calls if c.startswith("r1reward-launch")))
    assert launch[1] == "AUTH=token"
    args = launch_parser().parse_args(launch[2:])
    assert (args.nodes, args.address) == (4, "http://10.0.0.1:8265")
    assert args.overrides == ["trainer.output_dir=/shared/out", "trainer.num_steps=10"]
    _plan_fits(args.config, args.overrides, [{"CPU": 64.0, "GPU": 8.0}] * 4)
