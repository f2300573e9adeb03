"""Returns, advantage estimators and StableReinforce's advantage normalisation + filter.

Shapes: ``rewards`` is one scalar per sequence ``[B]``; ``action_mask``, log-probs, returns and
advantages are per token ``[B, T]``. Estimators are looked up by name (``get_advantage_estimator``)
and all end in the same Reinforce++ returns, so they differ only in how the scalar reward is shaped.
Every estimator has one signature,
``(rewards, action_mask, config, *, n_samples_per_prompt, logp=None, logp_ref=None) -> advantages``;
one that needs a group of samples per prompt declares it: ``@register_advantage_estimator("x", grouped=True)``.
KL estimators and advantage filters are registries too, so that config validation lists their names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from r1reward.algo.registry import Registry

if TYPE_CHECKING:  # only for type hints: the config schema is plain data
    from r1reward.config.schema import AlgoConfig

AdvantageFn = Callable[..., Tensor]
ADVANTAGE_ESTIMATOR_REGISTRY: Registry[AdvantageFn] = Registry("advantage estimator")
KL_ESTIMATOR_REGISTRY: Registry[Callable[[Tensor], Tensor]] = Registry("KL estimator")
# A filter maps (standardised advantages, raw mean, sigma) to the tokens it keeps.
ADVANTAGE_FILTER_REGISTRY: Registry[Callable[[Tensor, Tensor, float], Tensor]] = Registry("advantage filter")


def register_advantage_estimator(name: str, *, grouped: bool = False) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: make an estimator available to ``get_advantage_estimator(name)`` and to
    ``algo.advantage_estimator``. ``grouped``: it compares the samples of one prompt, so the config
    must ask for more than one sample per prompt."""
    return ADVANTAGE_ESTIMATOR_REGISTRY.register(name, grouped=grouped)


def get_advantage_estimator(name: str) -> AdvantageFn:
    """The estimator registered under ``name``; an unknown name (a ``KeyError``) lists the registered ones."""
    return ADVANTAGE_ESTIMATOR_REGISTRY.get(name)


@KL_ESTIMATOR_REGISTRY.register("k1")
def _kl_k1(log_ratio: Tensor) -> Tensor:
    return log_ratio


@KL_ESTIMATOR_REGISTRY.register("k2")
def _kl_k2(log_ratio: Tensor) -> Tensor:
    return 0.5 * log_ratio.square()


@KL_ESTIMATOR_REGISTRY.register("k3")
def _kl_k3(log_ratio: Tensor) -> Tensor:
    # exp(-x) - 1 + x; the log-ratio is clamped to +-10 (as OpenRLHF does) so exp stays finite.
    neg = (-log_ratio).clamp(-10.0, 10.0)
    return neg.exp() - 1.0 - neg


