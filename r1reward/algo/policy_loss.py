"""Policy-gradient losses: plain PPO/Reinforce++ clipping and StableReinforce's Pre-CLIP.

Every loss has one signature, ``(logp, logp_old, advantages, action_mask, config) -> (loss, stats)``:
``logp`` are the current policy's per-token log-probs ``[B, T]`` (with grad), ``logp_old`` the
sampler's, ``advantages`` the per-token advantages, ``action_mask`` marks generated tokens and
``config`` is the run's ``AlgoConfig``, from which a loss reads its own settings (clip range, bounds).
Losses are looked up by name (``get_policy_loss("stable_reinforce")``) in the style of verl's
``core_algos``: a new loss is one function decorated with ``@register_policy_loss("name")``, and
``algo.policy_loss=name`` selects it; the learner never names a loss.

The clipped losses report, over the loss's tokens: ``clip_frac`` (the PPO clip was active),
``pre_clip_frac`` (Pre-CLIP bounded the log-ratio), ``ratio_mean`` and ``ratio_max`` of the *raw*
importance ratio ``exp(logp - logp_old)`` (the same meaning for every loss, whether or not it then
Pre-CLIPs it), and ``approx_kl``. The learner combines them over micro-batches and ranks by kind
(``r1reward.algo.stats``): ``ratio_max`` is the step's maximum, the others are token-weighted means.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from r1reward.algo.registry import Registry

if TYPE_CHECKING:  # only for type hints: the config schema is plain data
    from r1reward.config.schema import AlgoConfig

PolicyLossFn = Callable[[Tensor, Tensor, Tensor, Tensor, "AlgoConfig"], tuple[Tensor, dict[str, float]]]
POLICY_LOSS_REGISTRY: Registry[PolicyLossFn] = Registry("policy loss")


def register_policy_loss(name: str) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Decorator: make a loss available to ``get_policy_loss(name)`` and to ``algo.policy_loss``."""
    return POLICY_LOSS_REGISTRY.register(name)


def get_policy_loss(name: str) -> PolicyLossFn:
    """The loss registered under ``name``; an unknown name (a ``KeyError``) lists the registered ones."""
    return POLICY_LOSS_REGISTRY.get(name)


# Reported ratios saturate here (a log-ratio of about 690): a finite number in the metrics (JSON has no
# inf), and far beyond any ratio of a run that is not already broken.
_LOG_MAX_REPORTED_RATIO = math.log(1e300)


@dataclass(frozen=True)
class _Surrogate:
    losses: Tensor  # per-token loss, 0 at masked positions
    ratio: Tensor  # the ratio the loss uses (after Pre-CLIP if on); the stats report the raw one
    log_ratio: Tensor  # raw logp - logp_old, 0 at masked positions
    clipped: Tensor  # bool: the PPO-clipped term was the active one
    pre_clipped: Tensor  # bool: Pre-CLIP changed the log-ratio


def _surrogate(
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    eps_low: float,
    eps_high: float,
    log_ratio_bounds: tuple[float, float] | None,
) -> _Surrogate:
    # Zero the inputs at masked positions *before* exp: whatever sits there (padding garbage, inf)
    # can then neither change the loss nor send NaN through the backward pass.
    log_ratio = torch.where(mask, logp - logp_old, torch.zeros_like(logp))
    adv = torch.where(mask, advantages, torch.zeros_like(advantages))
    if log_ratio_bounds is None:
        used = log_ratio
    else:
        # Pre-CLIP: bound the log-ratio so exp() can never explode on a stale token.
        used = log_ratio.clamp(log_ratio_bounds[0], log_ratio_bounds[1])
    ratio = torch.exp(used)
    unclipped = -ratio * adv
    clipped = -ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    losses = torch.where(mask, torch.maximum(unclipped, clipped), torch.zeros_like(unclipped))
    return _Surrogate(
        losses=losses,
        ratio=ratio,
        log_ratio=log_ratio,
        clipped=mask & (clipped > unclipped),
        pre_clipped=mask & (used != log_ratio),
    )


