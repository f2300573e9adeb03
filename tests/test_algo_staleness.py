"""Bounded staleness bookkeeping (trainer.max_staleness): what is kept, dropped and counted."""

from __future__ import annotations

import pytest

from r1reward.algo.staleness import bound_staleness, staleness_of


def test_synchronous_samples_are_all_fresh():
    keep, metrics = bound_staleness([3, 3, 3], learner_version=3, max_staleness=0)
    assert keep == [0, 1, 2] and metrics == {"staleness/0": 3.0, "staleness/dropped": 0.0}


def test_samples_older_than_eta_are_dropped_and_counted_and_every_bucket_is_logged():
    # learner at version 5, eta 2: ages 0, 1, 3, 2, 5 -> the ages 3 and 5 are dropped
    keep, metrics = bound_staleness([5, 4, 2, 3, 0], learner_version=5, max_staleness=2)
    assert keep == [0, 1, 3]
    assert metrics == {"staleness/0": 1.0, "staleness/1": 1.0, "staleness/2": 1.0, "staleness/dropped": 2.0}
    _, metrics = bound_staleness([4, 4], learner_version=5, max_staleness=3)
    assert metrics == {
        "staleness/0": 0.0,
        "staleness/1": 2.0,
        "staleness/2": 0.0,
        "staleness/3": 0.0,
        "staleness/dropped": 0.0,
    }


def test_a_sample_from_a_newer_policy_or_a_negative_eta_is_an_error():
    assert staleness_of([1, 2], 2) == [1, 0]
    with pytest.raises(ValueError, match="newer than the learner"):
        staleness_of([3], 2)
    with pytest.raises(ValueError, match="max_staleness"):
        bound_staleness([0], 0, -1)
