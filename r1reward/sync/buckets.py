"""Pack named tensors into flat byte buckets, unpack them, and checksum them.

Weights travel in a few large collectives instead of one per parameter. The checksum is computed on
the raw bytes, so the sender and every receiver can prove a transfer bit-identical. The receiver
stages every bucket, compares every checksum, and only then loads: an update whose bytes differ is
refused whole, before any of it reaches the model (the price: the receiver holds one copy of the
weights sent).

The transfer runs at the transport's pace when nothing waits on this side: a large tensor travels from
its own memory (only the small ones are copied into buckets), the checksums ride behind the last
bucket's bytes (one broadcast per bucket, no more), the receiver asks for every bucket before it waits
for the first, each side hashes a bucket while the transport moves the others, and both keep their
buffers from one update to the next (`Buffers`), the receiver its views into them too (`Layout`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

import torch
import xxhash

DEFAULT_BUCKET_BYTES = 64 * 1024 * 1024
# A tensor this large is sent alone, from its own memory: the copy into a bucket that this saves costs
# about as much as the broadcast it adds, and grows with the tensor while the broadcast's cost does not.
VIEW_BYTES = 1024 * 1024
# Buckets the sender has in flight at most: enough that the transport has the next ones queued while
# this side waits to be scheduled again, few enough that a ZeRO-3 sender holds few gathered tensors.
IN_FLIGHT = 4
# Each bucket starts this aligned in the receiver's staging area, so that a tensor at its start can be
# viewed as any dtype without a copy.
STAGING_ALIGN = 64
CHECKSUM_BYTES = 8  # one int64 per bucket (checksum)


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32"
    shape: tuple[int, ...]

    @cached_property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @cached_property
    def nbytes(self) -> int:
        numel = 1
        for d in self.shape:
            numel *= d
        return numel * self.torch_dtype.itemsize


def _sent_alone(meta: TensorMeta, bucket_bytes: int) -> bool:
    return meta.nbytes >= VIEW_BYTES or meta.nbytes > bucket_bytes


def plan_buckets(metas: list[TensorMeta], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[TensorMeta]]:
    """The buckets in the order they are sent, for a source that yields `metas` in order. A tensor of
    VIEW_BYTES or more, or larger than a bucket, is a bucket of its own, sent as soon as it is yielded;
    the smaller ones fill buckets of up to bucket_bytes in order, each sent once the next tensor would
    not fit (the last at the end)."""
    buckets: list[list[TensorMeta]] = []
    filling: list[TensorMeta] = []
    size = 0
    for meta in metas:
        if _sent_alone(meta, bucket_bytes):
            buckets.append([meta])
            continue
        if filling and size + meta.nbytes > bucket_bytes:
            buckets.append(filling)
            filling, size = [], 0
        filling.append(meta)
        size += meta.nbytes
    if filling:
        buckets.append(filling)
    return buckets


def checksums_trailer(plan: list[list[TensorMeta]], bucket_bytes: int, verify: bool) -> int:
    """How many bytes of checksums follow the last bucket's (8 per bucket), or 0 when they travel in a
    message of their own: when unverified, or when the last bucket is a tensor sent from its own memory
    (which has no room behind it; the last bucket holds small tensors whenever the model has any)."""
    if not verify or not plan or (len(plan[-1]) == 1 and _sent_alone(plan[-1][0], bucket_bytes)):
        return 0
    return CHECKSUM_BYTES * len(plan)


def pack(tensors: Iterable[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """The raw bytes of the tensors as one uint8 tensor, copied into `out` (its first bytes) when given.
    Without `out`, a single contiguous tensor is returned as a byte view, not copied: a large tensor is
    sent from its own memory."""
    views = [t.detach().contiguous().reshape(-1).view(torch.uint8) for t in tensors]
    if out is not None:
        return torch.cat(views, out=out[: sum(v.numel() for v in views)])
    return views[0] if len(views) == 1 else torch.cat(views)


class Buffers:
    """Flat byte buffers kept from one update to the next, by name. A fresh CPU buffer of a bucket's size
    is mapped anew and faulted in page by page on its first write, which costs more than the copy into
    it; a kept one is already resident. The price is the memory, held between updates."""

    def __init__(self) -> None:
        self._held: dict[str, torch.Tensor] = {}
        # The receiver's last update's layout: the same update again reuses its views into the staging
        # area instead of making them anew; another update replaces it (and frees its views).
        self.layout: Layout | None = None

    def take(self, name: str, nbytes: int, device: torch.device | str) -> torch.Tensor:
        """The first `nbytes` of buffer `name`, grown (or moved to `device`) when it does not fit."""
        held = self._held.get(name)
        if held is None or held.numel() < nbytes or held.device != torch.device(device):
            self._held.pop(name, None)  # free the old one before allocating its replacement
            held = self._held[name] = torch.empty(nbytes, dtype=torch.uint8, device=device)
        return held[:nbytes]


def carve(flat: torch.Tensor, metas: list[TensorMeta]) -> list[tuple[TensorMeta, torch.Tensor]]:
    """Each tensor's bytes in `flat`, as views; reads none of them, so it may run before they arrive."""
    sizes = [m.nbytes for m in metas]
    if sum(sizes) != flat.numel():
        raise RuntimeError(f"bucket holds {flat.numel()} bytes but its tensors need {sum(sizes)}")
    return list(zip(metas, flat.split(sizes)))


