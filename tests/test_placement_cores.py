"""resources.pin_cores: which cores each rollout worker and learner rank gets, the one-line refusals of a
split that cannot be pinned, and the pinning itself on this process (in a child, so the test runner
keeps its cores)."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from r1reward.config import load_config
from r1reward.placement.cores import assign_cores, pin_this_process
from r1reward.placement.plan import PlacementError, make_plan


def plan(*overrides: str, colocate: bool = False):
    config = load_config(None, ["resources.pin_cores=true", *overrides])
    config.resources.colocate = colocate  # refused at start-up for now, but planned (tests/test_placement.py)
    return make_plan(config)


def cores_by_role(pinned) -> list[tuple[str, int, tuple[int, ...]]]:
    return [(s.role, s.rank, s.cores) for s in pinned.slots]


def test_one_worker_and_one_rank_take_one_core_each_and_the_reward_actor_floats():
    pinned = assign_cores(plan("learner.num_ranks=1"), [1, 0])
    assert cores_by_role(pinned) == [("rollout", 0, (0,)), ("learner", 0, (1,)), ("reward", 0, ())]


def test_each_role_takes_its_planned_cpus_in_plan_order_from_the_allowed_cores():
    pinned = assign_cores(
        plan("rollout.num_workers=2", "resources.cpus_per_rollout_worker=2", "resources.cpus_per_learner_rank=1.5"),
        [3, 4, 5, 6, 8, 9, 10, 11],  # a process held to some cores already: only those are given out
    )
    assert cores_by_role(pinned) == [
        ("rollout", 0, (3, 4)),
        ("rollout", 1, (5, 6)),
        ("learner", 0, (8, 9)),  # 1.5 planned CPUs: two cores, none shared
        ("learner", 1, (10, 11)),
        ("reward", 0, ()),
    ]
    every = [c for s in pinned.slots for c in s.cores]
    assert len(every) == len(set(every))


def test_a_split_that_needs_more_cores_than_allowed_is_refused_with_one_line():
    with pytest.raises(PlacementError) as error:
        assign_cores(plan(), [0, 1])  # the default: 1 rollout worker + 2 learner ranks
    message = str(error.value)
    assert "\n" not in message
    assert "needs 3 cores (1 rollout worker x 1 + 2 learner ranks x 1)" in message
    assert "may use 2 (0-1)" in message and "learner.num_ranks" in message


@pytest.mark.parametrize(
    "layout, named",
    [
        (plan(colocate=True), "resources.colocate"),
        (plan("rollout.tensor_parallel_size=2"), "rollout.tensor_parallel_size=2"),
        (plan("resources.ray_address=ray://head:10001"), "resources.ray_address"),
    ],
)
def test_layouts_that_cannot_be_pinned_are_refused_with_one_line(layout, named):
    with pytest.raises(PlacementError, match=named) as error:
        assign_cores(layout, list(range(16)))
    assert "\n" not in str(error.value)


def _pin_and_report(cores, queue) -> None:
    import threading

    import torch

    started = threading.Event()
    before = threading.Thread(target=started.wait)  # a thread that exists before the pinning
    before.start()
    pin_this_process(cores)
    tasks = {int(t): os.sched_getaffinity(int(t)) for t in os.listdir("/proc/self/task")}
    started.set()
    before.join()
    queue.put((tasks, torch.get_num_threads()))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_pinning_holds_every_thread_of_the_process_and_sizes_torch_to_match():
    core = min(os.sched_getaffinity(0))
    queue = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(target=_pin_and_report, args=((core,), queue))
    child.start()
    tasks, threads = queue.get(timeout=120)
    child.join(timeout=30)
    assert len(tasks) >= 2  # the main thread and the one started before
    assert all(allowed == {core} for allowed in tasks.values()), tasks
    assert threads == 1


def test_no_cores_leaves_the_process_as_it_was():
    before = os.sched_getaffinity(0)
    pin_this_process(())
    assert os.sched_getaffinity(0) == before
