"""Bounded staleness (`trainer.max_staleness`, eta): which samples an update may still use.

A sample carries the policy version that generated it (`Sample.policy_version`: the number of weight
syncs the rollout worker had received). At learner version k a sample of version v is k - v versions
stale; one staler than eta is dropped and counted, never trained on. Pure bookkeeping, no Ray.
"""

from __future__ import annotations

from collections.abc import Sequence


def staleness_of(versions: Sequence[int], learner_version: int) -> list[int]:
    """learner_version - v for each sample; a sample from a newer policy than the learner is a bug."""
    ages = [learner_version - v for v in versions]
    if any(age < 0 for age in ages):
        raise ValueError(f"a sample's policy version {max(versions)} is newer than the learner's {learner_version}")
    return ages


def bound_staleness(
    versions: Sequence[int], learner_version: int, max_staleness: int
) -> tuple[list[int], dict[str, float]]:
    """(indices of the samples to keep, metrics): `staleness/0` .. `staleness/<eta>` count the kept
    samples by their staleness (every bucket logged, zeros included, so the columns never change), and
    `staleness/dropped` the samples staler than eta."""
    if max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
    ages = staleness_of(versions, learner_version)
    keep = [i for i, age in enumerate(ages) if age <= max_staleness]
    metrics = {f"staleness/{age}": 0.0 for age in range(max_staleness + 1)}
    for i in keep:
        metrics[f"staleness/{ages[i]}"] += 1
    metrics["staleness/dropped"] = float(len(ages) - len(keep))
    return keep, metrics
