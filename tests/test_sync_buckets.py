"""Buckets for weight sync: round trip, planning, a checksum that notices any changed byte, and a
receiver that loads nothing of an update whose bytes differ from the sender's."""

from __future__ import annotations

import re

import pytest
import torch

from r1reward.sync.buckets import (
    DEFAULT_BUCKET_BYTES,
    VIEW_BYTES,
    Buffers,
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


def test_plan_sends_a_large_tensor_alone_at_once_and_packs_the_small_ones_around_it():
    """A tensor of VIEW_BYTES or more, or larger than a bucket, needs no copy: it is sent alone, as soon as
    the source yields it; the small ones before and after it share a bucket, sent once full."""
    tensors = {
        "s1": torch.zeros(10),
        "big": torch.zeros(VIEW_BYTES // 4),
        "s2": torch.zeros(10),
        "over": torch.zeros(30),
        "s3": torch.zeros(10),
        "s4": torch.zeros(10),
    }
    buckets = plan_buckets(_metas(tensors), bucket_bytes=100)
    assert [[m.name for m in b] for b in buckets] == [["big"], ["over"], ["s1", "s2"], ["s3", "s4"]]


def test_a_large_tensor_is_broadcast_from_its_own_memory_and_the_loader_gets_the_update_at_once():
    tensors = {"s1": torch.randn(10), "big": torch.randn(VIEW_BYTES // 4), "s2": torch.randn(10)}
    metas = _metas(tensors)
    wire, calls = _Wire(), []
    sent_ptrs = []

    def send(tensor):
        sent_ptrs.append(tensor.data_ptr())
        return wire.send(tensor)

    send_buckets(iter(tensors.items()), metas, DEFAULT_BUCKET_BYTES, send)
    receive_buckets(metas, DEFAULT_BUCKET_BYTES, wire.receive, lambda pairs: calls.append(list(pairs)))
    assert sent_ptrs[0] == tensors["big"].data_ptr()  # not a copy
    assert len(calls) == 1 and [n for n, _ in calls[0]] == ["s1", "big", "s2"]  # the source's order
    assert all(torch.equal(t, tensors[n]) for n, t in calls[0])


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


@pytest.mark.parametrize("verify", [True, False])
def test_send_and_receive_buckets_round_trip_bit_exact(verify):
    tensors = {f"t{i}": torch.randn(i + 1, 7) for i in range(6)} | {"big": torch.randn(40, 40)}
    # int64s behind 14 bytes of bf16: off their alignment in the staging area, so loaded as a copy
    tensors |= {"half": torch.randn(7).to(torch.bfloat16), "ids": torch.arange(5)}
    metas = _metas(tensors)
    wire, loaded = _Wire(), {}
    sent = send_buckets(iter(tensors.items()), metas, 300, wire.send, verify=verify)
    got = receive_buckets(metas, 300, wire.receive, loaded.update, verify=verify)
    assert sent == got and len(got) == (len(plan_buckets(metas, 300)) if verify else 0) and wire.queue == []
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[n], t) for n, t in tensors.items())


class _Recorder:
    """A loader that records every (name, tensor) it is handed, as copies."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, torch.Tensor]] = []

    def __call__(self, pairs: list[tuple[str, torch.Tensor]]) -> None:
        self.loaded += [(name, tensor.clone()) for name, tensor in pairs]


@pytest.mark.parametrize("corrupt", [0, 1, 2])
def test_a_corrupted_bucket_is_refused_before_any_bucket_reaches_the_loader(corrupt):
    tensors = {"a": torch.randn(16), "b": torch.randn(16), "c": torch.randn(16)}
    metas = _metas(tensors)
    assert len(plan_buckets(metas, 64)) == 3
    wire, recorder = _Wire(corrupt_bucket=corrupt), _Recorder()
    send_buckets(iter(tensors.items()), metas, 64, wire.send)
    with pytest.raises(SyncCorrupted) as refused:
        receive_buckets(metas, 64, wire.receive, recorder)
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
    engine.model, engine.device, engine.received_checksums, engine.buffers = _Model(), "cpu", [], Buffers()
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


class _LoggingWire(_Wire):
    """The wire, recording on the receiver's side when each broadcast is posted and when it is waited."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def receive(self, buffer: torch.Tensor):
        index = sum(e.startswith("post") for e in self.events)
        self.events.append(f"post {index}")
        super().receive(buffer)
        wire = self

        class Posted:
            def wait(self) -> None:
                wire.events.append(f"wait {index}")

        return Posted()


@pytest.mark.parametrize("all_large", [False, True])
def test_one_broadcast_per_bucket_all_asked_for_before_the_receivers_first_wait(all_large):
    """No round trip per bucket: the transport can move bucket after bucket without waiting for this
    side to ask for the next one, and the receiver checks each bucket while the later ones arrive. The
    checksums ride behind the last bucket of small tensors (sent last); only a model without small
    tensors, whose buckets are all sent from the tensors' own memory, needs a message for them."""
    if all_large:
        tensors = {"big1": torch.randn(VIEW_BYTES // 4), "big2": torch.randn(VIEW_BYTES // 4)}
    else:
        tensors = {"a": torch.randn(16), "big": torch.randn(VIEW_BYTES // 4), "b": torch.randn(16)}
    metas = _metas(tensors)
    buckets = len(plan_buckets(metas, 128))
    wire, sent = _LoggingWire(), []
    send_buckets(iter(tensors.items()), metas, 128, lambda t: sent.append(t) or wire.send(t))
    receive_buckets(metas, 128, wire.receive, _Recorder())
    posts = [e for e in wire.events if e.startswith("post")]
    assert buckets == 2 and len(sent) == len(posts) == buckets + all_large and wire.queue == []
    assert wire.events[: len(posts)] == posts  # every receive posted before the first wait


class _Keeper:
    """A loader that keeps what it is handed (not copies), to see where the tensors live."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, torch.Tensor]] = []

    def __call__(self, pairs: list[tuple[str, torch.Tensor]]) -> None:
        self.loaded += pairs


def test_updates_reuse_both_sides_buffers_and_load_views_into_the_received_bytes():
    """A fresh CPU buffer is faulted in page by page on its first write, which costs more than the copy
    into it: the sender packs into two buffers it keeps, the receiver stages into one area it keeps,
    and the loader gets views into that area (a bf16 bucket of odd length must not misalign the next)."""
    tensors = {
        "odd": torch.randn(25).to(torch.bfloat16),
        "f1": torch.randn(8),
        "f2": torch.randn(8),
        "f3": torch.randn(8),
        "f4": torch.randn(8),
        "f5": torch.randn(8),
        "f6": torch.randn(8),
    }
    metas = _metas(tensors)
    assert [len(b) for b in plan_buckets(metas, 64)] == [1, 2, 2, 2]
    send_side, receive_side = Buffers(), Buffers()
    seen_sent, seen_loaded = [], []
    for _ in range(3):  # the first update sizes the buffers (the last bucket's has the checksums behind it)
        wire, keeper = _Wire(), _Keeper()
        sent_ptrs = []

        def send(tensor, wire=wire, sent_ptrs=sent_ptrs):
            sent_ptrs.append(tensor.data_ptr())
            return wire.send(tensor)

        send_buckets(iter(tensors.items()), metas, 64, send, buffers=send_side)
        receive_buckets(metas, 64, wire.receive, keeper, buffers=receive_side)
        assert [n for n, _ in keeper.loaded] == list(tensors)
        assert all(torch.equal(t, tensors[n]) for n, t in keeper.loaded)
        storages = {t.untyped_storage().data_ptr() for _, t in keeper.loaded}
        assert len(storages) == 1  # every tensor loaded is a view into the one staging area
        seen_sent.append(sent_ptrs[1:4])  # the three packed buckets (the first is a view of "odd")
        seen_loaded.append([t.data_ptr() for _, t in keeper.loaded])
    assert len(set(seen_sent[1])) == 2  # packed into two buffers, alternately
    assert seen_sent[2] == seen_sent[1] and seen_loaded[2] == seen_loaded[1] == seen_loaded[0]


class _LateWire(_Wire):
    """A transport that reads the sender's bytes as late as it may: when the broadcast is waited on."""

    def send(self, tensor: torch.Tensor):
        wire, slot = self, len(self.queue)
        self.queue.append(None)

        class Late:
            def wait(self) -> None:
                wire.queue[slot] = tensor.clone()

        return Late()


def test_a_pack_buffer_is_refilled_only_after_its_broadcast_completed():
    tensors = {f"t{i}": torch.randn(8) for i in range(10)}
    metas = _metas(tensors)
    wire, loaded = _LateWire(), {}
    sent = send_buckets(iter(tensors.items()), metas, 64, wire.send, buffers=Buffers())
    assert len(plan_buckets(metas, 64)) == 5 and None not in wire.queue
    got = receive_buckets(metas, 64, wire.receive, loaded.update)
    assert got == sent and all(torch.equal(loaded[n], t) for n, t in tensors.items())


def test_the_receiver_reuses_its_views_for_the_same_update_and_makes_new_ones_for_another():
    """Making a view per tensor costs more than a small model's bytes take to arrive: the receiver keeps
    an update's views with its staging area, and still loads each update's own bytes through them."""
    first = {"odd": torch.randn(25).to(torch.bfloat16), "a": torch.randn(8), "b": torch.randn(8)}
    metas, receive_side = _metas(first), Buffers()

    def update(tensors, metas):
        wire, keeper = _Wire(), _Keeper()
        send_buckets(iter(tensors.items()), metas, 64, wire.send)
        receive_buckets(metas, 64, wire.receive, keeper, buffers=receive_side)
        assert [n for n, _ in keeper.loaded] == list(tensors)
        assert all(torch.equal(t, tensors[n]) for n, t in keeper.loaded)
        return dict(keeper.loaded)

    loaded = update(first, metas)
    second = {n: t + 1 for n, t in first.items()}
    again = update(second, metas)
    assert all(again[n] is loaded[n] for n in ("a", "b"))  # the same views, now over the new bytes
    reshaped = {**second, "b": torch.randn(2, 4)}
    other = update(reshaped, _metas(reshaped))
    assert other["b"].shape == (2, 4) and other["b"] is not again["b"]
