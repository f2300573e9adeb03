"""How far the sampler's distribution is from the learner's, on the tokens the sampler drew.

vLLM samples with its own kernels (and, on a GPU, in bf16) while the learner recomputes log-probs with
DeepSpeed; the two disagree a little, and the PPO ratio is taken against the learner's numbers, so the
sampler's distribution is never corrected for. These are the per-step measures that verl's rollout
correction logs, from which a correction (a truncated importance weight) would be chosen:

- `log_ratio` = log pi_learner(y) - log pi_sampler(y) per sampled token;
- KL(sampler || learner), estimated from the sampler's own samples: k1 = E[-log_ratio] and
  k3 = E[exp(log_ratio) - 1 - log_ratio] (non-negative, lower variance);
- the importance weight w = exp(log_ratio): mean, min, max and the fraction above `weight_cap`, the
  tokens a truncated importance weight (TIS) at that cap would clip;
- the log-perplexity difference per sequence (learner minus sampler), averaged over sequences;
- `mismatch_by_region`: k3 and the largest |log_ratio| on the answer tokens (the last ``<answer>`` tag
  and what follows: the verdict) and on the reasoning before them. It is not a split into image-
  dependent and text tokens: finding the tokens whose log-prob depends on the image would take a second
  learner forward per sample with the image swapped; the verdict is the token the reward reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def mismatch_metrics(
    learner_logprobs: Sequence[Sequence[float]], sampler_logprobs: Sequence[Sequence[float]], weight_cap: float = 2.0
) -> dict[str, float]:
    """Per-token comparison of two log-prob lists of the same sampled sequences (one list per sequence)."""
    if len(learner_logprobs) != len(sampler_logprobs):
        raise ValueError(f"{len(learner_logprobs)} learner sequences but {len(sampler_logprobs)} sampler ones")
    ratios, ppl_diffs = [], []
    for learner, sampler in zip(learner_logprobs, sampler_logprobs):
        if len(learner) != len(sampler):
            raise ValueError(f"a sequence has {len(learner)} learner log-probs but {len(sampler)} sampler ones")
        if not len(learner):
            continue  # an empty completion has nothing to compare
        log_ratio = torch.tensor(learner, dtype=torch.float64) - torch.tensor(sampler, dtype=torch.float64)
        ratios.append(log_ratio)
        ppl_diffs.append(float(-log_ratio.mean()))  # mean(-learner) - mean(-sampler)
    if not ratios:
        return {}
    log_ratio = torch.cat(ratios)
    weight = log_ratio.exp()
    return {
        "mismatch/kl_k1": float((-log_ratio).mean()),
        "mismatch/kl_k3": float((weight - 1 - log_ratio).mean()),
        "mismatch/weight_mean": float(weight.mean()),
        "mismatch/weight_min": float(weight.min()),
        "mismatch/weight_max": float(weight.max()),
        "mismatch/weight_above_cap": float((weight > weight_cap).double().mean()),
        "mismatch/log_ppl_diff": sum(ppl_diffs) / len(ppl_diffs),
    }


def mismatch_by_region(
    learner_logprobs: Sequence[Sequence[float]],
    sampler_logprobs: Sequence[Sequence[float]],
    answer_starts: Sequence[int | None],
) -> dict[str, float]:
    """k3 and max |log_ratio| over the answer tokens (from each sequence's `answer_starts`; None: no
    answer tag) and over the tokens before them; a region with no token in the batch is left out."""
    regions: dict[str, list[torch.Tensor]] = {"answer": [], "reasoning": []}
    for learner, sampler, start in zip(learner_logprobs, sampler_logprobs, answer_starts, strict=True):
        log_ratio = torch.tensor(learner, dtype=torch.float64) - torch.tensor(sampler, dtype=torch.float64)
        cut = len(log_ratio) if start is None else start
        regions["reasoning"].append(log_ratio[:cut])
        regions["answer"].append(log_ratio[cut:])
    out = {}
    for name, parts in regions.items():
        log_ratio = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
        if log_ratio.numel():
            out[f"mismatch/{name}/kl_k3"] = float((log_ratio.exp() - 1 - log_ratio).mean())
            out[f"mismatch/{name}/max_gap"] = float(log_ratio.abs().max())
    return out
