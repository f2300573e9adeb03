"""Waiting on remote calls with a deadline, and failing with one line that names who was waited for.

`ray.get` on a list returns only when every call has ended: a rank that died is reported after its
peers return, and a peer blocked in a collective with the dead rank may never return. `wait_all` wakes
on the first call that ends and raises at once if it failed, naming that call's role (e.g. "learner
rank 1"); past the deadline it names the roles still running.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from r1reward.errors import UserError


class WaitError(UserError):
    """A remote call failed or did not end in time; the message is one line naming the role and call."""


def error_line(error: BaseException) -> str:
    """The first line of what went wrong: a task error's own exception, not Ray's traceback around it."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException) and cause is not error:
        return error_line(cause)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def wait_all(refs: Sequence[Any], roles: Sequence[str], call: str, timeout_s: float) -> list[Any]:
    """The results of `refs` in order; `roles[i]` names who runs `refs[i]` (e.g. "rollout worker 0")."""
    import ray

    if len(refs) != len(roles):
        raise ValueError(f"{len(refs)} calls but {len(roles)} role names")
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    deadline = time.monotonic() + timeout_s
    while pending:
        left = deadline - time.monotonic()
        if left <= 0:
            late = ", ".join(roles[index[ref]] for ref in pending)
            raise WaitError(f"{call}: {late} did not answer within {timeout_s:.0f} s")
        done, pending = ray.wait(pending, num_returns=1, timeout=left)
        for ref in done:
            try:
                ray.get(ref, timeout=0)
            except (ray.exceptions.RayError, Exception) as error:  # noqa: BLE001 - named and re-raised
                raise WaitError(f"{call}: {roles[index[ref]]} failed: {error_line(error)}") from error
    return ray.get(list(refs), timeout=max(1.0, deadline - time.monotonic()))
