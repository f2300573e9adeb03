"""Which weight-transfer backend carries the learner's weights into vLLM: vLLM's own NCCL engine on a
GPU, this project's gloo engine (sync/gloo_engine.py) on the CPU. The rollout worker (engine side) and
connect_trainer (trainer side) both ask here, so the two sides cannot disagree.

Imports neither vLLM nor Ray: the rollout worker asks before its engine exists.
"""

from __future__ import annotations

NCCL_BACKEND = "nccl"  # vLLM's name for its NCCL weight-transfer engine
GLOO_BACKEND = "r1reward_gloo"  # registered with vLLM's factories by sync/vllm_plugin.py


def weight_transfer_backend(cuda: bool | None = None) -> str:
    """NCCL when CUDA is visible (``cuda`` None: ask torch), else the gloo engine."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return NCCL_BACKEND if cuda else GLOO_BACKEND
