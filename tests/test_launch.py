"""r1reward-launch: the plan for N nodes x G GPUs, and a clear error when it cannot fit."""

from __future__ import annotations

import os
import subprocess
import sys


def launch(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from r1reward.launch.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # plan for N x G, not a live cluster
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env)


def test_paper_plan_fits_four_nodes_of_eight():
    proc = launch("--nodes", "4", "--gpus-per-node", "8", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    total = next(line for line in proc.stdout.splitlines() if line.startswith("total"))
    assert total.split()[2] == "32"  # 15 rollout + 16 learner + 1 judge GPUs
    assert "rollout.num_workers=15 learner.num_ranks=16" in proc.stdout


def test_ratio_sets_workers_and_ranks():
    proc = launch("--nodes", "4", "--ratio", "1:1", "--dry-run", "reward.judge=rule")
    assert proc.returncode == 0, proc.stderr
    assert "rollout.num_workers=16 learner.num_ranks=16" in proc.stdout
    # A split whose learner count cannot hold the train batch stops in one line (128 / (24 x 2) is not whole).
    proc = launch("--nodes", "4", "--ratio", "1:3", "--dry-run", "reward.judge=rule")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "learner.train_batch_size (128) must be a multiple" in proc.stderr


def test_too_small_cluster_is_one_line_before_anything_starts():
    proc = launch("--nodes", "2", "--dry-run", "reward.judge=rule")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "needs 31 GPUs" in proc.stderr and "16 GPUs on 2 nodes" in proc.stderr and "try --ratio" in proc.stderr
