"""The sampler / learner mismatch metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from r1reward.algo.mismatch import mismatch_metrics


def test_identical_log_probs_mean_no_mismatch():
    logp = [[-0.5, -1.0], [-2.0]]
    m = mismatch_metrics(logp, logp)
    assert m["mismatch/kl_k1"] == 0 and m["mismatch/kl_k3"] == 0 and m["mismatch/log_ppl_diff"] == 0
    assert m["mismatch/weight_min"] == m["mismatch/weight_max"] == 1 and m["mismatch/weight_above_cap"] == 0


def test_values_match_the_formulas():
    learner, sampler = [[-1.0, -0.2], [-0.1]], [[-1.5, -0.2], [-1.1]]
    ratios = [0.5, 0.0, 1.0]  # learner - sampler, per token
    m = mismatch_metrics(learner, sampler, weight_cap=2.0)
    assert m["mismatch/kl_k1"] == pytest.approx(-sum(ratios) / 3)
    assert m["mismatch/kl_k3"] == pytest.approx(sum(math.exp(r) - 1 - r for r in ratios) / 3)
    assert m["mismatch/weight_max"] == pytest.approx(math.e) and m["mismatch/weight_min"] == pytest.approx(1.0)
    assert m["mismatch/weight_above_cap"] == pytest.approx(1 / 3)  # only e > 2
    assert m["mismatch/log_ppl_diff"] == pytest.approx((-(0.5 + 0.0) / 2 - 1.0) / 2)  # per sequence, then mean
    assert m["mismatch/kl_k3"] >= 0


def test_empty_completions_are_skipped_and_lengths_must_agree():
    assert mismatch_metrics([[]], [[]]) == {}
    assert mismatch_metrics([[], [-1.0]], [[], [-1.0]])["mismatch/kl_k1"] == 0
    with pytest.raises(ValueError, match="learner log-probs"):
        mismatch_metrics([[-1.0, -2.0]], [[-1.0]])


def test_answer_start_finds_the_last_answer_tag_from_the_end():
    from r1reward.algo.tags import answer_start

    pieces = ["<think>", "red", "</think>", "<ans", "wer>", "2", "</answer>", "<eos>"]
    ids = list(range(len(pieces)))

    def decode(token_ids):
        return "".join(pieces[i] for i in token_ids)

    assert answer_start(ids, decode) == 3  # the tag split over two tokens starts at the first
    assert answer_start(ids[:3], decode) is None  # no tag
    assert answer_start(ids, decode, max_tokens=4) is None  # the tag lies further back than searched
    assert answer_start([], decode) is None


def test_mismatch_by_region_splits_answer_and_reasoning_tokens():
    from r1reward.algo.mismatch import mismatch_by_region

    learner, sampler = [[-1.0, -0.5, -0.2], [-0.3, -0.3]], [[-1.0, -0.4, -0.7], [-0.3, -0.2]]
    # sequence 0: reasoning = 2 tokens (gaps 0, -0.1), answer = 1 token (+0.5); sequence 1: no answer tag
    m = mismatch_by_region(learner, sampler, [2, None])
    assert m["mismatch/answer/max_gap"] == pytest.approx(0.5)
    assert m["mismatch/answer/kl_k3"] == pytest.approx(math.exp(0.5) - 1.5)
    assert m["mismatch/reasoning/max_gap"] == pytest.approx(0.1)
    expected = sum(math.exp(r) - 1 - r for r in (0.0, -0.1, 0.0, -0.1)) / 4
    assert m["mismatch/reasoning/kl_k3"] == pytest.approx(expected)
    assert set(mismatch_by_region(learner, sampler, [None, None])) == {
        "mismatch/reasoning/kl_k3",
        "mismatch/reasoning/max_gap",
    }
