"""Faults for tests/test_faults.py, installed from outside the code they break.

    python tests/fault_injection.py [--nan-loss-step S] [--nan-advantages-step S] [--stall-sync-step S] train ...

runs `r1reward train ...` as `python -m r1reward` does, with `Trainer.train_step` wrapped. At its
(1-based) step, and for that step only, each fault wraps a method of a role group on the trainer:

- nan-loss: before the update, learner rank 0's next loss is made NaN (its process's loss function
  wrapped through Ray's `__ray_call__`); the update must be skipped on every rank;
- nan-advantages: one sample's advantages are NaN on their way to the learners; likewise;
- stall-sync: before the weight sync, rollout worker 0's next weight update hangs instead of
  receiving; the sync must fail within timeouts.weight_sync_s, naming the worker.

Nothing in r1reward/ knows about these faults.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # as `python -m r1reward` run from the repository root finds it
    sys.path.insert(0, str(ROOT))

from r1reward.waits import wait_all  # noqa: E402 - after the path above

STALL_S = 24 * 3600.0  # a stall outlasts any timeout: the run must end without it


@dataclass
class Faults:
    """The 1-based step of each fault; 0 = off."""

    nan_loss_step: int = 0
    nan_advantages_step: int = 0
    stall_sync_step: int = 0


# --- run inside an actor's process (sent by value through `__ray_call__`) --------------------------
def poison_next_loss(learner: Any) -> None:
    """In a learner rank's process: its next micro-batch loss is NaN, once (the forward is untouched)."""
    from r1reward.learner import worker

    original = worker.policy_loss_on_micro_batch

    def poisoned(*args: Any, **kwargs: Any):
        worker.policy_loss_on_micro_batch = original
        loss, stats = original(*args, **kwargs)
        return loss + float("nan"), stats

    worker.policy_loss_on_micro_batch = poisoned


def stall_next_update(rollout_worker: Any) -> None:
    """In a rollout worker's process: its next weight update hangs instead of receiving."""
    engine = rollout_worker.llm

    def stalled(*args: Any, **kwargs: Any) -> None:
        del engine.update_weights
        time.sleep(STALL_S)

    engine.update_weights = stalled


# --- run in the driver -----------------------------------------------------------------------------
def _call_in(actor: Any, role: str, fn: Callable[[Any], None], timeout_s: float) -> None:
    """`fn(actor instance)` in the actor's process, done before the step's next call goes out."""
    wait_all([actor.__ray_call__.remote(fn)], [role], f"fault injection ({fn.__name__})", timeout_s)


@contextmanager
def _wrapped(obj: Any, name: str, before: Callable[..., None]):
    """`obj.name` runs `before(*args)` first, until the context ends."""
    original = getattr(obj, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before(*args, **kwargs)
        return original(*args, **kwargs)

    own = name in vars(obj)  # an instance attribute (a fake's), else the class's method
    setattr(obj, name, wrapper)
    try:
        yield
    finally:
        if own:
            setattr(obj, name, original)
        else:
            delattr(obj, name)


def wrap_train_step(train_step: Callable[[Any, int], dict], faults: Faults) -> Callable[[Any, int], dict]:
    """`Trainer.train_step` with the faults of its step wrapped around the role groups' methods."""

    def faulty_train_step(trainer: Any, step: int) -> dict:
        timeout_s = trainer.config.timeouts.remote_call_s
        learners, rollout = trainer.learners, trainer.rollout

        def nan_loss(samples: list) -> None:
            _call_in(learners.ranks[0], learners.roles[0], poison_next_loss, timeout_s)

        def nan_advantages(samples: list) -> None:
            samples[0].advantages = [math.nan] * len(samples[0].advantages)

        def stall() -> None:
            _call_in(rollout.workers[0], rollout.roles[0], stall_next_update, timeout_s)

        with ExitStack() as stack:
            if step + 1 == faults.nan_loss_step:
                stack.enter_context(_wrapped(learners, "train", nan_loss))
            if step + 1 == faults.nan_advantages_step:
                stack.enter_context(_wrapped(learners, "train", nan_advantages))
            if step + 1 == faults.stall_sync_step:
                stack.enter_context(_wrapped(learners, "push_weights", stall))
            return train_step(trainer, step)

    return faulty_train_step


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    for name in ("nan-loss-step", "nan-advantages-step", "stall-sync-step"):
        parser.add_argument(f"--{name}", type=int, default=0)
    args, rest = parser.parse_known_args(argv)
    from r1reward.cli import main as r1reward_main
    from r1reward.trainer.driver import Trainer

    faults = Faults(args.nan_loss_step, args.nan_advantages_step, args.stall_sync_step)
    Trainer.train_step = wrap_train_step(Trainer.train_step, faults)
    return r1reward_main(rest)


# vLLM spawns processes that re-import the main module: without the guard they would rerun the command.
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