def aligned(meta: TensorMeta, chunk: torch.Tensor) -> bool:
    return chunk.data_ptr() % meta.torch_dtype.itemsize == 0


def typed(meta: TensorMeta, chunk: torch.Tensor) -> torch.Tensor:
    """The tensor in `chunk`: a view, or a copy when the chunk does not start on an element boundary."""
    if not aligned(meta, chunk):
        chunk = chunk.clone()
    return chunk.view(meta.torch_dtype).view(meta.shape)


def unpack(flat: torch.Tensor, metas: list[TensorMeta]) -> Iterator[tuple[str, torch.Tensor]]:
    for meta, chunk in carve(flat, metas):
        yield meta.name, typed(meta, chunk)


def checksum(flat: torch.Tensor) -> int:
    """The bucket's 64-bit XXH3 as a signed int64 (so a gloo tensor can carry it).

    A non-cryptographic hash: it guards against corruption on the wire or in memory, not against a
    peer that forges bytes (the group's peers are the run's own processes). XXH3-64 runs at memory
    speed on the CPU (faster than its 128-bit variant, and far faster than SHA-256), and both sides
    hash every byte on the sync's critical path; a GPU bucket is copied to the host for it."""
    digest = xxhash.xxh3_64_intdigest(flat.detach().cpu().contiguous().numpy())
    return digest - (1 << 64) if digest >= 1 << 63 else digest


class SyncCorrupted(RuntimeError):
    """A received bucket differs from what the sender sent; raised before anything was loaded."""


class Work(Protocol):
    def wait(self) -> Any: ...


# Starts a broadcast of the tensor from rank 0 (the sender) and returns its handle (gloo's `Work`).
Broadcast = Callable[[torch.Tensor], Work]


