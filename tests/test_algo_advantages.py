"""Returns, estimators and the advantage normalisation + filter (paper §4.1)."""

import math
import statistics
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1reward.algo.advantages import (
    get_advantage_estimator,
    kl_penalty,
    normalize_and_filter,
    reinforce_returns,
)
from r1reward.config.schema import AlgoConfig


def test_kl_estimators_match_their_formulas():
    logp, ref = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -0.5])
    for i in range(2):
        x = logp[i].item() - ref[i].item()
        assert kl_penalty(logp, ref, "k1")[i].item() == pytest.approx(x)
        assert kl_penalty(logp, ref, "k2")[i].item() == pytest.approx(0.5 * x * x)
        assert kl_penalty(logp, ref, "k3")[i].item() == pytest.approx(math.exp(-x) - 1 + x)
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k4")


def test_reward_lands_on_last_valid_token_for_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    returns = reinforce_returns(torch.tensor([1.5, -2.0, 7.0]), mask)
    # gamma = 1 and no KL: every valid token's return is the scalar reward; masked positions are 0.
    assert returns.tolist() == [[1.5, 1.5, 1.5, 0, 0], [0, 0, -2.0, -2.0, -2.0], [0, 0, 0, 0, 0]]


def test_gamma_reward_clip_and_kl_shaping():
    mask = torch.ones(1, 3, dtype=torch.bool)
    returns = reinforce_returns(torch.tensor([40.0]), mask, gamma=0.5, reward_clip=10.0)
    assert returns[0].tolist() == pytest.approx([2.5, 5.0, 10.0])

    logp = torch.tensor([[-1.0, -1.0, -1.0]])
    logp_ref = torch.tensor([[-1.5, -1.0, -0.5]])  # k1 = [0.5, 0, -0.5]
    returns = reinforce_returns(torch.tensor([1.0]), mask, logp=logp, logp_ref=logp_ref, kl_coef=0.1)
    per_token = [-0.05, 0.0, 0.05 + 1.0]
    assert returns[0].tolist() == pytest.approx([sum(per_token), sum(per_token[1:]), per_token[2]])
    with pytest.raises(ValueError):
        reinforce_returns(torch.tensor([1.0]), mask, logp=logp, kl_coef=0.1)  # no reference
    # kl_coef = 0 (the paper's setting) needs no reference model at all
    assert reinforce_returns(torch.tensor([1.0]), mask, logp=logp, logp_ref=None).tolist() == [[1.0] * 3]


