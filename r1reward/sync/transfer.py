"""The trainer side of weight sync: which parameters go, to whom, over which backend.

`RayRolloutClient` implements vLLM's `VLLMWeightSyncClient` protocol over Ray actor handles of the
rollout workers; `TrainableSource` is a `WeightSource` over the learner's trainable parameters (a frozen
vision tower is not sent); `connect_trainer` hands both to vLLM's trainer-engine factory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

from r1reward.sync.backend import GLOO_BACKEND, weight_transfer_backend
from r1reward.sync.engine import DEFAULT_TIMEOUT_S, GlooTrainerInitInfo, NcclTrainerInitInfo
from r1reward.waits import wait_all


class RayRolloutClient:
    """Drives every rollout worker through vLLM's four weight-sync calls and waits for all of them."""

    def __init__(self, workers: Sequence[Any], ranks_per_worker: int = 1, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.workers = list(workers)
        self.ranks_per_worker = ranks_per_worker
        self.timeout_s = timeout_s  # each call on the workers, e.g. a receive that stalls

    @property
    def world_size(self) -> int:
        return 1 + len(self.workers) * self.ranks_per_worker

    def _roles(self) -> list[str]:
        return [f"rollout worker {i} (sync rank {1 + i * self.ranks_per_worker})" for i in range(len(self.workers))]

    def _all(self, method: str, *args: Any) -> None:
        wait_all(
            [getattr(w, method).remote(*args) for w in self.workers],
            self._roles(),
            f"weight sync {method}",
            self.timeout_s,
        )

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        # Each engine's workers take consecutive ranks after the trainer's rank 0.
        wait_all(
            [
                w.init_weight_transfer_engine.remote({**init_info, "rank_offset": 1 + i * self.ranks_per_worker})
                for i, w in enumerate(self.workers)
            ],
            self._roles(),
            "weight sync set-up",
            self.timeout_s,
        )

    def start_weight_update(self) -> None:
        self._all("start_weight_update")

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self._all("update_weights", update_info)

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._all("finish_weight_update", weight_version)


class TrainableSource(WeightSource):
    """The module's parameters that train, under their Hugging Face checkpoint names.

    Under ZeRO-3 each parameter is gathered for the send (a collective every rank joins in order)."""

    def __init__(self, module: torch.nn.Module, only_trainable: bool = True) -> None:
        self.module = module
        self.only_trainable = only_trainable

    def _params(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.module.named_parameters() if p.requires_grad or not self.only_trainable]

    def metadata(self) -> list[ParamMeta]:
        # ZeRO-3 keeps the full shape in `ds_shape`; the local tensor is a flat shard.
        return [ParamMeta(n, p.dtype, tuple(getattr(p, "ds_shape", p.shape))) for n, p in self._params()]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, param in self._params():
            with _gathered(param):
                yield name, param.data


def _gathered(param: torch.nn.Parameter):
    if hasattr(param, "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters([param], modifier_rank=None)
    return contextlib.nullcontext()


def connect_trainer(
    client: RayRolloutClient,
    source: WeightSource,
    rank: int,
    master_address: str,
    master_port: int,
    backend: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
):
    """Rendezvous with the rollout workers; returns a vLLM trainer engine whose `send_weights()` syncs."""
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    from r1reward.sync.vllm_plugin import register

    register()
    # The same engine over either transport: buckets, checksums and timeout_s on both sides.
    info_cls = GlooTrainerInitInfo if (backend or weight_transfer_backend()) == GLOO_BACKEND else NcclTrainerInitInfo
    info = info_cls(
        master_address=master_address,
        master_port=master_port,
        world_size=client.world_size,
        rank=rank,
        timeout_s=timeout_s,
    )
    return WeightTransferTrainerFactory.trainer_init(info, client=client, source=source)
