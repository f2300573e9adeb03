"""The one weight-sync protocol, driven through the NCCL engine's two sides over a fake transport: the
same buckets, checksums-before-load and deadlines as gloo, a corrupted bucket refused with nothing
loaded, the next update loaded whole, every learner rank walking the source (ZeRO-3 gathers), and a
broadcast that never completes failing after its deadline."""

from __future__ import annotations

import queue
import re

import pytest
import torch

from r1reward.sync.backend import GLOO_BACKEND, NCCL_BACKEND, weight_transfer_backend
from r1reward.sync.buckets import Buffers, SyncCorrupted

pytest.importorskip("vllm")
from r1reward.sync import engine as engine_mod  # noqa: E402 - after the check that vLLM is there


class _Done:
    def wait(self) -> None:
        pass


class _Wire:
    """Two ends of a broadcast between one sender and one receiver in this process (threads); bucket
    `corrupt` (0-based, in send order) has a byte flipped on the way."""

    def __init__(self, corrupt: int | None = None) -> None:
        self.queue: queue.Queue[torch.Tensor] = queue.Queue()
        self.sent, self.corrupt = 0, corrupt

    def end(self, sender: bool):
        wire = self

        class Group:  # stands in for NcclGroup: a device and a broadcast from rank 0
            device = torch.device("cpu")

            def broadcast(self, tensor: torch.Tensor) -> _Done:
                if sender:
                    copy = tensor.clone()
                    if wire.sent == wire.corrupt:
                        copy[0] ^= 1
                    wire.sent += 1
                    wire.queue.put(copy)
                else:
                    tensor.copy_(wire.queue.get(timeout=30))
                return _Done()

        return Group()


class _Loader:
    def __init__(self) -> None:
        self.loaded: list[str] = []

    def __call__(self, pairs) -> None:
        self.loaded += [name for name, _ in pairs]


class _Model:
    def __init__(self) -> None:
        self.load_weights = _Loader()


class _Source:
    """A WeightSource over three tensors that counts the walks over it (a ZeRO-3 gather per tensor)."""

    def __init__(self) -> None:
        self.tensors = {"a": torch.randn(16), "b": torch.randn(16), "c": torch.randn(16)}
        self.walked = 0

    def metadata(self):
        from vllm.distributed.weight_transfer.base import ParamMeta

        return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in self.tensors.items()]

    def __iter__(self):
        self.walked += 1
        yield from self.tensors.items()


class _Client:
    """vLLM's sync client with one worker: its engine (the NCCL worker side) does the calls in-process."""

    world_size = 2

    def __init__(self, worker) -> None:
        self.worker = worker

    def start_weight_update(self) -> None:
        pass

    def update_weights(self, info: dict) -> None:
        self.worker.update_weights(info)

    def finish_weight_update(self, weight_version=None) -> None:
        pass


def _worker(wire: _Wire):
    worker = engine_mod.NcclWeightTransferEngine.__new__(engine_mod.NcclWeightTransferEngine)
    worker.group, worker.model, worker.device, worker.received_checksums = wire.end(False), _Model(), "cpu", []
    worker.buffers = Buffers()
    worker.rolled_back = 0

    def roll_back() -> None:
        worker.rolled_back += 1

    worker.finish_weight_update = roll_back
    return worker


def _trainer(worker, wire: _Wire, source: _Source, is_sender: bool = True):
    trainer = engine_mod.NcclTrainerWeightTransferEngine(
        client=_Client(worker), source=source, is_sender=is_sender, bucket_bytes=64, timeout_s=30
    )
    trainer.group = wire.end(True)
    return trainer


def test_nccl_engine_is_the_one_protocol_under_vllm_names():
    assert weight_transfer_backend(cuda=True) == NCCL_BACKEND != GLOO_BACKEND
    assert engine_mod.NcclTrainerInitInfo.backend == NCCL_BACKEND
    assert engine_mod.NcclWeightTransferEngine.group_cls is engine_mod.NcclGroup
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

    from r1reward.sync.vllm_plugin import register

    register()
    assert NCCL_BACKEND in WeightTransferEngineFactory._registry
    assert NCCL_BACKEND in WeightTransferTrainerFactory._registry


@pytest.mark.parametrize("corrupt", [0, 2])
def test_nccl_path_refuses_a_corrupted_bucket_before_loading_then_loads_an_intact_update(corrupt):
    wire, source = _Wire(corrupt=corrupt), _Source()
    worker = _worker(wire)
    trainer = _trainer(worker, wire, source)
    with pytest.raises(SyncCorrupted) as refused:
        trainer.send_weights()
    assert re.search(rf"bucket {corrupt + 1} of 3 \({'abc'[corrupt]}\).*nothing was loaded", str(refused.value))
    assert worker.model.load_weights.loaded == [] and worker.rolled_back == 1 and wire.queue.empty()
    wire.corrupt = None  # the next update, intact: the group stayed aligned, and all of it is loaded
    trainer.send_weights()
    assert worker.model.load_weights.loaded == ["a", "b", "c"] and worker.rolled_back == 1
    assert worker.received_checksums == trainer.sent_checksums and len(trainer.sent_checksums) == 3


def test_every_learner_rank_walks_the_source_so_zero3_gathers_line_up():
    source = _Source()
    bystander = _trainer(None, _Wire(), source, is_sender=False)
    bystander.send_weights()
    assert source.walked == 1  # a rank that sends nothing still joins each gather, in order


def test_an_nccl_broadcast_that_never_completes_fails_after_its_deadline():
    work = engine_mod.DeadlineWork(lambda: False, 0.05, "an NCCL broadcast of 64 bytes")
    with pytest.raises(TimeoutError) as late:
        work.wait()
    assert str(late.value) == "weight sync: an NCCL broadcast of 64 bytes did not complete within 0.05 s"
