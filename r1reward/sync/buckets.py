"""Pack named tensors into flat byte buckets, unpack them, and checksum them.

Weights travel in a few large collectives instead of one per parameter. The checksum is computed on
the raw bytes, so the sender and every receiver can prove a transfer bit-identical. The receiver
stages every bucket, compares every checksum, and only then loads: an update whose bytes differ is
refused whole, before any of it reaches the model (the price: the receiver holds one copy of the
weights sent).

The transfer runs at the transport's pace when nothing waits on this side: the receiver asks for every
bucket (and the checksums) before it waits for the first, each side hashes a bucket while the
transport moves the others, and both keep their buffers from one update to the next (`Buffers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import xxhash

DEFAULT_BUCKET_BYTES = 64 * 1024 * 1024
# Each bucket starts this aligned in the receiver's staging area, so that a tensor at its start can be
# viewed as any dtype without a copy.
STAGING_ALIGN = 64


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # torch dtype name without the "torch." prefix, e.g. "float32"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        numel = 1
        for d in self.shape:
            numel *= d
        return numel * torch.empty((), dtype=getattr(torch, self.dtype)).element_size()


def plan_buckets(metas: list[TensorMeta], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[TensorMeta]]:
    """Greedy split in order; a tensor larger than the bucket gets a bucket of its own."""
    buckets: list[list[TensorMeta]] = []
    size = 0
    for meta in metas:
        if buckets and size + meta.nbytes <= bucket_bytes:
            buckets[-1].append(meta)
            size += meta.nbytes
        else:
            buckets.append([meta])
            size = meta.nbytes
    return buckets


def pack(tensors: Iterable[torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """The raw bytes of the tensors as one uint8 tensor, written into `out` (its first bytes) when given.
    A single contiguous tensor is returned as a byte view, not copied: with 7B shapes most buckets hold
    one tensor (an MLP matrix is 2x the default bucket), and a copy of it would cost more than its
    checksum."""
    views = [t.detach().contiguous().reshape(-1).view(torch.uint8) for t in tensors]
    if len(views) == 1:
        return views[0]
    if out is None:
        return torch.cat(views)
    return torch.cat(views, out=out[: sum(v.numel() for v in views)])


class Buffers:
    """Flat byte buffers kept from one update to the next, by name. A fresh CPU buffer of a bucket's size
    is mapped anew and faulted in page by page on its first write, which costs more than the copy into
    it; a kept one is already resident. The price is the memory, held between updates."""

    def __init__(self) -> None:
        self._held: dict[str, torch.Tensor] = {}

    def take(self, name: str, nbytes: int, device: torch.device | str) -> torch.Tensor:
        """The first `nbytes` of buffer `name`, grown (or moved to `device`) when it does not fit."""
        held = self._held.get(name)
        if held is None or held.numel() < nbytes or held.device != torch.device(device):
            self._held.pop(name, None)  # free the old one before allocating its replacement
            held = self._held[name] = torch.empty(nbytes, dtype=torch.uint8, device=device)
        return held[:nbytes]

    def clear(self) -> None:
        self._held.clear()


def unpack(flat: torch.Tensor, metas: list[TensorMeta]) -> Iterator[tuple[str, torch.Tensor]]:
    offset = 0
    for meta in metas:
        dtype = getattr(torch, meta.dtype)
        chunk = flat[offset : offset + meta.nbytes]
        if offset % torch.empty((), dtype=dtype).element_size():
            chunk = chunk.clone()  # a byte view must start on an element boundary: copy a misaligned one
        offset += meta.nbytes
        yield meta.name, chunk.view(dtype).reshape(meta.shape)
    if offset != flat.numel():
        raise RuntimeError(f"bucket holds {flat.numel()} bytes but its tensors need {offset}")


def checksum(flat: torch.Tensor) -> tuple[int, int]:
    """The bucket's 128-bit XXH3 as two int64 (so a gloo tensor can carry them).

    A non-cryptographic hash: it guards against corruption on the wire or in memory, not against a
    peer that forges bytes (the group's peers are the run's own processes). XXH3 runs at memory
    speed on the CPU, about ten times SHA-256; a GPU bucket is copied to the host for it."""
    digest = xxhash.xxh3_128(flat.detach().cpu().contiguous().numpy()).digest()
    return (int.from_bytes(digest[:8], "little", signed=True), int.from_bytes(digest[8:16], "little", signed=True))


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
) -> list[tuple[int, int]]:
    """The sender's half: `named` (in `metas` order) packed into buckets on `device` (the transport's)
    and broadcast, then one tensor of the buckets' checksums. Each bucket is hashed while the transport
    moves it, and the next one is packed meanwhile: buckets that need a copy go into two buffers used in
    turn (kept in `buffers` for the next update), so at most two are in flight and a buffer is refilled
    only once its broadcast has completed. Returns the checksums. `verify=False` (both sides, benchmarks
    only) leaves the checksums out, to measure what they cost."""
    buffers = buffers if buffers is not None else Buffers()
    sums: list[tuple[int, int]] = []
    in_flight: list[tuple[torch.Tensor, Work]] = []  # keeps each sent bucket alive until its wait
    for i, bucket in enumerate(plan_buckets(metas, bucket_bytes)):
        tensors = []
        for meta in bucket:
            name, tensor = next(named)
            if name != meta.name:
                raise RuntimeError(f"weight source yielded {name!r}, expected {meta.name!r}")
            tensors.append(tensor.detach().to(device))
        if len(in_flight) == 2:
            in_flight.pop(0)[1].wait()  # the buffer this bucket is packed into is free again
        nbytes = sum(m.nbytes for m in bucket)
        flat = pack(tensors, buffers.take(f"pack{i % 2}", nbytes, device) if len(tensors) > 1 else None)
        in_flight.append((flat, broadcast(flat)))
        if verify:
            sums.append(checksum(flat))
    for _, work in in_flight:
        work.wait()
    if verify:
        broadcast(torch.tensor(sums, dtype=torch.int64, device=device).reshape(len(sums), 2)).wait()
    return sums


@dataclass
class StagedUpdate:
    """Every bucket of an update, received and verified, not yet loaded."""

    buckets: list[tuple[torch.Tensor, list[TensorMeta]]]
    checksums: list[tuple[int, int]]

    def load(self, load: Callable[[list[tuple[str, torch.Tensor]]], None]) -> None:
        """Hands each bucket to `load` as (name, tensor) views, in the sender's order."""
        for flat, bucket in self.buckets:
            load(list(unpack(flat, bucket)))


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
    plan = plan_buckets(metas, bucket_bytes)
    offsets, end = [], 0
    for bucket in plan:
        start = -(-end // STAGING_ALIGN) * STAGING_ALIGN
        end = start + sum(m.nbytes for m in bucket)
        offsets.append((start, end))
    area = (buffers if buffers is not None else Buffers()).take("staging", end, device)
    flats = [area[start:stop] for start, stop in offsets]
    works = [broadcast(flat) for flat in flats]
    sent = torch.empty((len(plan), 2), dtype=torch.int64, device=device)
    sent_work = broadcast(sent) if verify else None
    got: list[tuple[int, int]] = []
    for flat, work in zip(flats, works):
        work.wait()
        if verify:
            got.append(checksum(flat))
    if sent_work is not None:
        sent_work.wait()
        bad = [i for i, (row, mine) in enumerate(zip(sent.cpu().tolist(), got)) if tuple(row) != mine]
        if bad:
            names = ", ".join(m.name for m in plan[bad[0]][:3]) + (", ..." if len(plan[bad[0]]) > 3 else "")
            raise SyncCorrupted(
                f"weight sync corrupted: bucket {bad[0] + 1} of {len(plan)} ({names}) differs from the "
                f"sender's checksum ({len(bad)} bucket(s) in all); nothing was loaded"
            )
    return StagedUpdate(list(zip(flats, plan)), got)


def receive_buckets(
    metas: list[TensorMeta],
    bucket_bytes: int,
    broadcast: Broadcast,
    load: Callable[[list[tuple[str, torch.Tensor]]], None],
    device: torch.device | str = "cpu",
    verify: bool = True,
    buffers: Buffers | None = None,
) -> list[tuple[int, int]]:
    """Stage, compare, then load (see stage_buckets): `load` sees an update only once all of it is
    verified, as views into the staging area. Returns the checksums."""
    update = stage_buckets(metas, bucket_bytes, broadcast, device, verify, buffers)
    update.load(load)
    return update.checksums
