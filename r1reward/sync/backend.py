"""Which weight-transfer backend carries the learner's weights into vLLM: this project's engine
(sync/engine.py) over NCCL on a GPU, over gloo on the CPU. The rollout worker (engine side) and
connect_trainer (trainer side) both ask here, so the two sides cannot disagree.

Imports neither vLLM nor Ray: the rollout worker asks before its engine exists.
"""

from __future__ import annotations

# Both registered with vLLM's factories by sync/vllm_plugin.py; the same buckets, checksums and deadlines.
NCCL_BACKEND = "r1reward_nccl"
GLOO_BACKEND = "r1reward_gloo"


def weight_transfer_backend(cuda: bool | None = None) -> str:
    """NCCL when CUDA is visible (``cuda`` None: ask torch), else gloo."""
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    return NCCL_BACKEND if cuda else GLOO_BACKEND
