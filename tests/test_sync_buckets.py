"""Buckets for weight sync: round trip, planning, and a checksum that notices any changed byte."""

from __future__ import annotations

import pytest
import torch

from r1reward.sync.buckets import TensorMeta, checksum, pack, plan_buckets, receive_buckets, send_buckets, unpack


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


def test_receive_buckets_refuses_a_corrupted_bucket_and_send_refuses_a_source_out_of_order():
    tensors = {"a": torch.randn(16), "b": torch.randn(16)}
    metas = _metas(tensors)
    wire = _Wire(corrupt_bucket=1)
    send_buckets(iter(tensors.items()), metas, 64, wire.send)
    with pytest.raises(RuntimeError, match="checksums differ"):
        receive_buckets(metas, 64, wire.receive, lambda pairs: None)
    with pytest.raises(RuntimeError, match="expected 'a'"):
        send_buckets(iter(reversed(tensors.items())), metas, 64, _Wire().send)