def send_buckets(
    named: Iterator[tuple[str, torch.Tensor]],
    metas: list[TensorMeta],
    bucket_bytes: int,
    broadcast: Broadcast,
    verify: bool = True,
    device: torch.device | str = "cpu",
    buffers: Buffers | None = None,
) -> list[int]:
    """The sender's half: `named` (in `metas` order) sent as plan_buckets says, on `device` (the
    transport's), with every bucket's checksum (see checksums_trailer). Each bucket is hashed while the
    transport moves it, and the next ones are readied meanwhile: at most IN_FLIGHT are in flight, and
    buckets of small tensors are copied into two buffers used in turn (kept in `buffers` for the next
    update), each refilled only once its broadcast has completed. Returns the checksums.
    `verify=False` (both sides, benchmarks only) leaves the checksums out, to measure what they cost."""
    buffers = buffers if buffers is not None else Buffers()
    expected = iter(metas)
    waiting: dict[str, torch.Tensor] = {}  # small tensors yielded, their bucket not yet full

    def tensor_of(meta: TensorMeta) -> torch.Tensor:
        while meta.name not in waiting:
            name, tensor = next(named)
            want = next(expected).name
            if name != want:
                raise RuntimeError(f"weight source yielded {name!r}, expected {want!r}")
            waiting[name] = tensor.detach().to(device)
        return waiting.pop(meta.name)

    plan = plan_buckets(metas, bucket_bytes)
    trailer = checksums_trailer(plan, bucket_bytes, verify)
    sums: list[int] = []
    # Each sent bucket (kept alive until its wait), with the pack buffer it was copied into, if any.
    in_flight: list[tuple[torch.Tensor, Work, str | None]] = []
    packed = 0
    for i, bucket in enumerate(plan):
        tensors = [tensor_of(meta) for meta in bucket]
        carries = trailer and i == len(plan) - 1
        slot = f"pack{packed % 2}" if len(tensors) > 1 or carries else None
        while len(in_flight) >= IN_FLIGHT or (slot and any(s == slot for _, _, s in in_flight)):
            in_flight.pop(0)[1].wait()
        out = None
        if slot:
            nbytes = sum(m.nbytes for m in bucket)
            out = buffers.take(slot, nbytes + (trailer if carries else 0), device)
            packed += 1
        flat = pack(tensors, out)
        if carries:  # hashed before it goes: its checksum rides behind it with all the others
            sums.append(checksum(flat))
            out[nbytes:].copy_(torch.tensor(sums, dtype=torch.int64).view(torch.uint8))
            in_flight.append((out, broadcast(out), slot))
            continue
        in_flight.append((flat, broadcast(flat), slot))
        if verify:
            sums.append(checksum(flat))
    for _, work, _ in in_flight:
        work.wait()
    if verify and not trailer:
        broadcast(torch.tensor(sums, dtype=torch.int64, device=device)).wait()
    return sums


class Layout:
    """Where each bucket of an update lies in the receiver's staging area, and the views the loader
    gets into it (made once per staging area: a kept area is the same memory from update to update)."""

    def __init__(self, metas: list[TensorMeta], bucket_bytes: int, verify: bool) -> None:
        self.key = layout_key(metas, bucket_bytes, verify)
        self.plan = plan_buckets(metas, bucket_bytes)
        self.trailer = checksums_trailer(self.plan, bucket_bytes, verify)
        self.names = [m.name for m in metas]
        self.offsets: list[tuple[int, int]] = []
        end = 0
        for bucket in self.plan:
            start = -(-end // STAGING_ALIGN) * STAGING_ALIGN
            end = start + sum(m.nbytes for m in bucket)
            self.offsets.append((start, end))
        self.end = end
        # Made by views() for the area they are into (`_area`).
        self._area: tuple[int, torch.device] | None = None
        self.flats: list[torch.Tensor] = []
        self.tensor_views: dict[str, torch.Tensor] = {}
        self.misaligned: list[tuple[TensorMeta, torch.Tensor]] = []

    def views(self, area: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor], list]:
        """Each bucket's bytes in `area`, each tensor's view into them, and the (meta, chunk) pairs
        that need a copy to be viewed."""
        if self._area != (area.data_ptr(), area.device):
            self.flats = [area[start:stop] for start, stop in self.offsets]
            chunks = [pair for flat, bucket in zip(self.flats, self.plan) for pair in carve(flat, bucket)]
            self.tensor_views = {meta.name: typed(meta, chunk) for meta, chunk in chunks if aligned(meta, chunk)}
            self.misaligned = [(meta, chunk) for meta, chunk in chunks if not aligned(meta, chunk)]
            self._area = (area.data_ptr(), area.device)
        return self.flats, self.tensor_views, self.misaligned


