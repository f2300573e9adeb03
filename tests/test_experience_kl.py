"""KL in the experience step (pure torch): the per-token penalty enters the reward before the returns,
as in the released OpenRLHF Reinforce++, and `kl/mean` is reported."""

from __future__ import annotations

import math

import pytest

from r1reward.config.schema import AlgoConfig
from r1reward.data.samples import Sample
from r1reward.trainer.experience import assign_advantages


def samples(old: list[list[float]], ref: list[list[float]] | None) -> list[Sample]:
    out = [Sample(prompt_ids=[1], completion_ids=list(range(len(o))), old_logprobs=o) for o in old]
    if ref is not None:
        for sample, r in zip(out, ref):
            sample.ref_logprobs = r
    return out


OLD = [[-1.0, -2.0, -0.5], [-0.3, -0.7]]
REF = [[-1.5, -1.0, -0.5], [-0.3, -1.7]]
REWARDS = [2.0, 0.5]


def test_kl_needs_reference_logprobs():
    with pytest.raises(ValueError, match="ref_logprobs"):
        assign_advantages(samples(OLD, None), REWARDS, AlgoConfig(kl_coef=0.001), 1)


def test_zero_kl_coef_reports_no_kl_and_gives_flat_advantages_per_sequence():
    batch = samples(OLD, None)
    metrics = assign_advantages(batch, REWARDS, AlgoConfig(advantage_filter="none"), 1)
    assert "kl/mean" not in metrics
    for sample in batch:  # gamma 1 and no per-token reward: every token carries the final reward
        assert len(set(sample.advantages)) == 1


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_is_folded_into_the_token_rewards_and_logged(estimator):
    batch = samples(OLD, REF)
    metrics = assign_advantages(
        batch, REWARDS, AlgoConfig(kl_coef=0.1, kl_estimator=estimator, advantage_filter="none"), 1
    )
    diffs = [[o - r for o, r in zip(os, rs)] for os, rs in zip(OLD, REF)]
    if estimator == "k1":
        per_token = diffs
    else:
        per_token = [[math.exp(-d) - 1 + d for d in row] for row in diffs]
    expected = sum(sum(row) / len(row) for row in per_token) / len(per_token)
    assert metrics["kl/mean"] == pytest.approx(expected)
    # Returns-to-go differ along a sequence once each token pays its own KL: advantages vary within
    # the first sequence, whose tokens have unequal KL.
    assert len(set(round(a, 6) for a in batch[0].advantages)) > 1
    # Equal policy and reference: KL 0, and the result equals the run without KL.
    same = samples(OLD, OLD)
    metrics = assign_advantages(
        same, REWARDS, AlgoConfig(kl_coef=0.1, kl_estimator=estimator, advantage_filter="none"), 1
    )
    plain = samples(OLD, None)
    assign_advantages(plain, REWARDS, AlgoConfig(advantage_filter="none"), 1)
    assert metrics["kl/mean"] == 0.0
    flat = lambda batch: [a for s in batch for a in s.advantages]  # noqa: E731
    assert flat(same) == pytest.approx(flat(plain))
