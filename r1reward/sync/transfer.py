"""The trainer side of weight sync: which parameters go, to whom, over which backend.

`RayRolloutClient` implements vLLM's `VLLMWeightSyncClient` protocol over Ray actor handles of the
rollout workers; `TrainableSource` is a `WeightSource` over the learner's trainable parameters (a frozen
vision tower is not sent); `connect_trainer` hands both to vLLM's trainer-engine factory.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch
from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

from r1reward.placement.remote import wait_all
from r1reward.sync.gloo_engine import BACKEND as GLOO_BACKEND

# One weight-sync call on the rollout workers (they wait in the transfer group's collectives, which
# time out on their own after gloo_engine.TIMEOUT); this only stops a hung actor.
SYNC_CALL_TIMEOUT_S = 1800.0


class RayRolloutClient:
    """Drives every rollout worker through vLLM's four weight-sync calls and waits for all of them."""

    def __init__(self, workers: Sequence[Any], ranks_per_worker: int = 1) -> None:
        self.workers = list(workers)
        self.ranks_per_worker = ranks_per_worker

    @property
    def world_size(self) -> int:
        return 1 + len(self.workers) * self.ranks_per_worker

    def _all(self, method: str, *args: Any) -> None:
        self._wait(method, [getattr(w, method).remote(*args) for w in self.workers])

    def _wait(self, method: str, refs: list[Any]) -> None:
        wait_all(refs, SYNC_CALL_TIMEOUT_S, f"{len(self.workers)} rollout worker(s): weight sync {method}")

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        # Each engine's workers take consecutive ranks after the trainer's rank 0.
        self._wait("init_weight_transfer_engine", [
            w.init_weight_transfer_engine.remote({**init_info, "rank_offset": 1 + i * self.ranks_per_worker})
            for i, w in enumerate(self.workers)])

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


def connect_trainer(client: RayRolloutClient, source: WeightSource, rank: int, master_address: str,
                    master_port: int, backend: str | None = None):
    """Rendezvous with the rollout workers; returns a vLLM trainer engine whose `send_weights()` syncs."""
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    from r1reward.sync.vllm_plugin import register

    register()
    backend = backend or ("nccl" if torch.cuda.is_available() else GLOO_BACKEND)
    if backend == GLOO_BACKEND:
        from r1reward.sync.gloo_engine import GlooTrainerInitInfo as InitInfo
    else:
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo as InitInfo
    info = InitInfo(master_address=master_address, master_port=master_port, world_size=client.world_size, rank=rank)
    return WeightTransferTrainerFactory.trainer_init(info, client=client, source=source)
