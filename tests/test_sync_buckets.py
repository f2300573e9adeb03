"""Buckets for weight sync: round trip, planning, a checksum that notices any changed byte, and a
receiver that loads nothing of an update whose bytes differ from the sender's."""

from __future__ import annotations

import re

import pytest
import torch

from r1reward.sync.buckets import (
    SyncCorrupted,
    TensorMeta,
    checksum,
    pack,
    plan_buckets,
    receive_buckets,
    send_buckets,
    unpack,
)


def _metas(tensors: dict[str, torch.Tensor]) -> list[TensorMeta]:
    return [TensorMeta(n, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for n, t in tensors.items()]


def test_pack_unpack_round_trip_is_bit_exact_across_dtypes():
    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.arange(6).reshape(2, 3)}
    out = dict(unpack(pack(tensors.values()), _metas(tensors)))
    assert out.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert out[name].dtype == tensor.dtype and torch.equal(out[name], tensor)


def test_plan_keeps_order_and_gives_an_oversized_tensor_its_own_bucket():
    tensors = {"small1": torch.zeros(10), "big": torch.zeros(100), "small2": torch.zeros(10), "small3": torch.zeros(10)}
    buckets = plan_buckets(_metas(tensors), bucket_bytes=100)
    assert [[m.name for m in b] for b in buckets] == [["small1"], ["big"], ["small2", "small3"]]


def test_checksum_changes_with_any_byte_and_with_order():
    a, b = torch.randn(64), torch.randn(64)
    flat = pack([a, b])
    flipped = flat.clone()
    flipped[100] ^= 1
    assert checksum(flat) == checksum(pack([a.clone(), b.clone()]))
    assert checksum(flipped) != checksum(flat)
    assert checksum(pack([b, a])) != checksum(flat)


def test_pack_of_one_tensor_is_a_byte_view_not_a_copy():
    tensor = torch.randn(4, 8)
    flat = pack([tensor])
    assert flat.dtype == torch.uint8 and flat.numel() == tensor.numel() * 4
    assert flat.data_ptr() == tensor.data_ptr()


class _Wire:
    """An in-process stand-in for a gloo group of two: the sender's broadcasts are queued as copies and
    the receiver's fill its buffers from the queue. Work handles complete when waited, as gloo's do."""

    def __init__(self, corrupt_bucket: int | None = None) -> None:
        self.queue: list[torch.Tensor] = []
        self.corrupt_bucket = corrupt_bucket

    def send(self, tensor: torch.Tensor):
        sent = tensor.clone()
        if len(self.queue) == self.corrupt_bucket:
            sent[0] ^= 1
        self.queue.append(sent)
        return self

    def receive(self, buffer: torch.Tensor):
        buffer.copy_(self.queue.pop(0))
        return self

    def wait(self) -> None:
        pass


@pytest.mark.parametrize("overlap, verify", [(True, True), (False, True), (True, False)])
def test_send_and_receive_buckets_round_trip_bit_exact(overlap, verify):
    tensors = {f"t{i}": torch.randn(i + 1, 7) for i in range(6)} | {"big": torch.randn(40, 40)}
    metas = _metas(tensors)
    wire, loaded = _Wire(), {}
    sent = send_buckets(iter(tensors.items()), metas, 300, wire.send, overlap=overlap, verify=verify)
    got = receive_buckets(metas, 300, wire.receive, loaded.update, overlap=overlap, verify=verify)
    assert sent == got and len(got) == (len(plan_buckets(metas, 300)) if verify else 0) and wire.queue == []
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[n], t) for n, t in tensors.items())


class _Recorder:
    """A loader that records every (name, tensor) it is handed, as copies."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, torch.Tensor]] = []

    def __call__(self, pairs: list[tuple[str, torch.Tensor]]) -> None:
        self.loaded += [(name, tensor.clone()) for name, tensor in pairs]


@pytest.mark.parametrize("overlap", [True, False])
@pytest.mark.parametrize("corrupt", [0, 1, 2])
def test_a_corrupted_bucket_is_refused_before_any_bucket_reaches_the_loader(overlap, corrupt):
    tensors = {"a": torch.randn(16), "b": torch.randn(16), "c": torch.randn(16)}
    metas = _metas(tensors)
    assert len(plan_buckets(metas, 64)) == 3
    wire, recorder = _Wire(corrupt_bucket=corrupt), _Recorder()
    send_buckets(iter(tensors.items()), metas, 64, wire.send, overlap=overlap)
    with pytest.raises(SyncCorrupted) as refused:
        receive_buckets(metas, 64, wire.receive, recorder, overlap=overlap)
    assert [name for name, _ in recorder.loaded] == []
    assert wire.queue == []  # every bucket and the checksums were received: the group stays aligned
    assert re.search(rf"bucket {corrupt + 1} of 3 \({'abc'[corrupt]}\).*nothing was loaded", str(refused.value))


def test_an_intact_transfer_loads_what_was_sent_in_order():
    tensors = {"a": torch.randn(16), "b": torch.randn(4, 4), "c": torch.arange(8)}
    metas = _metas(tensors)
    wire, recorder = _Wire(), _Recorder()
    send_buckets(iter(tensors.items()), metas, 64, wire.send)
    receive_buckets(metas, 64, wire.receive, recorder)
    assert [name for name, _ in recorder.loaded] == ["a", "b", "c"]
    assert all(torch.equal(tensor, tensors[name]) for name, tensor in recorder.loaded)


def test_send_refuses_a_source_out_of_order():
    tensors = {"a": torch.randn(16), "b": torch.randn(16)}
    with pytest.raises(RuntimeError, match="expected 'a'"):
        send_buckets(iter(reversed(tensors.items())), _metas(tensors), 64, _Wire().send)


class _Model:
    def __init__(self) -> None:
        self.load_weights = _Recorder()


@pytest.mark.parametrize("corrupt", [None, 1])
def test_the_gloo_engine_rolls_a_refused_update_back_and_loads_an_intact_one(corrupt):
    """The worker side of the engine: a corrupted update never reaches the model and ends the reload
    session with nothing loaded (vLLM then puts every layer's previous tensors back)."""
    engine_mod = pytest.importorskip("r1reward.sync.engine")  # needs vLLM
    tensors = {"a": torch.randn(16), "b": torch.randn(16), "c": torch.randn(16)}
    metas = _metas(tensors)
    wire = _Wire(corrupt_bucket=corrupt)
    sent = send_buckets(iter(tensors.items()), metas, 64, wire.send)
    engine = engine_mod.GlooWeightTransferEngine.__new__(engine_mod.GlooWeightTransferEngine)
    engine.group = type("Group", (), {"device": torch.device("cpu"), "broadcast": staticmethod(wire.receive)})()
    engine.model, engine.device, engine.received_checksums = _Model(), "cpu", []
    finished: list[bool] = []
    engine.finish_weight_update = lambda: finished.append(True)
    info = engine_mod.BucketUpdateInfo(
        [m.name for m in metas], [m.dtype for m in metas], [list(m.shape) for m in metas], 64
    )
    if corrupt is None:
        engine.receive_weights(info)
        assert [n for n, _ in engine.model.load_weights.loaded] == ["a", "b", "c"] and finished == []
        assert engine.received_checksums == sent
    else:
        with pytest.raises(SyncCorrupted) as refused:
            engine.receive_weights(info)
        assert [name for name, _ in engine.model.load_weights.loaded] == []
        assert finished == [True] and engine.received_checksums == [] and "bucket 2 of 3" in str(refused.value)
