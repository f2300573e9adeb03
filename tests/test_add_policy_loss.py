"""Adding a policy loss is one decorated function and one config value (no Ray, no DeepSpeed).

The loss below is registered, a config naming it passes validation, and one optimizer step on the
tiny Qwen2.5-VL runs it through `policy_loss_on_micro_batch`, the function the learner rank calls
for every micro-batch."""

from __future__ import annotations

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
    assert stats == {"tokens": 2.0 * len(completion)}
    assert torch.isfinite(loss)
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert any(name.startswith("lm_head") or "language_model" in name for name in changed), changed
