"""Shared fixtures: one tiny model and one synthetic set per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED_BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from r1reward.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), seed=0, size="tiny")


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    from r1reward.data.synthetic import make_synthetic_data

    out = tmp_path_factory.mktemp("synthetic")
    make_synthetic_data(out, num=16, seed=0)
    return out


@pytest.fixture(scope="session")
def sft_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model after a short cold-start SFT: it writes the answer format often enough that RL
    rewards vary (a random model scores 0 everywhere, so RL would have no signal)."""
    from r1reward.data.synthetic import make_synthetic_data
    from r1reward.learner.sft_local import sft_local

    data = make_synthetic_data(tmp_path_factory.mktemp("sft-data"), num=64, seed=1)
    out = tmp_path_factory.mktemp("tiny-sft")
    sft_local(tiny_model_dir, data["sft"], out, steps=80)
    return out


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    if not SHARED_BENCHMARKS.is_dir():
        pytest.skip(f"benchmark texts not found at {SHARED_BENCHMARKS} (they come with ../shared)")
    return SHARED_BENCHMARKS


def pytest_collection_modifyitems(config, items):
    import torch

    config.stash[GPU_CHECKS] = [item.nodeid for item in items if "gpu" in item.keywords]
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA: torch sees no GPU on this machine (run `pytest -m gpu` on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


GPU_CHECKS = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """After `pytest -m gpu` (`make test-gpu`): one row per GPU check, so one call on a GPU machine says
    what passed. A check the run never reached (the deadline, a crash) is listed as not run."""
    checks = config.stash.get(GPU_CHECKS, [])
    if config.option.markexpr != "gpu" or config.option.collectonly or not checks:
        return
    results: dict[str, list] = {}  # nodeid -> [result, seconds, reason]
    for outcome in ("passed", "skipped", "failed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            row = results.setdefault(report.nodeid, ["passed", 0.0, ""])
            row[1] += getattr(report, "duration", 0.0)
            if outcome != "passed":
                long = report.longrepr
                reason = long[2] if isinstance(long, tuple) else str(getattr(long, "reprcrash", long) or "")
                row[0], row[2] = outcome, reason.removeprefix("Skipped: ").splitlines()[0] if reason else ""
    rows = [("check", "result", "seconds", "reason")]
    for nodeid in checks:
        result, seconds, reason = results.get(nodeid, ("not run", 0.0, ""))
        rows.append((nodeid.removeprefix("tests/"), result, f"{seconds:.1f}", reason))
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    terminalreporter.write_sep("=", "GPU checks")
    for r in rows:
        terminalreporter.write_line(
            "  ".join([r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]), r[3]])
        )
    counts = {k: sum(1 for n in checks if results.get(n, ["not run"])[0] == k) for k in ("passed", "failed", "skipped")}
    terminalreporter.write_line(
        f"total: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
        + (f", {len(checks) - sum(counts.values())} errored or not run" if len(checks) > sum(counts.values()) else "")
    )
