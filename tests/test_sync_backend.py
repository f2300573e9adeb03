"""The weight-transfer backend choice, asked by both the rollout worker and the trainer side."""

from __future__ import annotations

import pytest
import torch

from r1reward.sync.backend import GLOO_BACKEND, NCCL_BACKEND, weight_transfer_backend


def test_nccl_on_a_gpu_and_gloo_on_the_cpu():
    assert weight_transfer_backend(cuda=True) == NCCL_BACKEND == "r1reward_nccl"
    assert weight_transfer_backend(cuda=False) == GLOO_BACKEND
    assert weight_transfer_backend() == (NCCL_BACKEND if torch.cuda.is_available() else GLOO_BACKEND)


def test_each_transport_registers_under_the_same_name():
    engine = pytest.importorskip("r1reward.sync.engine")  # needs vLLM
    assert engine.GlooTrainerInitInfo.backend == GLOO_BACKEND
    assert engine.NcclTrainerInitInfo.backend == NCCL_BACKEND
