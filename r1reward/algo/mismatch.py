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
- the log-perplexity difference per sequence (learner minus sampler), averaged over sequences.
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
