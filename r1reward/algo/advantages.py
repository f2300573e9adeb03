"""Returns, advantage estimators and StableReinforce's advantage normalisation + filter.

Shapes: ``rewards`` is one scalar per sequence ``[B]``; ``action_mask``, log-probs, returns and
advantages are per token ``[B, T]``. Estimators are looked up by name (``get_advantage_estimator``)
and all end in the same Reinforce++ returns, so they differ only in how the scalar reward is shaped.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

AdvantageFn = Callable[..., Tensor]
ADVANTAGE_ESTIMATOR_REGISTRY: dict[str, AdvantageFn] = {}
FILTER_MODES = ("paper", "released", "none")


def register_advantage_estimator(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator: make an estimator available to ``get_advantage_estimator(name)``."""

    def decorator(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGE_ESTIMATOR_REGISTRY:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATOR_REGISTRY[name] = fn
        return fn

    return decorator


def get_advantage_estimator(name: str) -> AdvantageFn:
    """The estimator registered under ``name``; a ``KeyError`` lists the known ones."""
    try:
        return ADVANTAGE_ESTIMATOR_REGISTRY[name]
    except KeyError:
        known = sorted(ADVANTAGE_ESTIMATOR_REGISTRY)
        raise KeyError(f"unknown advantage estimator {name!r}; known: {known}") from None


def kl_penalty(logp: Tensor, logp_ref: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token KL(policy || ref) estimate from samples of the policy (Schulman's k1/k2/k3)."""
    log_ratio = logp - logp_ref
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    if estimator == "k3":
        # exp(-x) - 1 + x; the log-ratio is clamped to +-10 (as OpenRLHF does) so exp stays finite.
        neg = (-log_ratio).clamp(-10.0, 10.0)
        return neg.exp() - 1.0 - neg
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1', 'k2' or 'k3'")


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


@register_advantage_estimator("reinforce++")
def reinforce_pp_advantages(rewards: Tensor, action_mask: Tensor, **cfg) -> Tensor:
    """Reinforce++: advantages are the returns (batch standardisation comes later, in the filter)."""
    return reinforce_returns(rewards, action_mask, **cfg)


@register_advantage_estimator("grpo")
def grpo_advantages(
    rewards: Tensor, action_mask: Tensor, *, n_samples_per_prompt: int, eps: float = 1e-8, **cfg
) -> Tensor:
    """GRPO: (reward - group mean) / (group std + eps), unbiased std, then the Reinforce++ returns.

    The raw reward is clamped first so an outlier cannot leak into its group's statistics.
    """
    clip = cfg.get("reward_clip", 10.0)
    g = _groups(rewards.float().clamp(-clip, clip), n_samples_per_prompt)
    shaped = (g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + eps)
    return reinforce_returns(shaped.flatten(), action_mask, **cfg)


@register_advantage_estimator("rloo")
def rloo_advantages(rewards: Tensor, action_mask: Tensor, *, n_samples_per_prompt: int, **cfg) -> Tensor:
    """RLOO: reward minus the mean reward of the prompt's *other* samples, then the returns."""
    clip = cfg.get("reward_clip", 10.0)
    g = _groups(rewards.float().clamp(-clip, clip), n_samples_per_prompt)
    baseline = (g.sum(-1, keepdim=True) - g) / (n_samples_per_prompt - 1)
    return reinforce_returns((g - baseline).flatten(), action_mask, **cfg)


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
    if mode not in FILTER_MODES:
        raise ValueError(f"unknown filter mode {mode!r}; use one of {FILTER_MODES}")
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

    keep = used & torch.isfinite(a_std)
    if mode == "paper":
        keep &= a_std.abs() <= sigma
    elif mode == "released":
        keep &= (a_std >= mean - sigma) & (a_std <= mean + sigma) & (a_std.abs() <= 10.0)
    out = torch.where(keep, a_std, torch.zeros_like(a_std)).to(advantages.dtype)

    n_valid = valid.sum().clamp(min=1)
    filtered = (used & ~keep).sum().double() / n_valid
    stats = torch.stack([filtered, (valid & ~finite).sum().double(), mean, std]).tolist()
    return out, dict(zip(("filtered_frac", "nonfinite", "mean", "std"), stats))
