"""One weight-sync protocol for every backend, plugged into vLLM's weight-transfer API.

The trainer's rank 0 broadcasts buckets over a group that it forms with every inference worker, with
every bucket's checksum behind the last one (sync/buckets.py). Each worker stages the whole update
(into a staging area it keeps between updates), compares the checksums, and only then loads: an update
whose bytes differ, or that times out, is refused before any tensor reaches the model, and the worker
ends the reload session with nothing loaded, so it keeps serving its previous weights. Received tensors
go through vLLM's layerwise reload, which restores the checkpoint layout that the CPU backend repacked
for oneDNN and repacks it again.

Only the transport differs (`GlooGroup` on the CPU, `NcclGroup` on GPUs): both give a broadcast from
rank 0 whose wait ends within timeout_s, so buckets, checksums and deadlines are the same code.
Registered with vLLM's factories as `r1reward_gloo` and `r1reward_nccl` (sync/vllm_plugin.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, ClassVar

import torch
from vllm.distributed.weight_transfer.base import (
    TrainerInitInfo,
    TrainerWeightTransferEngine,
    VLLMWeightSyncClient,
    WeightSource,
    WeightTransferEngine,
    WeightTransferInitInfo,
    WeightTransferUpdateInfo,
)

from r1reward.sync.backend import GLOO_BACKEND, NCCL_BACKEND
from r1reward.sync.buckets import DEFAULT_BUCKET_BYTES, Buffers, TensorMeta, Work, send_buckets, stage_buckets

# The rendezvous and each broadcast give up after this (timeouts.weight_sync_s sets it for a run).
DEFAULT_TIMEOUT_S = 600.0


class GlooGroup:
    """gloo over TCP, CPU tensors; gloo's own timeout ends a broadcast that waits longer than timeout_s."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, timeout_s: float, device: Any = None):
        from vllm.distributed.utils import stateless_init_torch_distributed_process_group

        self.device = torch.device("cpu")
        self.group = stateless_init_torch_distributed_process_group(
            host, port, rank, world_size, backend="gloo", timeout=timedelta(seconds=timeout_s)
        )

    def broadcast(self, tensor: torch.Tensor) -> Work:
        # The group is not registered globally, so call the ProcessGroup itself (root = trainer, rank 0).
        return self.group.broadcast(tensor, 0)


