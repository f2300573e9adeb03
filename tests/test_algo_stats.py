"""`reduce_stats`: the one rule by which micro-batches' and ranks' statistics become a step's row."""

from __future__ import annotations

import math

import pytest
import torch

from r1reward.algo import get_policy_loss
from r1reward.algo.stats import reduce_stats
from r1reward.config.schema import AlgoConfig


def test_max_is_the_maximum_and_fractions_are_weighted_by_tokens():
    parts = [
        {"ratio_max": 1.5, "clip_frac": 0.5, "loss_tokens": 2.0},  # 1 of 2 tokens clipped
        {"ratio_max": 40.0, "clip_frac": 0.0, "loss_tokens": 98.0},  # 0 of 98
        {"ratio_max": 3.0, "clip_frac": 1.0, "loss_tokens": 0.0},  # no tokens: counts for nothing but its max
    ]
    out = reduce_stats(parts)
    assert out["ratio_max"] == 40.0  # not the mean (14.8) of the three
    assert out["clip_frac"] == pytest.approx(1 / 100)  # 1 clipped token of 100, not (0.5 + 0 + 1) / 3
    assert out["loss_tokens"] == 100.0


def test_the_same_rule_over_micro_batches_then_ranks_equals_one_pass_over_all_tokens():
    """Two ranks of two micro-batches, reduced as the learner and the driver do, against the loss's
    own statistics on all the tokens at once."""
    g = torch.Generator().manual_seed(0)
    logp = -torch.rand(8, 5, generator=g, dtype=torch.float64)
    old = logp + 0.5 * torch.randn(8, 5, generator=g, dtype=torch.float64)
    adv = torch.randn(8, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(8, 5, generator=g) < 0.7
    mask[3] = False  # a sample with no token
    loss_fn, config = get_policy_loss("stable_reinforce"), AlgoConfig()

    def stats(rows):
        _, values = loss_fn(logp[rows], old[rows], adv[rows], mask[rows], config)
        return {**values, "loss_tokens": float(mask[rows].sum())}

    ranks = [reduce_stats([stats(slice(0, 1)), stats(slice(1, 4))]), reduce_stats([stats(slice(4, 8))])]
    step = reduce_stats(ranks)
    whole = stats(slice(0, 8))
    for key in ("clip_frac", "pre_clip_frac", "ratio_mean", "ratio_max", "approx_kl", "loss_tokens"):
        assert step[key] == pytest.approx(whole[key], rel=1e-6), key  # fractions in float32
    assert step["ratio_max"] == pytest.approx(float(torch.exp(logp - old)[mask].max()))


def test_means_over_other_tokens_and_values_shared_by_ranks():
    parts = [
        {"correction/masked_frac": 0.5, "action_tokens": 4.0, "loss_tokens": 2.0, "lr": 1e-4, "ratio_min": 0.5},
        {"correction/masked_frac": 0.0, "action_tokens": 6.0, "loss_tokens": 6.0, "lr": 1e-4, "ratio_min": 0.9},
    ]
    out = reduce_stats(parts)
    assert out["correction/masked_frac"] == pytest.approx(2 / 10)  # over all generated tokens
    assert out["lr"] == pytest.approx(1e-4) and out["ratio_min"] == 0.5


def test_without_counts_a_mean_is_unweighted_and_zero_weight_nan_is_ignored():
    assert reduce_stats([{"loss": 1.0}, {"loss": 3.0}]) == {"loss": 2.0}
    out = reduce_stats([{"loss": math.nan, "loss_tokens": 0.0}, {"loss": 2.0, "loss_tokens": 5.0}])
    assert out == {"loss": 2.0, "loss_tokens": 5.0}
    assert reduce_stats([]) == {}
