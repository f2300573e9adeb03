"""collate_for_learner: padding, next-token-aligned masks and fields, pixel concatenation; replicate."""

from __future__ import annotations

import pytest
import torch

from r1reward.data.collate import collate_for_learner, replicate

PAD = 0
PATCH_DIM = 1176


def sample(prompt: list[int], completion: list[int], grid: list[list[int]] | None = None, **extra) -> dict:
    grid_t = torch.tensor(grid or [], dtype=torch.long).reshape(-1, 3)
    n_patches = int(grid_t.prod(-1).sum()) if len(grid_t) else 0
    return {
        "prompt_ids": prompt,
        "completion_ids": completion,
        "pixel_values": torch.randn(n_patches, PATCH_DIM),
        "image_grid_thw": grid_t,
        **extra,
    }


def test_padding_and_masks():
    batch = collate_for_learner([sample([11, 12, 13], [21, 22]), sample([14], [23, 24, 25, 26])], pad_token_id=PAD)
    assert batch.input_ids.tolist() == [[11, 12, 13, 21, 22], [14, 23, 24, 25, 26]]
    batch = collate_for_learner([sample([11, 12, 13], [21]), sample([14], [23, 24])], pad_token_id=PAD)
    assert batch.input_ids.tolist() == [[11, 12, 13, 21], [14, 23, 24, PAD]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    # action_mask[t] is True iff token t+1 is a completion token.
    assert batch.action_mask.tolist() == [[False, False, True], [True, True, False]]
    assert batch.action_mask.dtype == torch.bool
    assert batch.prompt_lengths.tolist() == [3, 1] and batch.completion_lengths.tolist() == [1, 2]


def test_action_mask_selects_completion_targets():
    samples = [sample([5, 6, 7, 8], [40, 41, 42]), sample([9, 10], [43]), sample([1, 2, 3], [44, 45])]
    batch = collate_for_learner(samples, pad_token_id=PAD)
    targets = batch.input_ids[:, 1:]
    assert batch.action_mask.shape == (3, batch.input_ids.shape[1] - 1)
    for b, s in enumerate(samples):
        assert targets[b][batch.action_mask[b]].tolist() == s["completion_ids"]
    assert int(batch.action_mask.sum()) == 6


def test_per_token_fields_on_the_action_grid():
    samples = [
        sample(
            [1, 2], [3, 4, 5], old_logprobs=[-0.1, -0.2, -0.3], advantages=torch.tensor([1.0, 1.0, 1.0]), reward=2.0
        ),
        sample([6, 7, 8, 9], [10], old_logprobs=[-0.5], advantages=torch.tensor([-1.0]), reward=0.5),
    ]
    batch = collate_for_learner(samples, pad_token_id=PAD)
    mask = batch.action_mask
    for key in ("old_logprobs", "advantages"):
        grid = getattr(batch, key)
        assert grid.shape == mask.shape and grid.dtype == torch.float32
        assert torch.all(grid[~mask] == 0)
    assert batch.old_logprobs[0][mask[0]].tolist() == pytest.approx([-0.1, -0.2, -0.3])
    assert batch.old_logprobs[1][mask[1]].tolist() == pytest.approx([-0.5])
    assert batch.old_logprobs[0].tolist() == pytest.approx([0.0, -0.1, -0.2, -0.3])
    assert batch.reward.tolist() == [2.0, 0.5]


def test_per_token_field_length_must_match():
    with pytest.raises(ValueError, match="old_logprobs"):
        collate_for_learner([sample([1], [2, 3], old_logprobs=[-0.1])], pad_token_id=PAD)


def test_field_missing_from_some_samples():
    with pytest.raises(ValueError, match="advantages"):
        collate_for_learner([sample([1], [2], advantages=[1.0]), sample([1], [2])], pad_token_id=PAD)


def test_pixels_concatenated_in_sample_order():
    a = sample([1, 2], [3], grid=[[1, 2, 2]])
    b = sample([4], [5], grid=[])  # text only
    c = sample([6], [7, 8], grid=[[1, 2, 4], [1, 2, 2]])
    batch = collate_for_learner([a, b, c], pad_token_id=PAD)
    assert batch.image_grid_thw.tolist() == [[1, 2, 2], [1, 2, 4], [1, 2, 2]]
    assert batch.pixel_values.shape == (4 + 8 + 4, PATCH_DIM)
    assert torch.equal(batch.pixel_values[:4], a["pixel_values"])
    assert torch.equal(batch.pixel_values[4:], c["pixel_values"])


def test_text_only_batch_has_no_pixels():
    batch = collate_for_learner([sample([1], [2])], pad_token_id=PAD)
    assert batch.pixel_values is None and batch.image_grid_thw is None


def test_grid_and_pixels_must_agree():
    bad = sample([1], [2], grid=[[1, 2, 2]])
    bad["pixel_values"] = torch.randn(3, PATCH_DIM)
    with pytest.raises(ValueError, match="patches"):
        collate_for_learner([bad], pad_token_id=PAD)


def test_replicate_shares_pixels_and_collates_one_copy_per_sample():
    prompt = {
        "prompt_ids": [1, 2, 3],
        "pixel_values": torch.randn(8, PATCH_DIM),
        "image_grid_thw": torch.tensor([[1, 2, 4]]),
    }
    copies = replicate(prompt, 3)
    assert len(copies) == 3
    assert all(c["pixel_values"] is prompt["pixel_values"] for c in copies)  # no pixel copy per sample
    copies[0]["prompt_ids"].append(99)  # the id lists are independent
    assert prompt["prompt_ids"] == [1, 2, 3] and copies[1]["prompt_ids"] == [1, 2, 3]
    samples = [{**c, "completion_ids": [7] * (i + 1)} for i, c in enumerate(replicate(prompt, 3))]
    batch = collate_for_learner(samples, pad_token_id=PAD)
    assert batch.pixel_values.shape == (24, PATCH_DIM)
    assert torch.equal(batch.pixel_values[16:], prompt["pixel_values"])
    assert batch.image_grid_thw.tolist() == [[1, 2, 4]] * 3
    assert batch.action_mask.sum(1).tolist() == [1, 2, 3]
    with pytest.raises(ValueError):
        replicate(prompt, 0)
