"""The learner's log-probs are those of the distribution vLLM samples from (algo/sampling.py)."""

from __future__ import annotations

import pytest
import torch

from r1reward.algo.sampling import BANNED_TOKEN_BIAS, sampling_logprobs


def test_temperature_one_without_bans_is_the_plain_log_softmax():
    logits = torch.randn(3, 5, 11)
    assert torch.equal(sampling_logprobs(logits), torch.log_softmax(logits, dim=-1))


def test_temperature_and_bias_match_vllms_order_bias_first_then_temperature():
    logits = torch.randn(2, 7, 13)
    banned = (2, 9)
    want = logits.clone()
    want[..., list(banned)] += BANNED_TOKEN_BIAS
    want = torch.log_softmax(want / 0.7, dim=-1)
    got = sampling_logprobs(logits, 0.7, banned)
    assert torch.allclose(got, want)
    assert not torch.allclose(got, torch.log_softmax(logits, dim=-1), atol=1e-2)
    # The caller's logits are not changed in place.
    assert not torch.equal(logits, want)


def test_a_sharper_temperature_raises_the_argmax_log_prob():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert sampling_logprobs(logits, 0.5)[0, 0] > sampling_logprobs(logits, 1.0)[0, 0]


def test_non_positive_temperature_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        sampling_logprobs(torch.zeros(1, 3), 0.0)