def layout_key(metas: list[TensorMeta], bucket_bytes: int, verify: bool) -> tuple:
    return tuple(metas), bucket_bytes, verify


@dataclass
class StagedUpdate:
    """Every bucket of an update, received and verified, not yet loaded."""

    views: dict[str, torch.Tensor]  # each tensor's view into the staging area
    misaligned: list[tuple[TensorMeta, torch.Tensor]]  # the chunks that need a copy to be viewed
    checksums: list[int]
    names: list[str]  # the source's order

    def load(self, load: Callable[[list[tuple[str, torch.Tensor]]], None]) -> None:
        """Hands the whole update to `load` in one call, as (name, tensor) in the source's order."""
        views = self.views | {meta.name: typed(meta, chunk) for meta, chunk in self.misaligned}
        load([(name, views[name]) for name in self.names])


def stage_buckets(
    metas: list[TensorMeta],
    bucket_bytes: int,
    broadcast: Broadcast,
    device: torch.device | str = "cpu",
    verify: bool = True,
    buffers: Buffers | None = None,
) -> StagedUpdate:
    """The receiver's half, up to the load: every bucket received into one staging area (kept in
    `buffers` for the next update) and checksummed, then compared with the sender's checksums. Every
    receive is posted before the first wait, so the transport moves bucket after bucket while this side
    hashes the ones that have arrived. A bucket that differs raises SyncCorrupted after the whole update
    was received (so the group's collectives stay aligned for the next update) and before any of it was
    loaded."""
    kept = buffers if buffers is not None else Buffers()
    if kept.layout is None or kept.layout.key != layout_key(metas, bucket_bytes, verify):
        kept.layout = Layout(metas, bucket_bytes, verify)
    layout = kept.layout
    plan, trailer, offsets, end = layout.plan, layout.trailer, layout.offsets, layout.end
    area = kept.take("staging", end + trailer, device)
    works = [
        broadcast(area[start : stop + (trailer if i == len(plan) - 1 else 0)])
        for i, (start, stop) in enumerate(offsets)
    ]
    sent = torch.empty(len(plan), dtype=torch.int64, device=device)
    sent_work = broadcast(sent) if verify and not trailer else None
    flats, views, misaligned = layout.views(area)  # made while the bytes are on the way
    got: list[int] = []
    for flat, work in zip(flats, works):
        work.wait()
        if verify:
            got.append(checksum(flat))
    if verify:
        if sent_work is not None:
            sent_work.wait()
        else:  # behind the last bucket, at any byte offset: copied out before viewing it as int64
            sent = area[end : end + trailer].clone().view(torch.int64)
        bad = [i for i, (theirs, mine) in enumerate(zip(sent.cpu().tolist(), got)) if theirs != mine]
        if bad:
            names = ", ".join(m.name for m in plan[bad[0]][:3]) + (", ..." if len(plan[bad[0]]) > 3 else "")
            raise SyncCorrupted(
                f"weight sync corrupted: bucket {bad[0] + 1} of {len(plan)} ({names}) differs from the "
                f"sender's checksum ({len(bad)} bucket(s) in all); nothing was loaded"
            )
    return StagedUpdate(views, misaligned, got, layout.names)


def receive_buckets(
    metas: list[TensorMeta],
    bucket_bytes: int,
    broadcast: Broadcast,
    load: Callable[[list[tuple[str, torch.Tensor]]], None],
    device: torch.device | str = "cpu",
    verify: bool = True,
    buffers: Buffers | None = None,
) -> list[int]:
    """Stage, compare, then load (see stage_buckets): `load` sees an update only once all of it is
    verified, as views into the staging area. Returns the checksums."""
    update = stage_buckets(metas, bucket_bytes, broadcast, device, verify, buffers)
    update.load(load)
    return update.checksums
