"""The learner's update clock (r1reward/learner/worker.py): the seconds of each part of an update, summed
over its micro-batches, reported so that the driver's reduction over ranks keeps the slowest rank's."""

from __future__ import annotations

import time

import pytest
import torch

from r1reward.algo.stats import reduce_stats
from r1reward.learner.worker import UpdateClock


def test_each_part_sums_its_micro_batches_and_the_ranks_reduce_to_the_slowest():
    clock = UpdateClock(torch.device("cpu"))
    for _ in range(2):  # two micro-batches
        with clock("forward"):
            time.sleep(0.02)
        with clock("backward"):
            time.sleep(0.04)
    with clock("optimizer"):
        time.sleep(0.01)
    stats = clock.stats()
    assert set(stats) == {"time/update/forward_max", "time/update/backward_max", "time/update/optimizer_max"}
    assert stats["time/update/forward_max"] == pytest.approx(0.04, abs=0.03)
    assert stats["time/update/backward_max"] >= 0.08 > stats["time/update/forward_max"] >= 0.04
    # Two ranks: whatever their tokens, a step's part takes as long as its slowest rank's.
    fast = {**{k: v / 2 for k, v in stats.items()}, "loss_tokens": 100.0}
    slow = {**stats, "loss_tokens": 1.0}
    assert reduce_stats([fast, slow])["time/update/backward_max"] == stats["time/update/backward_max"]


def test_a_part_that_raises_is_not_counted():
    clock = UpdateClock(torch.device("cpu"))
    with pytest.raises(RuntimeError), clock("forward"):
        raise RuntimeError("a failed forward")
    assert clock.stats() == {}
