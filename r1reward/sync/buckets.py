"""Pack named tensors into flat byte buckets, unpack them, and checksum them.

Weights travel in a few large collectives instead of one per parameter. The checksum is computed on
the raw bytes, so the sender and every receiver can prove a transfer bit-identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

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
    """Concatenate the raw bytes of contiguous tensors into one uint8 tensor."""
    return torch.cat([t.detach().contiguous().reshape(-1).view(torch.uint8) for t in tensors])


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
    """The first 16 bytes of the bucket's SHA-256, as two int64 (so a gloo tensor can carry them).

    SHA-256 runs on the CPU (with the processor's SHA instructions: about 1.4 GB/s here, five times a
    position-weighted word sum in torch); the gloo path only ever holds CPU buckets."""
    digest = hashlib.sha256(flat.detach().cpu().contiguous().numpy()).digest()
    return (int.from_bytes(digest[:8], "little", signed=True), int.from_bytes(digest[8:16], "little", signed=True))