class DeadlineWork:
    """A broadcast's handle whose wait polls `done` and fails after timeout_s with one line."""

    def __init__(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        self.done, self.timeout_s, self.what = done, timeout_s, what

    def wait(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not self.done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"weight sync: {self.what} did not complete within {self.timeout_s:g} s")
            time.sleep(0.001)


class NcclGroup:
    """vLLM's PyNccl communicator on this process's GPU. NCCL calls have no timeout of their own: a
    broadcast is queued on the current stream and its wait polls a CUDA event up to timeout_s."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, timeout_s: float, device: Any = None):
        from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
        from vllm.distributed.utils import StatelessProcessGroup
        from vllm.utils.nccl import unpinned_nccl_env

        self.device = torch.device(device if device is not None else f"cuda:{torch.cuda.current_device()}")
        self.timeout_s = timeout_s
        store = StatelessProcessGroup.create(host, port, rank, world_size, store_timeout=int(timeout_s))
        with unpinned_nccl_env():
            self.comm = PyNcclCommunicator(store, device=self.device)

    def broadcast(self, tensor: torch.Tensor) -> Work:
        stream = torch.cuda.current_stream(self.device)
        self.comm.broadcast(tensor, src=0, stream=stream)
        event = torch.cuda.Event()
        event.record(stream)
        return DeadlineWork(event.query, self.timeout_s, f"an NCCL broadcast of {tensor.numel()} bytes")


@dataclass
class BucketWorkerInitInfo(WeightTransferInitInfo):
    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass
class BucketUpdateInfo(WeightTransferUpdateInfo):
    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]
    bucket_bytes: int = DEFAULT_BUCKET_BYTES


class BucketWeightTransferEngine(WeightTransferEngine[BucketWorkerInitInfo, BucketUpdateInfo]):
    """The inference-worker side: join the group, receive every bucket, verify them all, then load."""

    init_info_cls = BucketWorkerInitInfo
    update_info_cls = BucketUpdateInfo
    group_cls: ClassVar[type] = GlooGroup

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = None
        self.received_checksums: list[int] = []
        self.buffers = Buffers()  # the staging area, kept for the next update

    def init_transfer_engine(self, init_info: BucketWorkerInitInfo) -> None:
        parallel = self.parallel_config
        worker_rank = parallel.data_parallel_index * parallel.world_size + parallel.rank
        self.group = self.group_cls(
            init_info.master_address,
            init_info.master_port,
            init_info.rank_offset + worker_rank,
            init_info.world_size,
            init_info.timeout_s,
            self.device,
        )

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # The base class synchronises an accelerator, which a CPU worker does not have; on a GPU every
        # bucket's wait has already synchronised with its broadcast.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: BucketUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("weight transfer is not initialised: call init_weight_transfer_engine first")
        metas = [
            TensorMeta(n, d, tuple(s))
            for n, d, s in zip(update_info.names, update_info.dtype_names, update_info.shapes)
        ]
        self.received_checksums = []
        try:
            update = stage_buckets(
                metas, update_info.bucket_bytes, self.group.broadcast, self.group.device, buffers=self.buffers
            )
        except BaseException:
            # A transfer that failed may still have receives posted into the staging area: the next
            # update gets a fresh one.
            self.buffers = Buffers()
            # Nothing reached the model: ending the reload session puts every layer's previous tensors
            # back (vLLM's fallback for a layer that loaded nothing, with a warning per layer that would
            # bury the one line that says why), so the worker serves on unchanged.
            reload_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
            level = reload_log.level
            reload_log.setLevel(logging.ERROR)
            try:
                self.finish_weight_update()
            finally:
                reload_log.setLevel(level)
            raise
        update.load(self.model.load_weights)
        self.received_checksums = update.checksums

    def shutdown(self) -> None:
        self.group = None


class GlooWeightTransferEngine(BucketWeightTransferEngine):
    group_cls = GlooGroup


class NcclWeightTransferEngine(BucketWeightTransferEngine):
    group_cls = NcclGroup


@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    backend: ClassVar[str] = GLOO_BACKEND
    master_address: str
    master_port: int
    world_size: int
    bucket_bytes: int = DEFAULT_BUCKET_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass
class NcclTrainerInitInfo(GlooTrainerInitInfo):
    # The same fields: the backend only picks which engine (which transport) vLLM's factory builds.
    backend: ClassVar[str] = NCCL_BACKEND


class BucketTrainerWeightTransferEngine(TrainerWeightTransferEngine[GlooTrainerInitInfo]):
    """The trainer side: rank 0 forms the group with the workers and broadcasts from the source; every
    other learner rank walks the source alongside, so that each ZeRO-3 gather (a collective of all
    learner ranks) has every rank in it, whatever the transport."""

    init_info_cls = GlooTrainerInitInfo
    group_cls: ClassVar[type] = GlooGroup

    def __init__(
        self,
        *,
        client: VLLMWeightSyncClient,
        source: WeightSource,
        is_sender: bool,
        bucket_bytes: int,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.bucket_bytes = bucket_bytes
        self.timeout_s = timeout_s
        self.group = None
        self.sent_checksums: list[int] = []
        self.buffers = Buffers()  # the two pack buffers, kept for the next update

    @classmethod
    def trainer_init(
        cls, init_info: GlooTrainerInitInfo, *, client: VLLMWeightSyncClient, source: WeightSource | None = None
    ) -> BucketTrainerWeightTransferEngine:
        if source is None:
            raise ValueError("the trainer's weight-transfer engine needs a WeightSource")
        engine = cls(
            client=client,
            source=source,
            is_sender=init_info.is_sender,
            bucket_bytes=init_info.bucket_bytes,
            timeout_s=init_info.timeout_s,
        )
        if engine.is_sender:
            worker_info = BucketWorkerInitInfo(
                init_info.master_address, init_info.master_port, 1, init_info.world_size, init_info.timeout_s
            )
            # Both sides block in the rendezvous, each bounded by timeout_s.
            engine.group = engine._alongside(
                client.init_weight_transfer_engine,
                (asdict(worker_info),),
                lambda: cls.group_cls(
                    init_info.master_address, init_info.master_port, 0, init_info.world_size, init_info.timeout_s
                ),
                "set-up",
            )
        return engine

    def _alongside(self, client_call: Any, args: tuple, own_part: Any, what: str) -> Any:
        """Runs the workers' side (`client_call`, a bounded wait on their actors) in a thread while this
        side runs `own_part`; returns own_part's result. A failure on either side fails the sync with the
        peer named, and nothing here waits for a stalled worker beyond timeout_s."""
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            peers = pool.submit(client_call, *args)
            try:
                result = own_part()
            except Exception as error:  # noqa: BLE001 - a transport timeout: say which peers it waited for
                # The workers' side was started with the same timeout: its error names the worker that hung.
                try:
                    peers.result(timeout=30)
                except TimeoutError:  # the workers' side has not ended either: name them all below
                    pass
                except Exception as named:  # noqa: BLE001
                    raise named from error
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise TimeoutError(
                    f"weight sync {what}: the rollout workers (sync ranks 1..{self.client.world_size - 1}) did "
                    f"not take part within {self.timeout_s:.0f} s: {first}"
                ) from error
            peers.result(timeout=self.timeout_s + 30)  # the client's own wait ends first, naming the worker
            return result
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def send_weights(self) -> None:
        metas = [
            TensorMeta(m.name, str(m.dtype).removeprefix("torch."), tuple(m.shape)) for m in self.source.metadata()
        ]
        if not self.is_sender:
            for _ in self.source:  # keep any collective inside the source (ZeRO-3 gathers) aligned
                pass
            return
        info = BucketUpdateInfo(
            [m.name for m in metas], [m.dtype for m in metas], [list(m.shape) for m in metas], self.bucket_bytes
        )
        self.client.start_weight_update()
        self.sent_checksums = self._alongside(
            self.client.update_weights, (asdict(info),), lambda: self._broadcast_buckets(metas), "update"
        )
        self.client.finish_weight_update()

    def _broadcast_buckets(self, metas: list[TensorMeta]) -> list[int]:
        group = self.group
        return send_buckets(
            iter(self.source), metas, self.bucket_bytes, group.broadcast, device=group.device, buffers=self.buffers
        )


class GlooTrainerWeightTransferEngine(BucketTrainerWeightTransferEngine):
    group_cls = GlooGroup


class NcclTrainerWeightTransferEngine(BucketTrainerWeightTransferEngine):
    init_info_cls = NcclTrainerInitInfo
    group_cls = NcclGroup
