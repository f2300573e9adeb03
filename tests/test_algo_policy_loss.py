"""Policy losses: the paper's Pre-CLIP example, the reduction, masking and finiteness."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1reward.algo.policy_loss import (
    get_policy_loss,
    register_policy_loss,
    seq_mean_token_mean,
    token_losses,
)
from r1reward.config.schema import AlgoConfig

# The paper's example (§4.1): one stale token (logp_old = -10) dominates without Pre-CLIP.
LOGP = [-0.1] * 4
LOGP_OLD = [-10.0, -0.2, -0.2, -5.0]
ADV = [-1.0, -1.0, 0.5, -0.5]


def _t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def test_paper_example_without_pre_clip():
    losses = token_losses(_t(LOGP), _t(LOGP_OLD), _t(ADV), pre_clip=False).tolist()
    assert round(losses[0], 1) == 19930.4
    assert round(losses[1], 1) == 1.1
    assert round(losses[2], 2) == -0.55
    assert round(losses[3], 1) == 67.1


def test_paper_example_with_pre_clip_caps_the_stale_token_at_delta_max():
    without = token_losses(_t(LOGP), _t(LOGP_OLD), _t(ADV), pre_clip=False)
    with_clip = token_losses(_t(LOGP), _t(LOGP_OLD), _t(ADV), pre_clip=True)
    # log-ratio 9.9 > log(1e3): ratio = exp(log 1e3) = 1000, and with A = -1 the loss is 1000.
    assert with_clip[0].item() == pytest.approx(1000.0, rel=1e-12)
    # the other log-ratios (0.1, 0.1, 4.9) are inside [log 1e-3, log 1e3]: unchanged.
    assert torch.equal(with_clip[1:], without[1:])


def test_registry_losses_on_the_paper_example():
    mask = torch.ones(1, 4, dtype=torch.bool)
    args = (_t([LOGP]), _t([LOGP_OLD]), _t([ADV]), mask)
    expected_plain = token_losses(*args[:3], pre_clip=False).mean()
    expected_stable = token_losses(*args[:3], pre_clip=True).mean()
    loss_ppo, stats_ppo = get_policy_loss("ppo")(*args, AlgoConfig())
    loss_sr, stats_sr = get_policy_loss("stable_reinforce")(*args, AlgoConfig())
    assert loss_ppo.item() == pytest.approx(expected_plain.item())
    assert loss_sr.item() == pytest.approx(expected_stable.item())
    assert loss_sr.item() < loss_ppo.item() / 10
    assert stats_sr["pre_clip_frac"] == 0.25 and stats_ppo["pre_clip_frac"] == 0.0
    # One meaning of ratio for every loss: the raw exp(logp - logp_old), which Pre-CLIP bounded to 1000
    # inside StableReinforce's loss but not in what it reports.
    assert stats_sr["ratio_max"] == stats_ppo["ratio_max"] == pytest.approx(math.exp(9.9))
    assert stats_sr["ratio_mean"] == stats_ppo["ratio_mean"]
    assert stats_sr["ratio_mean"] == pytest.approx(sum(math.exp(a - b) for a, b in zip(LOGP, LOGP_OLD)) / 4)
    # KL statistic: mean of 0.5 * log_ratio^2 over the tokens.
    log_ratios = [a - b for a, b in zip(LOGP, LOGP_OLD)]
    assert stats_sr["approx_kl"] == pytest.approx(sum(0.5 * x * x for x in log_ratios) / 4)


def test_unknown_and_duplicate_names():
    with pytest.raises(KeyError, match="stable_reinforce"):
        get_policy_loss("nope")
    with pytest.raises(ValueError):
        register_policy_loss("ppo")(lambda *a, **k: None)


def test_asymmetric_eps_and_clip_fraction():
    logp = torch.log(_t([[1.3, 0.7]]))
    logp_old = torch.zeros(1, 2, dtype=torch.float64)
    adv = _t([[1.0, -1.0]])
    # ratio 1.3 with A=+1 is capped at 1+eps_high; ratio 0.7 with A=-1 at 1-eps_low.
    losses = token_losses(logp, logp_old, adv, eps_low=0.1, eps_high=0.28)
    assert losses[0].tolist() == pytest.approx([-1.28, 0.9])
    losses = token_losses(logp, logp_old, adv)  # eps 0.2 both sides
    assert losses[0].tolist() == pytest.approx([-1.2, 0.8])
    _, stats = get_policy_loss("stable_reinforce")(logp, logp_old, adv, torch.ones(1, 2), AlgoConfig(eps_clip=0.5))
    assert stats["clip_frac"] == 0.0
    _, stats = get_policy_loss("stable_reinforce")(logp, logp_old, adv, torch.ones(1, 2), AlgoConfig())
    assert stats["clip_frac"] == 1.0


def test_reduction_is_token_mean_per_sequence_then_sequence_mean():
    values = _t([[1.0, 2.0, 3.0], [10.0, 0.0, 0.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    # (mean(1,2,3) + mean(10)) / 2; the empty third sequence is left out and gives no NaN.
    assert seq_mean_token_mean(values, mask).item() == pytest.approx((2.0 + 10.0) / 2)


def test_all_empty_batch_gives_zero_and_backward_works():
    logp = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    for name in ("ppo", "stable_reinforce"):
        loss, stats = get_policy_loss(name)(logp, logp.detach() - 1, torch.ones(2, 3), mask, AlgoConfig())
        loss.backward()
        assert loss.item() == 0.0 and all(math.isfinite(v) for v in stats.values())
        assert torch.all(logp.grad == 0)
        logp.grad = None


def test_pre_clipped_tokens_get_no_gradient():
    logp = _t([LOGP]).requires_grad_(True)
    loss, _ = get_policy_loss("stable_reinforce")(logp, _t([LOGP_OLD]), _t([ADV]), torch.ones(1, 4), AlgoConfig())
    loss.backward()
    assert logp.grad[0, 0].item() == 0.0  # the stale token no longer drives the update
    assert torch.all(logp.grad[0, 1:] != 0)


gaps = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
advs = st.floats(min_value=-10.0, max_value=10.0, allow_nan=False)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(gaps, advs), min_size=1, max_size=12))
def test_pre_clip_loss_and_grad_stay_finite_for_any_gap(pairs):
    gap = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
    adv = torch.tensor([p[1] for p in pairs], dtype=torch.float32)
    logp = (gap - 1.0).unsqueeze(0).requires_grad_(True)
    logp_old = torch.full_like(logp, -1.0)
    loss, stats = get_policy_loss("stable_reinforce")(logp, logp_old, adv[None], torch.ones_like(logp), AlgoConfig())
    loss.backward()
    assert torch.isfinite(loss)
    # the ratio is at most 1e3 and |A| <= 10, so no token loss can exceed 1e4
    assert loss.abs().item() <= 1e4 * (1 + 1e-6)
    assert torch.isfinite(logp.grad).all()
    assert all(math.isfinite(v) for v in stats.values())


@settings(max_examples=80, deadline=None)
@given(
    st.integers(min_value=0, max_value=2**31 - 1),
    st.sampled_from(["ppo", "stable_reinforce"]),
    st.sampled_from([0.0, 1e4, -1e4, math.inf, -math.inf, math.nan]),
)
def test_masked_tokens_never_change_the_loss(seed, name, junk):
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(3, 6, generator=g, dtype=torch.float64)
    logp_old = logp + 0.1 * torch.randn(3, 6, generator=g, dtype=torch.float64)
    adv = torch.randn(3, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 6, generator=g) < 0.6
    loss_fn = get_policy_loss(name)
    reference, _ = loss_fn(logp, logp_old, adv, mask, AlgoConfig())

    noisy_logp = torch.where(mask, logp, torch.full_like(logp, junk)).requires_grad_(True)
    noisy_adv = torch.where(mask, adv, torch.randn(3, 6, generator=g, dtype=torch.float64) * 1e3)
    loss, _ = loss_fn(noisy_logp, logp_old, noisy_adv, mask, AlgoConfig())
    loss.backward()
    assert loss.item() == reference.item()
    assert torch.isfinite(noisy_logp.grad).all() and torch.all(noisy_logp.grad[~mask] == 0)


# --- rollout correction (decoupled StableReinforce): r1reward/algo/correction.py ---------------------


def _decoupled_inputs():
    # proximal (old) - behaviour (sampler) log-ratios per token: w = e^0 = 1, e^1.5 = 4.48, e^-1 = 0.37, e^0.5 = 1.65
    old = _t([[-1.0, -0.5, -2.0, -0.3]])
    sampler = old - _t([[0.0, 1.5, -1.0, 0.5]])
    logp = old + _t([[0.05, -0.1, 0.3, 0.0]])
    adv = _t([[1.0, -2.0, 0.5, 1.5]])
    return logp, old, sampler, adv


def test_correction_none_is_the_uncorrected_loss_exactly():
    from r1reward.algo.correction import rollout_correction

    logp, old, sampler, adv = _decoupled_inputs()
    mask = torch.tensor([[True, True, True, False]])
    for name in ("ppo", "stable_reinforce"):
        today, today_stats = get_policy_loss(name)(logp, old, adv, mask, AlgoConfig())
        new_adv, new_mask, stats = rollout_correction(old, sampler, adv, mask, AlgoConfig())
        loss, loss_stats = get_policy_loss(name)(logp, old, new_adv, new_mask, AlgoConfig())
        assert stats == {} and new_adv is adv and torch.equal(new_mask, mask)
        assert loss.item() == today.item() and loss_stats == today_stats


def test_tis_weights_each_token_loss_by_the_capped_behaviour_weight():
    from r1reward.algo.correction import rollout_correction

    logp, old, sampler, adv = _decoupled_inputs()
    mask = torch.ones(1, 4, dtype=torch.bool)
    config = AlgoConfig(rollout_correction="tis", rollout_correction_cap=2.0)
    new_adv, new_mask, stats = rollout_correction(old, sampler, adv, mask, config)
    weights = [1.0, 2.0, math.exp(-1.0), math.exp(0.5)]  # e^1.5 = 4.48 capped at 2
    assert new_adv[0].tolist() == pytest.approx([a * w for a, w in zip(adv[0].tolist(), weights)])
    assert torch.equal(new_mask, mask) and stats["correction/masked_frac"] == 0.0
    assert stats["correction/weight_mean"] == pytest.approx(sum(weights) / 4)
    # The decoupled loss: each token's (Pre-CLIPped, clipped) surrogate against the proximal policy, times w.
    loss, _ = get_policy_loss("stable_reinforce")(logp, old, new_adv, new_mask, config)
    per_token = token_losses(logp, old, adv) * _t([weights])
    assert loss.item() == pytest.approx(per_token.mean().item())


def test_mask_token_drops_tokens_above_the_cap_and_weights_the_rest():
    from r1reward.algo.correction import rollout_correction

    logp, old, sampler, adv = _decoupled_inputs()
    mask = torch.ones(1, 4, dtype=torch.bool)
    config = AlgoConfig(rollout_correction="mask_token", rollout_correction_cap=2.0)
    new_adv, new_mask, stats = rollout_correction(old, sampler, adv, mask, config)
    assert new_mask[0].tolist() == [True, False, True, True]  # w = 4.48 > 2 leaves the loss
    kept_w = [1.0, math.exp(-1.0), math.exp(0.5)]
    assert new_adv[0].tolist() == pytest.approx([1.0, 0.0, 0.5 * kept_w[1], 1.5 * kept_w[2]])
    assert stats["correction/masked_frac"] == 0.25
    assert stats["correction/weight_mean"] == pytest.approx(sum(kept_w) / 3)
    # The masked token is out of the token mean as well as the sum.
    loss, _ = get_policy_loss("stable_reinforce")(logp, old, new_adv, new_mask, config)
    per_token = token_losses(logp, old, adv)[0] * _t([1.0, 0.0, kept_w[1], kept_w[2]])
    assert loss.item() == pytest.approx((per_token[0] + per_token[2] + per_token[3]).item() / 3)


def test_mask_sequence_drops_whole_sequences_by_their_geometric_mean_weight():
    from r1reward.algo.correction import rollout_correction

    old = torch.zeros(3, 3, dtype=torch.float64)
    # log w per token: mean 0.2 (the sequence stays, but its token at e^1.2 > 2 leaves the loss as under
    # mask_token), mean 1.0 (> log 2), mean -1 (< -log 2): those two sequences leave whole.
    log_w = _t([[1.2, -0.3, -0.3], [1.0, 1.0, 1.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.ones(3, 3, dtype=torch.float64)
    config = AlgoConfig(rollout_correction="mask_sequence", rollout_correction_cap=2.0)
    new_adv, new_mask, stats = rollout_correction(old, old - log_w, adv, mask, config)
    assert new_mask.tolist() == [[False, True, True], [False] * 3, [False] * 3]
    assert new_adv[0].tolist() == pytest.approx([0.0, math.exp(-0.3), math.exp(-0.3)])
    assert torch.all(new_adv[1:] == 0) and stats["correction/masked_frac"] == pytest.approx(6 / 8)
    # What the docstring promises: no weight above the cap ever reaches the loss.
    assert stats["correction/weight_mean"] == pytest.approx(math.exp(-0.3))
    assert (new_adv[new_mask] <= config.rollout_correction_cap).all()


def test_correction_ignores_padding_and_needs_sampler_logprobs():
    from r1reward.algo.correction import rollout_correction

    logp, old, sampler, adv = _decoupled_inputs()
    mask = torch.tensor([[True, True, False, False]])
    junk = sampler.clone()
    junk[0, 2:] = torch.tensor([math.inf, math.nan])  # padding garbage off the mask
    for name in ("tis", "mask_token", "mask_sequence"):
        config = AlgoConfig(rollout_correction=name)
        new_adv, new_mask, stats = rollout_correction(old, junk, adv, mask, config)
        assert torch.isfinite(new_adv).all() and not new_mask[0, 2:].any()
        assert all(math.isfinite(v) for v in stats.values())
        with pytest.raises(ValueError, match="sampler_logprobs"):
            rollout_correction(old, None, adv, mask, config)
