"""The CPU side of `make test-gpu`: the GPU checks are collected, each skips here with its reason, the
run ends with a table of what passed, and the target runs them under a deadline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = {
    "test_gpu.py::test_learner_logprobs_in_bf16_stay_close_to_fp32",
    "test_gpu.py::test_deepspeed_learner_trains_over_nccl[zero2]",
    "test_gpu.py::test_deepspeed_learner_trains_over_nccl[zero3]",
    "test_gpu.py::test_nccl_weight_sync_matches_a_fresh_engine",
}


def _pytest(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # this machine's view even where a GPU exists
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_each_gpu_check_is_collected_skips_here_with_a_reason_and_a_table_ends_the_run():
    # The table lists every collected GPU check (a check the run never reached too), so one run of
    # `pytest -m gpu` shows both what is collected and how each ended.
    proc = _pytest("-m", "gpu")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if " GPU checks " in line) + 1 :]
    assert table[0].split() == ["check", "result", "seconds", "reason"]
    rows = {line.split()[0]: line for line in table[1:] if "::" in line}
    assert set(rows) == CHECKS, table
    for row in rows.values():
        assert re.search(r"\sskipped\s+\d+\.\d\s+needs CUDA: torch sees no GPU", row), row
    assert "total: 0 passed, 0 failed, 4 skipped" in table


def test_make_test_gpu_runs_the_gpu_checks_under_ten_minutes():
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\ntest-gpu:", 1)[1].split("\n\n", 1)[0]
    limit = re.search(r"timeout (?:-\S+ )*(\d+)", recipe)
    assert limit and int(limit.group(1)) <= 600, recipe
    assert "-m pytest" in recipe and "-m gpu" in recipe
