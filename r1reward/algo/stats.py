"""Training statistics combined over micro-batches and over ranks, each by its kind.

The learner reduces its micro-batches' statistics with `reduce_stats`, and the driver the ranks'
results with the same function, so a step's row means the same thing whatever the micro-batch size or
the number of ranks. A statistic's name says how it combines:

- ``*_max`` / ``*_min``: the maximum / minimum (``ratio_max`` is the largest ratio of the whole step);
- ``*_tokens``: a count, added up;
- anything else: a mean over tokens, weighted by its count (``loss_tokens``, the tokens of the loss's
  mask, unless `DENOMINATORS` names another), so that a fraction of tokens comes out as if measured on
  all the step's tokens at once. Statistics that are the same on every rank (``lr``, ``grad_norm``)
  come out unchanged. Where no part has a count the mean is unweighted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

LOSS_TOKENS = "loss_tokens"
ACTION_TOKENS = "action_tokens"
# Means over other tokens than the loss's (the rollout correction's masked fraction is over every
# generated token, including those it removed from the loss).
DENOMINATORS = {"correction/masked_frac": ACTION_TOKENS}


def reduce_stats(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """One dict from many (micro-batches or ranks), key by key; a key missing from a part is left out of
    that key's reduction."""
    parts = list(parts)
    keys = list(dict.fromkeys(key for part in parts for key in part))
    out = {}
    for key in keys:
        present = [part for part in parts if key in part]
        values = [float(part[key]) for part in present]
        if key.endswith("_max"):
            out[key] = max(values)
        elif key.endswith("_min"):
            out[key] = min(values)
        elif key.endswith("_tokens"):
            out[key] = sum(values)
        else:
            weights = [float(part.get(DENOMINATORS.get(key, LOSS_TOKENS), 0.0)) for part in present]
            total = sum(weights)
            if total > 0:
                out[key] = sum(v * w for v, w in zip(values, weights) if w > 0) / total
            else:
                out[key] = sum(values) / len(values)
    return out