def test_grpo_and_rloo_baselines():
    rewards = [2.0, 0.5, 1.0, 1.0, 0.0, 2.0]  # two prompts, three samples each, contiguous
    mask = torch.ones(6, 2, dtype=torch.bool)
    grpo = get_advantage_estimator("grpo")(torch.tensor(rewards), mask, AlgoConfig(), n_samples_per_prompt=3)
    rloo = get_advantage_estimator("rloo")(torch.tensor(rewards), mask, AlgoConfig(), n_samples_per_prompt=3)
    for i, r in enumerate(rewards):
        group = rewards[3 * (i // 3) : 3 * (i // 3) + 3]
        expected_grpo = (r - statistics.mean(group)) / (statistics.stdev(group) + 1e-8)
        others = list(group)
        others.remove(r)
        assert grpo[i].tolist() == pytest.approx([expected_grpo] * 2, abs=1e-6)
        assert rloo[i].tolist() == pytest.approx([r - statistics.mean(others)] * 2, abs=1e-6)
    with pytest.raises(ValueError):
        get_advantage_estimator("grpo")(torch.tensor(rewards), mask, AlgoConfig(), n_samples_per_prompt=1)
    with pytest.raises(KeyError):
        get_advantage_estimator("gae")


def test_reinforce_pp_estimator_is_the_returns():
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    est = get_advantage_estimator("reinforce++")(torch.tensor([1.25]), mask, AlgoConfig(), n_samples_per_prompt=1)
    assert torch.equal(est, reinforce_returns(torch.tensor([1.25]), mask))


def test_paper_filter_example_255_right_one_wrong():
    rewards = torch.tensor([1.0] * 255 + [0.0])
    mask = torch.ones(256, 1, dtype=torch.bool)
    advantages = get_advantage_estimator("reinforce++")(rewards, mask, AlgoConfig(), n_samples_per_prompt=1)
    standardised, _ = normalize_and_filter(advantages, mask, mode="none")
    z = standardised[-1, 0].item()
    assert math.trunc(z * 100) / 100 == -15.96  # the paper prints -15.96 (it is -sqrt(255) = -15.9687)
    assert z == pytest.approx(-math.sqrt(255), abs=1e-4)
    filtered, stats = normalize_and_filter(advantages, mask, mode="paper")
    assert filtered[-1, 0].item() == 0.0
    assert filtered[:-1, 0].tolist() == pytest.approx([1 / math.sqrt(255)] * 255, rel=1e-5)
    assert stats["filtered_frac"] == pytest.approx(1 / 256)


def test_released_filter_differs_when_most_answers_are_right():
    # Four right answers (reward 2) and one wrong (0): A_std = 0.5 and -2.0. The paper keeps -2.0;
    # the released code's window [raw_mean - 3, raw_mean + 3] = [-1.4, 4.6] on A_std drops it.
    advantages = torch.tensor([[2.0], [2.0], [2.0], [2.0], [0.0]])
    mask = torch.ones(5, 1, dtype=torch.bool)
    paper, _ = normalize_and_filter(advantages, mask, mode="paper")
    released, stats = normalize_and_filter(advantages, mask, mode="released")
    assert paper[-1, 0].item() == pytest.approx(-2.0)
    assert released[-1, 0].item() == 0.0 and stats["filtered_frac"] == pytest.approx(0.2)
    # ... and it keeps a positive outlier the paper drops: ten 0.5s and one 2.0 give A_std = sqrt(10).
    advantages = torch.tensor([[0.5]] * 10 + [[2.0]])
    mask = torch.ones(11, 1, dtype=torch.bool)
    assert normalize_and_filter(advantages, mask, mode="paper")[0][-1, 0].item() == 0.0
    kept = normalize_and_filter(advantages, mask, mode="released")[0][-1, 0].item()
    assert kept == pytest.approx(math.sqrt(10), rel=1e-5)
    with pytest.raises(ValueError):
        normalize_and_filter(advantages, mask, mode="strict")


def test_all_reduce_makes_statistics_global():
    g = torch.Generator().manual_seed(0)
    advantages = torch.randn(8, 5, generator=g) * 2 + 1
    mask = torch.rand(8, 5, generator=g) < 0.7
    full, _ = normalize_and_filter(advantages, mask, mode="none")

    # Two "ranks" in threads; one reduces in place returning None (like torch.distributed.all_reduce),
    # the other returns the sum.
    barrier, shared, results = threading.Barrier(2), {}, {}

    def make_reduce(rank, in_place):
        def reduce(t):
            shared[rank] = t.clone()
            barrier.wait()
            total = shared[0] + shared[1]
            barrier.wait()
            if in_place:
                t.copy_(total)
                return None
            return total

        return reduce

    def worker(rank):
        rows = slice(4 * rank, 4 * rank + 4)
        results[rank] = normalize_and_filter(
            advantages[rows], mask[rows], mode="none", all_reduce=make_reduce(rank, rank == 0)
        )[0]

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert torch.allclose(torch.cat([results[0], results[1]]), full, atol=1e-5)
    alone, _ = normalize_and_filter(advantages[:4], mask[:4], mode="none")
    assert not torch.allclose(alone, full[:4], atol=1e-3)  # the reduction really mattered


def test_masked_values_do_not_enter_the_statistics():
    advantages = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]], dtype=torch.bool)
    out, stats = normalize_and_filter(advantages, mask, mode="none")
    junk = torch.where(mask, advantages, torch.full_like(advantages, 1e6))
    assert torch.equal(normalize_and_filter(junk, mask, mode="none")[0], out)
    values = [1.0, 2.0, 3.0, 4.0]
    mean, std = statistics.mean(values), statistics.pstdev(values)
    assert stats["mean"] == pytest.approx(mean) and stats["std"] == pytest.approx(std)
    assert out[mask].tolist() == pytest.approx([(v - mean) / (std + 1e-8) for v in values], rel=1e-6)
    assert torch.all(out[~mask] == 0)


finite_values = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)
any_values = st.one_of(finite_values, st.sampled_from([math.nan, math.inf, -math.inf]))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(finite_values, st.booleans()), min_size=1, max_size=40))
def test_paper_filter_never_passes_a_magnitude_above_sigma(cells):
    advantages = torch.tensor([[v for v, _ in cells]])
    mask = torch.tensor([[m for _, m in cells]])
    for sigma in (3.0, 1.0):
        out, _ = normalize_and_filter(advantages, mask, mode="paper", sigma=sigma)
        assert out.abs().max().item() <= sigma
        assert torch.all(out[~mask] == 0)
    out, _ = normalize_and_filter(advantages, mask, mode="released")
    assert out.abs().max().item() <= 10.0


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(any_values, st.booleans()), min_size=1, max_size=40),
    st.sampled_from(["paper", "released", "none"]),
)
def test_non_finite_advantages_are_zeroed_and_counted(cells, mode):
    advantages = torch.tensor([[v for v, _ in cells]])
    mask = torch.tensor([[m for _, m in cells]])
    out, stats = normalize_and_filter(advantages, mask, mode=mode)
    bad = mask & ~torch.isfinite(advantages)
    assert torch.isfinite(out).all()
    assert stats["nonfinite"] == bad.sum().item()
    assert torch.all(out[bad] == 0)
    # the finite tokens are standardised as if the bad ones were not there
    clean_mask = mask & torch.isfinite(advantages)
    clean = torch.where(clean_mask, advantages, torch.zeros_like(advantages))
    assert torch.equal(normalize_and_filter(clean, clean_mask, mode=mode)[0], out)
