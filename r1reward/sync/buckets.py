"""Pack named tensors into flat byte buckets, unpack them, and checksum them.

Weights travel in a few large collectives instead of one per parameter. The checksum is computed on
the raw bytes, so the sender and every receiver can prove a transfer bit-identical. The receiver
stages every bucket, compares every checksum, and only then loads: an update whose bytes differ is
refused whole, before any of it reaches the model (the price: the receiver holds one copy of the
weights sent while the transfer runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import xxhash

DEFAULT_BUCKET_BYTES = 64 * 1024 * 1024


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


def pack(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """The raw bytes of the tensors as one uint8 tensor. A single contiguous tensor is returned as a byte
    view, not copied: with 7B shapes most buckets hold one tensor (an MLP matrix is 2x the default bucket),
    and a copy of it would cost more than its checksum."""
    views = [t.detach().contiguous().reshape(-1).view(torch.uint8) for t in tensors]
    return views[0] if len(views) == 1 else torch.cat(views)


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
    overlap: bool = True,
    verify: bool = True,
    device: torch.device | str = "cpu",
) -> list[tuple[int, int]]:
    """The sender's half: `named` (in `metas` order) packed into buckets on `device` (the transport's)
    and broadcast, then one tensor of the buckets' checksums. With `overlap` each bucket's checksum and
    the next bucket's packing run while the previous broadcast is on the wire (gloo moves the bytes in
    its own threads); at most two buckets are in flight. Returns the checksums. `verify=False` (both
    sides, benchmarks only) leaves the checksums out, to measure what they cost."""
    sums: list[tuple[int, int]] = []
    in_flight: list[tuple[torch.Tensor, Work]] = []  # keeps each sent bucket alive until its wait
    for bucket in plan_buckets(metas, bucket_bytes):
        tensors = []
        for meta in bucket:
            name, tensor = next(named)
            if name != meta.name:
                raise RuntimeError(f"weight source yielded {name!r}, expected {meta.name!r}")
            tensors.append(tensor.detach().to(device))
        flat = pack(tensors)
        if overlap:
            work = broadcast(flat)
            if verify:
                sums.append(checksum(flat))
            in_flight.append((flat, work))
            if len(in_flight) > 1:
                in_flight.pop(0)[1].wait()
        else:
            if verify:
                sums.append(checksum(flat))
            broadcast(flat).wait()
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
    overlap: bool = True,
    verify: bool = True,
) -> StagedUpdate:
    """The receiver's half, up to the load: every bucket received and checksummed, then the sender's
    checksums received and compared. A bucket that differs raises SyncCorrupted after the whole update
    was received (so the group's collectives stay aligned for the next update) and before any of it
    was loaded. With `overlap` the next bucket is already being received while this one is
    checksummed."""
    plan = plan_buckets(metas, bucket_bytes)

    def post(bucket: list[TensorMeta]) -> tuple[torch.Tensor, Work]:
        flat = torch.empty(sum(m.nbytes for m in bucket), dtype=torch.uint8, device=device)
        return flat, broadcast(flat)

    staged: list[tuple[torch.Tensor, list[TensorMeta]]] = []
    got: list[tuple[int, int]] = []
    pending = post(plan[0]) if plan else None
    for i, bucket in enumerate(plan):
        flat, work = pending
        work.wait()
        later = plan[i + 1] if i + 1 < len(plan) else None
        if overlap and later is not None:
            pending = post(later)
        if verify:
            got.append(checksum(flat))
        staged.append((flat, bucket))
        if not overlap and later is not None:
            pending = post(later)
    if verify:
        sent = torch.empty((len(got), 2), dtype=torch.int64, device=device)
        broadcast(sent).wait()
        bad = [i for i, (row, mine) in enumerate(zip(sent.cpu().tolist(), got)) if tuple(row) != mine]
        if bad:
            names = ", ".join(m.name for m in plan[bad[0]][:3]) + (", ..." if len(plan[bad[0]]) > 3 else "")
            raise SyncCorrupted(
                f"weight sync corrupted: bucket {bad[0] + 1} of {len(plan)} ({names}) differs from the "
                f"sender's checksum ({len(bad)} bucket(s) in all); nothing was loaded"
            )
    return StagedUpdate(staged, got)


def receive_buckets(
    metas: list[TensorMeta],
    bucket_bytes: int,
    broadcast: Broadcast,
    load: Callable[[list[tuple[str, torch.Tensor]]], None],
    device: torch.device | str = "cpu",
    overlap: bool = True,
    verify: bool = True,
) -> list[tuple[int, int]]:
    """Stage, compare, then load (see stage_buckets): `load` sees an update only once all of it is
    verified. Returns the checksums."""
    update = stage_buckets(metas, bucket_bytes, broadcast, device, overlap, verify)
    update.load(load)
    return update.checksums
