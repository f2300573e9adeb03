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

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA: torch sees no GPU on this machine (run `pytest -m gpu` on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
