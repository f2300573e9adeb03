"""What the role groups share when they fan a call out to their actors: splitting the work and waiting
for the answers with a deadline, failing with one line that names the role and the call."""

from __future__ import annotations

from typing import Any, Sequence, TypeVar

from r1reward.errors import UserError

T = TypeVar("T")


class ActorTimeout(UserError):
    """A remote call did not answer in time; the message names the role and the call."""


def split(items: Sequence[T], parts: int) -> list[list[T]]:
    """Contiguous, near-equal parts (the last may be shorter): how samples are shared by learner ranks."""
    size = -(-len(items) // parts)
    return [list(items[i * size:(i + 1) * size]) for i in range(parts)]


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


def wait_all(refs: list[Any], timeout_s: float, what: str) -> list[Any]:
    """`ray.get(refs)` with a deadline; `what` names the role and the call ("rollout workers: generate")."""
    import ray

    try:
        return ray.get(refs, timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise ActorTimeout(f"{what}: no answer within {timeout_s:g} s (see the actor logs)") from None