def token_losses(
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    action_mask: Tensor | None = None,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    pre_clip: bool = True,
    delta_min: float = 1e-3,
    delta_max: float = 1e3,
) -> Tensor:
    """Per-token ``-min(ratio*A, clip(ratio, 1-eps_low, 1+eps_high)*A)``; 0 where masked.

    With ``pre_clip`` the ratio is ``exp(clamp(logp - logp_old, log delta_min, log delta_max))``.
    """
    mask = torch.ones_like(logp, dtype=torch.bool) if action_mask is None else action_mask.bool()
    bounds = (math.log(delta_min), math.log(delta_max)) if pre_clip else None
    return _surrogate(logp, logp_old, advantages, mask, eps_low, eps_high, bounds).losses


def seq_mean_token_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over each sequence's valid tokens, then mean over the sequences that have any.

    Sequences with no valid token are left out of the outer mean (they carry no signal); if no
    sequence has one the result is 0, still attached to the graph, never NaN.
    """
    mask = mask.bool()
    values = torch.where(mask, values, torch.zeros_like(values))
    counts = mask.sum(dim=-1)
    per_seq = values.sum(dim=-1) / counts.clamp(min=1)
    n_seqs = (counts > 0).sum().clamp(min=1)
    return per_seq.sum() / n_seqs


def _clip_loss(
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    action_mask: Tensor,
    eps_low: float,
    eps_high: float,
    log_ratio_bounds: tuple[float, float] | None,
) -> tuple[Tensor, dict[str, float]]:
    mask = action_mask.bool()
    s = _surrogate(logp, logp_old, advantages, mask, eps_low, eps_high, log_ratio_bounds)
    loss = seq_mean_token_mean(s.losses, mask)
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        lr = s.log_ratio.detach().double()
        # The raw importance ratio, before Pre-CLIP and the PPO clip, for every loss: the largest ratio
        # the data held is what ratio_max shows; how often Pre-CLIP bounded one is pre_clip_frac.
        raw = lr.clamp(max=_LOG_MAX_REPORTED_RATIO).exp()
        ratio = torch.where(mask, raw, torch.zeros_like(raw))
        # k2 = 0.5 * log_ratio^2: non-negative, and finite for any finite gap (unlike k3's exp).
        values = torch.stack(
            [
                s.clipped.sum() / n,
                ratio.sum() / n,
                ratio.max(),  # 0 off the mask, and every ratio is > 0
                s.pre_clipped.sum() / n,
                (0.5 * lr.square()).sum() / n,
            ]
        ).tolist()  # one device sync for all stats
    names = ("clip_frac", "ratio_mean", "ratio_max", "pre_clip_frac", "approx_kl")
    return loss, dict(zip(names, values))


@register_policy_loss("ppo")
def ppo_loss(
    logp: Tensor, logp_old: Tensor, advantages: Tensor, action_mask: Tensor, config: AlgoConfig
) -> tuple[Tensor, dict[str, float]]:
    """Reinforce++/PPO clipped surrogate with ``ratio = exp(logp - logp_old)`` (no Pre-CLIP)."""
    return _clip_loss(logp, logp_old, advantages, action_mask, config.eps_clip, config.eps_clip, None)


@register_policy_loss("stable_reinforce")
def stable_reinforce_loss(
    logp: Tensor, logp_old: Tensor, advantages: Tensor, action_mask: Tensor, config: AlgoConfig
) -> tuple[Tensor, dict[str, float]]:
    """StableReinforce: PPO clip on a Pre-CLIPped ratio ``exp(clamp(log-ratio, log delta_min, log delta_max))``."""
    delta_min, delta_max = config.delta_min, config.delta_max
    if not 0.0 < delta_min <= 1.0 <= delta_max:
        raise ValueError(f"need 0 < delta_min <= 1 <= delta_max, got {delta_min}, {delta_max}")
    bounds = (math.log(delta_min), math.log(delta_max))
    return _clip_loss(logp, logp_old, advantages, action_mask, config.eps_clip, config.eps_clip, bounds)
