"""Rollout correction: the decoupled PPO objective of AReaL, for samples from another policy.

Three policies meet in an update. The *behaviour* policy generated the tokens (the sampler: vLLM's
log-probs, `Sample.sampler_logprobs`, possibly some weight versions behind with `trainer.max_staleness`
> 0); the *proximal* policy is the learner's own recomputation before the update (`old_logprobs`); the
policy being trained is the current one. The PPO ratio (Pre-CLIPped in StableReinforce) is taken
against the proximal policy as before, and the behaviour policy enters only through the importance
weight w = pi_prox / pi_behav = exp(old_logprobs - sampler_logprobs), which is detached.

Every registered loss is ``max(-r * A, -clip(r) * A)`` per token, and for w >= 0
``w * max(-r * A, -clip(r) * A) = max(-r * (w A), -clip(r) * (w A))``: the weighted loss is the same
loss on advantages ``w * A``. So a correction returns new advantages and a new action mask and any
registered loss (``fn(logp, logp_old, adv, mask, config)``) runs unchanged on them:

- ``none``: the advantages and mask as they are (the loss of a run without correction, exactly);
- ``tis``: truncated importance sampling, ``A * min(w, cap)`` (verl's token-level TIS);
- ``mask_token``: ``A * w`` on tokens with ``w <= cap``; tokens above the cap leave the mask (AReaL's
  ``behav_imp_weight_cap``: they count neither in the loss nor in its per-sequence token mean);
- ``mask_sequence``: as ``mask_token``, and on top a sequence whose geometric-mean weight
  ``exp(mean log w)`` (over all its generated tokens) is above the cap or below 1 / cap leaves the mask
  whole (verl's geometric rejection level). Unlike verl's mask mode, the tokens of a sequence that stays
  keep no weight above the cap: a geometric mean inside the bounds can hide one token at an unbounded
  weight, and the cap is there so that none reaches the loss.

With every correction the weights in the loss are at most the cap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from r1reward.algo.registry import Registry

if TYPE_CHECKING:
    from r1reward.config.schema import AlgoConfig

# (mask, log_w, cap) -> (per-token weight, kept mask); log_w = proximal - behaviour log-probs, 0 off the mask.
CorrectionFn = Callable[[Tensor, Tensor, float], tuple[Tensor, Tensor]]
ROLLOUT_CORRECTION_REGISTRY: Registry[CorrectionFn] = Registry("rollout correction")


@ROLLOUT_CORRECTION_REGISTRY.register("none")
def no_correction(mask: Tensor, log_w: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    return torch.ones_like(log_w), mask


@ROLLOUT_CORRECTION_REGISTRY.register("tis")
def truncated_weight(mask: Tensor, log_w: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    return log_w.exp().clamp(max=cap), mask


@ROLLOUT_CORRECTION_REGISTRY.register("mask_token")
def masked_weight_token(mask: Tensor, log_w: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    weight = log_w.exp()
    return weight, mask & (weight <= cap)


@ROLLOUT_CORRECTION_REGISTRY.register("mask_sequence")
def masked_weight_sequence(mask: Tensor, log_w: Tensor, cap: float) -> tuple[Tensor, Tensor]:
    weight, kept_tokens = masked_weight_token(mask, log_w, cap)
    counts = mask.sum(dim=-1, keepdim=True).clamp(min=1)
    geo_mean = ((log_w * mask).sum(dim=-1, keepdim=True) / counts).exp()
    return weight, kept_tokens & (geo_mean <= cap) & (geo_mean >= 1.0 / cap)


def correction_weights(
    old_logprobs: Tensor, sampler_logprobs: Tensor, mask: Tensor, config: AlgoConfig
) -> tuple[Tensor, Tensor]:
    """(per-token weight, kept mask) of `config.rollout_correction`; the weight is detached."""
    mask = mask.bool()
    # Zero off the mask before exp, as the losses do: padding never makes inf or NaN.
    log_w = torch.where(mask, old_logprobs - sampler_logprobs, torch.zeros_like(old_logprobs)).detach()
    fn = ROLLOUT_CORRECTION_REGISTRY.get(config.rollout_correction)
    return fn(mask, log_w, config.rollout_correction_cap)


def rollout_correction(
    old_logprobs: Tensor, sampler_logprobs: Tensor | None, advantages: Tensor, mask: Tensor, config: AlgoConfig
) -> tuple[Tensor, Tensor, dict[str, float]]:
    """The advantages and action mask to hand to the policy loss under `config.rollout_correction`, and
    its statistics: `correction/weight_mean` (over the kept tokens) and `correction/masked_frac`."""
    mask = mask.bool()
    if config.rollout_correction == "none":  # today's inputs, untouched: the loss is the same to the bit
        return advantages, mask, {}
    if sampler_logprobs is None:
        raise ValueError(f"algo.rollout_correction={config.rollout_correction} needs the samples' sampler_logprobs")
    weight, keep = correction_weights(old_logprobs, sampler_logprobs, mask, config)
    corrected = torch.where(keep, advantages * weight, torch.zeros_like(advantages))
    with torch.no_grad():
        stats = {
            "correction/weight_mean": float(weight[keep].mean()) if keep.any() else 1.0,
            "correction/masked_frac": float((mask & ~keep).sum() / mask.sum().clamp(min=1)),
        }
    return corrected, keep, stats
