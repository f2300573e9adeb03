"""The distribution the rollout samples from, spelt out once so the learner scores the same one.

vLLM draws each token from softmax((logits + bias) / temperature) and returns the log-prob of that
processed distribution (`logprobs_mode="processed_logprobs"`). The ratio, the gradient and the KL are
only about the sampling policy if the learner applies the same bias and temperature; top-p and top-k
would cut the support too, so RL refuses them at start-up (config/load.py) rather than approximate them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# A random or young model can sample vision special tokens; a completion holding one breaks the
# learner's forward ("image features and image tokens do not match"), so the sampler biases them away.
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
BANNED_TOKEN_BIAS = -100.0
VLLM_LOGPROBS_MODE = "processed_logprobs"


def sampling_logprobs(logits: Tensor, temperature: float = 1.0, banned_ids: Sequence[int] = ()) -> Tensor:
    """log softmax((logits + bias) / temperature) over the last dimension, as vLLM's sampler computes it
    (the bias first, then the temperature). `logits` are float32; a new tensor is returned."""
    if temperature <= 0:
        raise ValueError(f"the sampling temperature must be > 0, got {temperature}")
    if banned_ids:
        logits = logits.clone()
        logits[..., list(banned_ids)] += BANNED_TOKEN_BIAS
    if temperature != 1.0:
        logits = logits / temperature
    return torch.log_softmax(logits, dim=-1)