def kl_penalty(logp: Tensor, logp_ref: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token KL(policy || ref) estimate from samples of the policy (Schulman's k1/k2/k3)."""
    return KL_ESTIMATOR_REGISTRY.get(estimator)(logp - logp_ref)


def reinforce_returns(
    rewards: Tensor,
    action_mask: Tensor,
    *,
    logp: Tensor | None = None,
    logp_ref: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: str = "k1",
    gamma: float = 1.0,
    reward_clip: float = 10.0,
) -> Tensor:
    """Reinforce++ returns: per-token reward ``-kl_coef * KL``, plus the clamped scalar reward at the
    last valid action token, summed backwards with ``gamma``. Masked positions are 0.

    With ``kl_coef == 0`` (the paper's setting) no reference model is needed: ``logp_ref`` may be None.
    """
    mask = action_mask.bool()
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    if kl_coef != 0.0:
        if logp is None or logp_ref is None:
            raise ValueError("kl_coef != 0 needs both logp and logp_ref")
        token_rewards = -kl_coef * kl_penalty(logp.float(), logp_ref.float(), kl_estimator)
        token_rewards = torch.where(mask, token_rewards, torch.zeros_like(token_rewards))

    # The last valid token of each row (works for left and right padding); rows without one get none.
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).max(dim=-1).values
    has_action = last >= 0
    scalar = rewards.float().clamp(-reward_clip, reward_clip) * has_action
    rows = torch.arange(mask.shape[0], device=mask.device)
    token_rewards[rows, last.clamp(min=0)] += scalar

    if gamma == 1.0:
        returns = token_rewards.flip(-1).cumsum(-1).flip(-1)
    else:
        returns = torch.zeros_like(token_rewards)
        running = torch.zeros_like(token_rewards[:, 0])
        for t in reversed(range(token_rewards.shape[-1])):
            running = token_rewards[:, t] + gamma * running
            returns[:, t] = running
    return torch.where(mask, returns, torch.zeros_like(returns))


def _groups(rewards: Tensor, n_samples_per_prompt: int) -> Tensor:
    """``[B] -> [B/n, n]``; the samples of one prompt are contiguous."""
    if n_samples_per_prompt < 2:
        raise ValueError("grouped estimators need n_samples_per_prompt > 1")
    if rewards.numel() % n_samples_per_prompt:
        raise ValueError(f"batch of {rewards.numel()} is not a multiple of {n_samples_per_prompt}")
    return rewards.float().reshape(-1, n_samples_per_prompt)


def _returns_kwargs(config: AlgoConfig, logp: Tensor | None, logp_ref: Tensor | None) -> dict:
    return dict(
        logp=logp,
        logp_ref=logp_ref,
        kl_coef=config.kl_coef,
        kl_estimator=config.kl_estimator,
        gamma=config.gamma,
        reward_clip=config.reward_clip,
    )


@register_advantage_estimator("reinforce++")
def reinforce_pp_advantages(
    rewards: Tensor,
    action_mask: Tensor,
    config: AlgoConfig,
    *,
    n_samples_per_prompt: int,
    logp: Tensor | None = None,
    logp_ref: Tensor | None = None,
) -> Tensor:
    """Reinforce++: advantages are the returns (batch standardisation comes later, in the filter)."""
    return reinforce_returns(rewards, action_mask, **_returns_kwargs(config, logp, logp_ref))


GRPO_STD_EPS = 1e-8


@register_advantage_estimator("grpo", grouped=True)
def grpo_advantages(
    rewards: Tensor,
    action_mask: Tensor,
    config: AlgoConfig,
    *,
    n_samples_per_prompt: int,
    logp: Tensor | None = None,
    logp_ref: Tensor | None = None,
) -> Tensor:
    """GRPO: (reward - group mean) / (group std + eps), unbiased std, then the Reinforce++ returns.

    The raw reward is clamped first so an outlier cannot leak into its group's statistics.
    """
    clip = config.reward_clip
    g = _groups(rewards.float().clamp(-clip, clip), n_samples_per_prompt)
    shaped = (g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + GRPO_STD_EPS)
    return reinforce_returns(shaped.flatten(), action_mask, **_returns_kwargs(config, logp, logp_ref))


@register_advantage_estimator("rloo", grouped=True)
def rloo_advantages(
    rewards: Tensor,
    action_mask: Tensor,
    config: AlgoConfig,
    *,
    n_samples_per_prompt: int,
    logp: Tensor | None = None,
    logp_ref: Tensor | None = None,
) -> Tensor:
    """RLOO: reward minus the mean reward of the prompt's *other* samples, then the returns."""
    clip = config.reward_clip
    g = _groups(rewards.float().clamp(-clip, clip), n_samples_per_prompt)
    baseline = (g.sum(-1, keepdim=True) - g) / (n_samples_per_prompt - 1)
    return reinforce_returns((g - baseline).flatten(), action_mask, **_returns_kwargs(config, logp, logp_ref))


@ADVANTAGE_FILTER_REGISTRY.register("paper")
def _paper_filter(a_std: Tensor, mean: Tensor, sigma: float) -> Tensor:
    return a_std.abs() <= sigma


@ADVANTAGE_FILTER_REGISTRY.register("released")
def _released_filter(a_std: Tensor, mean: Tensor, sigma: float) -> Tensor:
    # The released code's window is centred on the *raw* mean but applied to the standardised value.
    return (a_std >= mean - sigma) & (a_std <= mean + sigma) & (a_std.abs() <= 10.0)


@ADVANTAGE_FILTER_REGISTRY.register("none")
def _no_filter(a_std: Tensor, mean: Tensor, sigma: float) -> Tensor:
    return torch.ones_like(a_std, dtype=torch.bool)


def normalize_and_filter(
    advantages: Tensor,
    action_mask: Tensor,
    mode: str = "paper",
    sigma: float = 3.0,
    all_reduce: Callable[[Tensor], Tensor | None] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Standardise advantages over all valid action tokens of the batch, then filter outliers.

    ``A_std = (A - mean) / (std + 1e-8)`` with mean and (population) std over valid, finite tokens.
    ``all_reduce`` (optional) sums a small tensor over data-parallel ranks, in place or by return
    value (``torch.distributed.all_reduce`` works), so mean and std are global; it is fed sums and
    counts, which compose across ranks. Modes:

    * ``"paper"``: zero every ``|A_std| > sigma``.
    * ``"released"``: what the released code (``NaiveReplayBuffer.normalize``) does: zero ``A_std``
      outside ``[raw_mean - sigma, raw_mean + sigma]`` (the window is centred on the *raw* mean but
      applied to the standardised value), and zero ``|A_std| > 10``.
    * ``"none"``: standardise only.

    Non-finite advantages are excluded from the statistics, zeroed and counted. Masked positions
    are 0. Stats (``filtered_frac``, ``nonfinite``) are for this rank's tokens; mean/std are global.
    """
    keeps = ADVANTAGE_FILTER_REGISTRY.get(mode)  # an unknown mode fails here, before any work
    valid = action_mask.bool()
    finite = torch.isfinite(advantages)
    used = valid & finite
    a = torch.where(used, advantages, torch.zeros_like(advantages)).double()  # float64: sum of squares

    sums = torch.stack([a.sum(), a.square().sum(), used.sum().double()])
    if all_reduce is not None:
        reduced = all_reduce(sums)
        sums = sums if reduced is None else reduced
    total, total_sq, count = sums.unbind()
    count = count.clamp(min=1.0)
    mean = total / count
    std = (total_sq / count - mean.square()).clamp(min=0.0).sqrt()
    a_std = (a - mean) / (std + 1e-8)

    keep = used & torch.isfinite(a_std) & keeps(a_std, mean, sigma)
    out = torch.where(keep, a_std, torch.zeros_like(a_std)).to(advantages.dtype)

    n_valid = valid.sum().clamp(min=1)
    filtered = (used & ~keep).sum().double() / n_valid
    stats = torch.stack([filtered, (valid & ~finite).sum().double(), mean, std]).tolist()
    return out, dict(zip(("filtered_frac", "nonfinite", "mean", "std"), stats))
