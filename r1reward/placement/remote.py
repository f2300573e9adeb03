"""How the role groups share work among their actors: contiguous parts, in input order. (Waiting for
the answers, with a deadline and the role named, is `r1reward.waits.wait_all`.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """Contiguous, near-equal parts (the last may be shorter): how samples are shared by learner ranks."""
    size = -(-len(items) // parts)
    return [list(items[i * size : (i + 1) * size]) for i in range(parts)]


def split_even(items: Sequence[T], parts: int) -> list[list[T]]:
    """Contiguous parts whose sizes differ by at most one (the first ones are larger): how prompts are
    shared by rollout workers, so no worker idles while another has two extra prompts."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + size + (i < extra)
        out.append(list(items[start:stop]))
        start = stop
    return out
