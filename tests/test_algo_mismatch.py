"""The sampler / learner mismatch metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from r1reward.algo.mismatch import mismatch_metrics


def test_identical_log_probs_mean_no_mismatch():
    logp = [[-0.5, -1.0], [-2.0]]
    m = mismatch_metrics(logp, logp)
    assert m["mismatch/kl_k1"] == 0 and m["mismatch/kl_k3"] == 0 and m["mismatch/log_ppl_diff"] == 0
    assert m["mismatch/weight_min"] == m["mismatch/weight_max"] == 1 and m["mismatch/weight_above_cap"] == 0


def test_values_match_the_formulas():
    learner, sampler = [[-1.0, -0.2], [-0.1]], [[-1.5, -0.2], [-1.1]]
    ratios = [0.5, 0.0, 1.0]  # learner - sampler, per token
    m = mismatch_metrics(learner, sampler, weight_cap=2.0)
    assert m["mismatch/kl_k1"] == pytest.approx(-sum(ratios) / 3)
    assert m["mismatch/kl_k3"] == pytest.approx(sum(math.exp(r) - 1 - r for r in ratios) / 3)
    assert m["mismatch/weight_max"] == pytest.approx(math.e) and m["mismatch/weight_min"] == pytest.approx(1.0)
    assert m["mismatch/weight_above_cap"] == pytest.approx(1 / 3)  # only e > 2
    assert m["mismatch/log_ppl_diff"] == pytest.approx((-(0.5 + 0.0) / 2 - 1.0) / 2)  # per sequence, then mean
    assert m["mismatch/kl_k3"] >= 0


def test_empty_completions_are_skipped_and_lengths_must_agree():
    assert mismatch_metrics([[]], [[]]) == {}
    assert mismatch_metrics([[], [-1.0]], [[], [-1.0]])["mismatch/kl_k1"] == 0
    with pytest.raises(ValueError, match="learner log-probs"):
        mismatch_metrics([[-1.0, -2.0]], [[-1.0]])
