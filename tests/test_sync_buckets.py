"""Buckets for weight sync: round trip, planning, and a checksum that notices any changed byte."""

from __future__ import annotations

import torch

from r1reward.sync.buckets import TensorMeta, checksum, pack, plan_buckets, unpack


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
