"""Adding a policy loss is one decorated function and one config value (no Ray, no DeepSpeed).

The loss below is registered, a config naming it passes validation, and one optimizer step on the
tiny Qwen2.5-VL runs it through `policy_loss_on_micro_batch`, the function the learner rank calls
for every micro-batch."""

from __future__ import annotations

import math

import pytest
import torch

from r1reward.algo import register_policy_loss
from r1reward.config import ConfigError, load_config
from r1reward.config.schema import AlgoConfig
from r1reward.data.collate import collate_for_learner
from r1reward.data.readers import read_records
from r1reward.data.render import encode_prompt
from r1reward.data.samples import Sample
from r1reward.learner.loss import policy_loss_on_micro_batch

CALLS: list[AlgoConfig] = []


@register_policy_loss("test_plain_pg")
def plain_policy_gradient(logp, logp_old, advantages, action_mask, config: AlgoConfig):
    """Vanilla policy gradient, -A * logp averaged over the generated tokens."""
    CALLS.append(config)
    mask = action_mask.float()
    loss = -(advantages * logp * mask).sum() / mask.sum().clamp(min=1)
    return loss, {"tokens": float(mask.sum())}


def test_config_validation_takes_the_name_from_the_registry():
    config = load_config(overrides=["algo.policy_loss=test_plain_pg"])
    assert config.algo.policy_loss == "test_plain_pg"
    with pytest.raises(ConfigError, match="test_plain_pg") as error:  # the error lists what is registered
        load_config(overrides=["algo.policy_loss=not_registered"])
    assert "stable_reinforce" in str(error.value) and "not_registered" in str(error.value)


def test_a_registered_loss_trains_one_micro_batch(tiny_model_dir, synthetic_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    config = load_config(overrides=["algo.policy_loss=test_plain_pg"])
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32)
    records = list(read_records(synthetic_dir / "pairs.jsonl", "canonical"))[:2]
    completion = processor.tokenizer("<think>The image shows", add_special_tokens=False).input_ids
    samples = [
        Sample(
            **encode_prompt(processor, record, synthetic_dir),
            completion_ids=completion,
            old_logprobs=[-1.0] * len(completion),
            advantages=[advantage] * len(completion),
        )
        for record, advantage in zip(records, (1.0, -0.5))
    ]
    batch = collate_for_learner(samples, pad_token_id=0)
    assert batch.pixel_values is not None  # the multimodal path, as in training
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    CALLS.clear()
    mm_token_ids = (model.config.image_token_id, model.config.video_token_id)
    loss, stats = policy_loss_on_micro_batch(model, batch, config.algo, mm_token_ids, "cpu")
    loss.backward()
    optimizer.step()

    assert CALLS == [config.algo] and CALLS[0] is config.algo  # called once, with the run's algo config
    tokens = 2.0 * len(completion)  # the loss's own stat, then the counts the learner weights stats by
    assert stats == {"tokens": tokens, "loss_tokens": tokens, "action_tokens": tokens}
    assert torch.isfinite(loss)
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("lm_head") or "language_model" in name for name in changed), changed


SEEN: list[tuple] = []


@register_policy_loss("test_capture")
def capture(logp, logp_old, advantages, action_mask, config: AlgoConfig):
    """Records what the learner hands a loss; the loss is the plain token mean of -A * logp."""
    SEEN.append((advantages.clone(), action_mask.clone()))
    return -(advantages * logp * action_mask).sum() / action_mask.sum().clamp(min=1), {}


def test_the_learner_hands_every_loss_the_corrected_advantages():
    from types import SimpleNamespace

    from r1reward.algo.correction import rollout_correction

    # Two samples of 3 completion tokens; the sampler (behaviour) lies below the learner's old log-probs.
    old, sampler = [[-1.0, -0.5, -2.0], [-0.2, -0.2, -0.2]], [[-1.0, -2.0, -1.5], [-0.2, -0.9, -0.2]]
    samples = [
        Sample(prompt_ids=[1, 2], completion_ids=[3, 4, 5], old_logprobs=o, sampler_logprobs=s, advantages=[1.0] * 3)
        for o, s in zip(old, sampler)
    ]
    batch = collate_for_learner(samples, pad_token_id=0)

    def model(input_ids, attention_mask, use_cache, logits_to_keep):  # uniform logits: no weights needed
        return SimpleNamespace(logits=torch.zeros(input_ids.shape[0], logits_to_keep, 8, requires_grad=True))

    for name in ("none", "tis", "mask_token"):
        algo = AlgoConfig(policy_loss="test_capture", rollout_correction=name)
        SEEN.clear()
        _, stats = policy_loss_on_micro_batch(model, batch, algo, (6, 7), "cpu")
        expected = rollout_correction(
            batch.old_logprobs, batch.sampler_logprobs, batch.advantages, batch.action_mask, algo
        )
        assert torch.equal(SEEN[0][0], expected[0]) and torch.equal(SEEN[0][1], expected[1])
        assert (name == "none") == (not any(key.startswith("correction/") for key in stats))
        if name == "tis":  # log w = old - sampler = [0, 1.5, -0.5] and [0, 0.7, 0]; e^1.5 and e^0.7 capped at 2
            assert SEEN[0][0][batch.action_mask].tolist() == pytest.approx([1, 2, math.exp(-0.5), 1, 2, 1])
        if name == "mask_token":  # the two tokens above the cap leave the loss
            assert SEEN[0][1][batch.action_mask].tolist() == [True, False, True, True, False, True]
