"""The learner's per-micro-batch maths, as plain functions of a model and a collated batch.

The Ray actor (`learner/worker.py`) owns the DeepSpeed engine, the rank vote on non-finite losses,
backward and step; what a micro-batch's loss *is* lives here, so that it can be run and tested on a
plain `torch.nn.Module` exactly as the actor runs it on the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from r1reward.algo import get_policy_loss
from r1reward.algo.correction import rollout_correction
from r1reward.algo.sampling import sampling_logprobs
from r1reward.algo.stats import ACTION_TOKENS, LOSS_TOKENS
from r1reward.config.schema import AlgoConfig
from r1reward.data.collate import model_inputs
from r1reward.data.samples import Batch


@dataclass(frozen=True)
class SamplingParams:
    """What the learner must know of the rollout's sampling to score the same distribution."""

    temperature: float = 1.0
    banned_ids: tuple[int, ...] = ()


def first_completion_column(batch: Batch) -> int:
    """The first column of the [B, T-1] grid where any sample's completion is predicted (0 if none)."""
    columns = batch.action_mask.any(dim=0).nonzero()
    return int(columns[0]) if len(columns) else 0


def token_logprobs(
    model: Any,
    batch: Batch,
    mm_token_ids: tuple[int, int],
    device: torch.device | str,
    completion_only: bool = True,
    sampling: SamplingParams | None = None,
) -> torch.Tensor:
    """Log-prob of each next token under `model`, [B, T-1], aligned with the batch's action mask, in
    the distribution the rollout sampled from (`sampling`: its temperature and banned tokens).

    With `completion_only` the LM head and the softmax run only from the first completion column on
    (transformers' `logits_to_keep`); the prompt columns before it are 0, which the action mask drops. A
    reward-model prompt is most of the sequence (about 400 of 450 tokens here), so this removes most of
    the head's [T, vocab] work from every forward and backward."""
    inputs = {k: v.to(device) for k, v in model_inputs(batch, *mm_token_ids).items()}
    start = first_completion_column(batch) if completion_only else 0
    length = inputs["input_ids"].shape[1]
    logits = model(**inputs, use_cache=False, logits_to_keep=length - start).logits[:, :-1].float()
    targets = inputs["input_ids"][:, start + 1 :]
    sampling = sampling or SamplingParams()
    logp = sampling_logprobs(logits, sampling.temperature, sampling.banned_ids)
    logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.nn.functional.pad(logp, (start, 0))


def policy_loss_on_micro_batch(
    model: Any,
    batch: Batch,
    algo: AlgoConfig,
    mm_token_ids: tuple[int, int],
    device: torch.device | str,
    completion_only: bool = True,
    sampling: SamplingParams | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The configured policy loss (`algo.policy_loss`) of one micro-batch carrying `old_logprobs` and
    `advantages` (and `sampler_logprobs` for `algo.rollout_correction`); the loss reads its own settings
    from `algo`. Returns (loss with grad, loss stats); the stats carry their token counts (`loss_tokens`,
    the tokens the loss is a mean over, and `action_tokens`, every generated token) so that
    `r1reward.algo.stats.reduce_stats` can weight them over micro-batches and ranks."""
    if batch.old_logprobs is None or batch.advantages is None:
        raise ValueError("a policy-loss micro-batch needs old_logprobs and advantages on every sample")
    logp = token_logprobs(model, batch, mm_token_ids, device, completion_only, sampling)
    old = batch.old_logprobs.to(device)
    sampler = batch.sampler_logprobs.to(device) if batch.sampler_logprobs is not None else None
    # Decoupled objective: the behaviour (sampler) policy only reweights or masks the advantages; the
    # loss's ratio stays against the proximal policy (`old_logprobs`). "none" passes them through.
    advantages, mask, correction = rollout_correction(
        old, sampler, batch.advantages.to(device), batch.action_mask.to(device), algo
    )
    loss, stats = get_policy_loss(algo.policy_loss)(logp, old, advantages, mask, algo)
    counts = {LOSS_TOKENS: float(mask.sum()), ACTION_TOKENS: float(batch.action_mask.sum())}
    return loss, {**stats, **correction, **counts}
