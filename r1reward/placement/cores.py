"""Cores of their own for the rollout workers and the learner ranks (resources.pin_cores).

On a GPU node each role computes on its own device, so generation and training overlap (trainer.
max_staleness > 0) without slowing each other; on a CPU machine they share the cores unless each
process is held to a set of its own. With pin_cores the plan's rollout workers take the first cores
this process may use, then the learner ranks, each as many as its planned CPUs (at least one); the
reward actor, a judge and the driver are left free to run anywhere (the rule reward and the step's
prompt preparation take a few milliseconds a step). A split that does not fit is refused before any
actor starts, with one line. Pure Python: `pin_this_process` runs in the actor itself, at its start.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

from r1reward.placement.plan import PlacementError, PlacementPlan

PINNED_ROLES = ("rollout", "learner")  # in the order they take cores
NAMES = {"rollout": "rollout worker", "learner": "learner rank"}


def _ranges(cores: Sequence[int]) -> str:
    """`0-3,6` for [0, 1, 2, 3, 6]."""
    out, start = [], None
    for i, core in enumerate(cores):
        if start is None:
            start = core
        if i + 1 == len(cores) or cores[i + 1] != core + 1:
            out.append(f"{start}" if start == core else f"{start}-{core}")
            start = None
    return ",".join(out)


def assign_cores(plan: PlacementPlan, available: Sequence[int]) -> PlacementPlan:
    """A copy of `plan` whose rollout and learner slots carry their cores (`Slot.cores`): disjoint, in
    plan order, each ceil(its planned CPUs) of `available` (the cores this process may run on).
    PlacementError when the plan cannot be pinned so."""
    config = plan.config
    if config.resources.colocate:
        raise PlacementError(
            "resources.pin_cores gives the rollout and the learners cores of their own; "
            "it does not apply with resources.colocate=true"
        )
    if config.rollout.tensor_parallel_size != 1:
        raise PlacementError(
            f"resources.pin_cores pins one engine process per rollout worker; rollout.tensor_parallel_size="
            f"{config.rollout.tensor_parallel_size} starts several (leave pin_cores off)"
        )
    if config.resources.ray_address or os.environ.get("RAY_ADDRESS"):
        raise PlacementError(
            "resources.pin_cores needs a local Ray (it reads this machine's cores); "
            "leave resources.ray_address and RAY_ADDRESS empty"
        )
    cores = sorted(available)
    wanted = {role: [max(1, math.ceil(s.num_cpus)) for s in plan.role_slots(role)] for role in PINNED_ROLES}
    total = sum(sum(counts) for counts in wanted.values())
    if total > len(cores):
        need = " + ".join(
            f"{len(counts)} {NAMES[role]}{'s' if len(counts) != 1 else ''} x {counts[0]}"
            for role, counts in wanted.items()
            if counts
        )
        raise PlacementError(
            f"resources.pin_cores needs {total} cores ({need}) but this process may use {len(cores)} "
            f"({_ranges(cores)}); lower rollout.num_workers, learner.num_ranks or resources.cpus_per_*"
        )
    slots, start = [], 0
    for slot in plan.slots:
        if slot.role in PINNED_ROLES:
            count = max(1, math.ceil(slot.num_cpus))
            slot = dataclasses.replace(slot, cores=tuple(cores[start : start + count]))
            start += count
        slots.append(slot)
    return dataclasses.replace(plan, slots=slots)


def pin_this_process(cores: Sequence[int] | None) -> None:
    """Hold every thread of this process, and so each thread it starts later, to `cores`, and size
    torch's thread pool to match. None or empty: leave the process as it is."""
    if not cores:
        return
    import torch

    for task in os.listdir("/proc/self/task"):  # sched_setaffinity(0) would pin the calling thread only
        try:
            os.sched_setaffinity(int(task), cores)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
    os.environ["OMP_NUM_THREADS"] = str(len(cores))  # for libraries that read it at their own start
    torch.set_num_threads(len(cores))
