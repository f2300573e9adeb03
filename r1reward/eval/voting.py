"""Majority voting over K sampled judgements, and the inference-scaling curves Voting@K / Any@K.

A vote is the parsed choice of one generation: 1, 2, or None when it does not parse (lenient rule).

Rules (the paper does not state them; these are ours):
- Unparsed votes abstain: the majority is taken over the parsed votes only. A pair where no sample
  parses has no choice and counts as wrong; every unparsed sample is still counted in the
  parse-failure rate, and with K = 1 an unparsed generation is simply a wrong answer.
- Ties (as many 1s as 2s) go to the earliest parsed vote, i.e. the choice of the first sample that
  voted for either side. So Voting@2 equals Voting@1 whenever the first sample parses, rather than
  being pulled down by a "tie = wrong" rule that would penalise even K.
"""

from __future__ import annotations

from collections.abc import Sequence

Vote = int | None


def majority_vote(votes: Sequence[Vote]) -> Vote:
    """1 or 2 by majority of the parsed votes (ties: the earliest parsed vote); None if none parsed."""
    ones, twos = sum(v == 1 for v in votes), sum(v == 2 for v in votes)
    if ones != twos:
        return 1 if ones > twos else 2
    return next((v for v in votes if v in (1, 2)), None)


def vote_share(votes: Sequence[Vote], choice: Vote) -> float:
    """The fraction of all K samples (unparsed ones included) that voted for ``choice``."""
    if not votes or choice is None:
        return 0.0
    return sum(v == choice for v in votes) / len(votes)


def voting_correct(votes: Sequence[Vote], label: int, k: int) -> bool:
    """Voting@k for one pair: the majority of the first k samples is the label."""
    return majority_vote(votes[:k]) == label


def any_correct(votes: Sequence[Vote], label: int, k: int) -> bool:
    """Any@k for one pair: at least one of the first k samples chose the label."""
    return label in votes[:k]
