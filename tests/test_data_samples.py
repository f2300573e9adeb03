"""Typed Sample/Batch: each field declares its kind, and batching follows the declaration."""

from __future__ import annotations

import pickle
from dataclasses import fields

import pytest
import torch

from r1reward.data.collate import collate_for_learner
from r1reward.data.samples import DRIVER, MULTIMODAL, PER_SEQUENCE, PER_TOKEN, TOKEN_IDS, Batch, Sample, fields_of_kind
from r1reward.trainer.experience import make_samples


def test_every_field_declares_a_kind_and_batched_kinds_have_a_batch_field():
    kinds = {f.name: f.metadata["kind"] for f in fields(Sample)}
    assert set(kinds.values()) == {TOKEN_IDS, MULTIMODAL, PER_TOKEN, PER_SEQUENCE, DRIVER}
    batch_fields = {f.name for f in fields(Batch)}
    for kind in (MULTIMODAL, PER_TOKEN, PER_SEQUENCE):
        assert set(fields_of_kind(kind)) <= batch_fields, kind
    assert fields_of_kind(PER_SEQUENCE)[0] == "policy_version"


def test_collate_follows_the_declared_kinds_not_the_shapes():
    # A completion of length 1 makes a per-token field look like a scalar list; the declaration decides.
    samples = [
        Sample(prompt_ids=[1, 2], completion_ids=[3], old_logprobs=[-0.5], advantages=[2.0], policy_version=3),
        Sample(prompt_ids=[4], completion_ids=[5], old_logprobs=[-0.25], advantages=[1.0], policy_version=3),
    ]
    batch = collate_for_learner(samples, pad_token_id=0)
    assert batch.advantages.shape == batch.action_mask.shape
    assert batch.advantages[batch.action_mask].tolist() == [2.0, 1.0]
    assert batch.policy_version.tolist() == [3.0, 3.0]
    assert batch.ref_logprobs is None and batch.reward is None  # no sample has them


def test_unknown_dict_keys_are_refused_by_name():
    with pytest.raises(ValueError, match="sample 0: unknown sample field.*'old_logprob'"):
        collate_for_learner([{"prompt_ids": [1], "completion_ids": [2], "old_logprob": [0.0]}], pad_token_id=0)
    with pytest.raises(ValueError, match="sample 0: no 'completion_ids'"):
        collate_for_learner([{"prompt_ids": [1]}], pad_token_id=0)


def test_make_samples_records_the_policy_version_and_for_learner_drops_driver_fields():
    prompt = {
        "prompt_ids": [1, 2],
        "pixel_values": torch.zeros(4, 8),
        "image_grid_thw": torch.tensor([[1, 2, 2]]),
        "label": 2,
    }
    result = {
        "prompt_token_ids": [1, 2],
        "generations": [
            {"token_ids": [7, 8], "logprobs": [-0.1, -0.2], "text": "<answer>2</answer>"},
            {"token_ids": [9], "logprobs": [-0.3], "text": "x"},
        ],
    }
    samples = make_samples([prompt], [result], policy_version=5)
    assert [s.policy_version for s in samples] == [5, 5] and [s.prompt_index for s in samples] == [0, 0]
    assert samples[0].text == "<answer>2</answer>" and samples[0].label == 2
    assert samples[0].pixel_values is prompt["pixel_values"]  # shared, not copied
    slim = samples[0].for_learner()
    assert slim.text is None and slim.label is None and slim.prompt_index is None
    assert slim.sampler_logprobs == [-0.1, -0.2]  # the behaviour policy of the rollout correction
    assert slim.completion_ids == [7, 8] and slim.policy_version == 5
    assert samples[0].text is not None  # the driver's copy keeps them
    restored = pickle.loads(pickle.dumps(slim))  # what crosses Ray
    assert restored.completion_ids == [7, 8] and torch.equal(restored.pixel_values, prompt["pixel_values"])
    with pytest.raises(RuntimeError, match="tokenised a prompt differently"):
        make_samples([prompt], [{**result, "prompt_token_ids": [1]}], policy_version=0)
