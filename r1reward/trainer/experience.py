"""From records to learner samples: prompts for vLLM, generations to samples, rewards to advantages.

Pure functions (no Ray): the driver calls them between the actors' phases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from r1reward.algo import get_advantage_estimator, kl_penalty, normalize_and_filter, seq_mean_token_mean
from r1reward.algo.mismatch import mismatch_by_region, mismatch_metrics
from r1reward.algo.tags import answer_start
from r1reward.config.schema import AlgoConfig
from r1reward.data.records import PreferenceRecord
from r1reward.data.render import encode_rendered, rollout_prompt
from r1reward.data.samples import Sample


def prepare_prompt(processor: Any, record: PreferenceRecord, min_pixels: int, max_pixels: int) -> dict[str, Any]:
    """What vLLM needs (rendered text, resized images) and what the learner needs (ids, pixels)."""
    prompt = rollout_prompt(processor, record, min_pixels, max_pixels)
    encoded = encode_rendered(processor, prompt["prompt"], prompt["images"], min_pixels, max_pixels)
    return {**prompt, "label": record.label, **encoded}


def make_samples(prompts: list[dict[str, Any]], results: list[dict[str, Any]], policy_version: int) -> list[Sample]:
    """One sample per generation, in prompt order (a prompt's n generations are contiguous).
    `policy_version`: the weight-sync version of the policy the rollout workers generated with."""
    samples = []
    for index, (prompt, result) in enumerate(zip(prompts, results)):
        if result["prompt_token_ids"] != prompt["prompt_ids"]:
            raise RuntimeError(
                "vLLM and the learner's processor tokenised a prompt differently; check that both load "
                "the same processor (min/max pixels, chat template)"
            )
        for generation in result["generations"]:
            samples.append(
                Sample(
                    prompt_ids=prompt["prompt_ids"],
                    completion_ids=generation["token_ids"],
                    pixel_values=prompt["pixel_values"],
                    image_grid_thw=prompt["image_grid_thw"],
                    policy_version=policy_version,
                    sampler_logprobs=generation["logprobs"],
                    text=generation["text"],
                    label=prompt["label"],
                    prompt_index=index,
                )
            )
    return samples


def _padded(rows: list[list[float]], width: int) -> torch.Tensor:
    out = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.float32)
    return out


def assign_advantages(
    samples: list[Sample], rewards: list[float], algo: AlgoConfig, n_samples_per_prompt: int
) -> dict[str, float]:
    """Returns (Reinforce++ or a group baseline), then the batch-wide standardisation and 3-sigma filter.
    Writes `advantages` (per completion token) into each sample; returns the filter's statistics.

    With kl_coef > 0, as in the released OpenRLHF Reinforce++, each token's reward is
    -kl_coef * KL(old policy || reference) (k1: logp - logp_ref; k3 optional) and the clamped scalar
    reward is added at the last token, before the returns; samples then need `ref_logprobs`."""
    lengths = [len(s.completion_ids) for s in samples]
    width = max(lengths)
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    logp = logp_ref = None
    metrics: dict[str, float] = {}
    if algo.kl_coef:
        if any(s.ref_logprobs is None for s in samples):
            raise ValueError("algo.kl_coef > 0 needs ref_logprobs from the learners' reference model")
        logp, logp_ref = (
            _padded([s.old_logprobs for s in samples], width),
            _padded([s.ref_logprobs for s in samples], width),
        )
        # Averaged over each sequence's tokens, then over sequences, as OpenRLHF logs it.
        metrics["kl/mean"] = float(seq_mean_token_mean(kl_penalty(logp, logp_ref, algo.kl_estimator), mask))
    estimator = get_advantage_estimator(algo.advantage_estimator)
    raw = estimator(
        torch.tensor(rewards, dtype=torch.float32),
        mask,
        algo,
        n_samples_per_prompt=n_samples_per_prompt,
        logp=logp,
        logp_ref=logp_ref,
    )
    advantages, stats = normalize_and_filter(raw, mask, mode=algo.advantage_filter, sigma=algo.filter_sigma)
    for i, sample in enumerate(samples):
        sample.advantages = advantages[i, : lengths[i]].tolist()
    return {**metrics, **{f"filter/{k}": float(v) for k, v in stats.items()}}


def logprob_gap(samples: list[Sample], decode: Callable[[list[int]], str] | None = None) -> dict[str, float]:
    """How far the learner's recomputed log-probs are from the sampler's (kernels and dtype differ, and
    with trainer.max_staleness > 0 the weights too). With the tokenizer's `decode`, also split into the
    answer tokens and the reasoning before them."""
    gaps = torch.cat([(torch.tensor(s.old_logprobs) - torch.tensor(s.sampler_logprobs)).abs() for s in samples])
    learner, sampler = [s.old_logprobs for s in samples], [s.sampler_logprobs for s in samples]
    regions = {}
    if decode is not None:
        regions = mismatch_by_region(learner, sampler, [answer_start(s.completion_ids, decode) for s in samples])
    return {
        "logprob_gap/mean": float(gaps.mean()),
        "logprob_gap/max": float(gaps.max()),
        **mismatch_metrics(learner, sampler),
        **regions,
    }
