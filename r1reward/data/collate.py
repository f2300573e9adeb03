"""Batching prompt+completion samples for the learner's forward pass.

Shapes follow the next-token convention: logits at position t predict token t+1, so the per-token
log-probs of a [B, T] batch form a [B, T-1] grid. ``action_mask`` marks on that grid exactly the
positions that predict a completion token, and per-token fields (old log-probs, advantages, ...) are
placed on the same grid, so a loss is ``(x * action_mask).sum() / action_mask.sum()`` with no shifting.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from r1reward.data.samples import MULTIMODAL, PER_SEQUENCE, PER_TOKEN, Batch, Sample, fields_of_kind


def replicate(encoded_prompt: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` samples of one prompt (e.g. n generations). They share the pixel tensors (no copy); the
    collated batch still repeats them once per sample, because every sequence has its own image tokens."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [{**encoded_prompt, "prompt_ids": list(encoded_prompt["prompt_ids"])} for _ in range(n)]


def _as_sample(i: int, sample: Sample | Mapping[str, Any]) -> Sample:
    try:
        return sample if isinstance(sample, Sample) else Sample.from_mapping(sample)
    except ValueError as e:
        raise ValueError(f"sample {i}: {e}") from None


def _check_sample(i: int, sample: Sample) -> None:
    if not sample.prompt_ids:
        raise ValueError(f"sample {i} has an empty prompt")
    grid, pixels = sample.image_grid_thw, sample.pixel_values
    if grid is not None and pixels is not None and int(grid.prod(-1).sum()) != pixels.shape[0]:
        raise ValueError(
            f"sample {i}: image_grid_thw covers {int(grid.prod(-1).sum())} patches, pixel_values has {pixels.shape[0]}"
        )


def _present(samples: Sequence[Sample], name: str) -> list[Any] | None:
    """The field's values if every sample has it, None if none has; a field on only some is an error."""
    values = [getattr(s, name) for s in samples]
    missing = [i for i, v in enumerate(values) if v is None]
    if len(missing) == len(values):
        return None
    if missing:
        raise ValueError(f"field {name!r} is missing from samples {missing}")
    return values


def collate_for_learner(samples: Sequence[Sample | Mapping[str, Any]], pad_token_id: int) -> Batch:
    """Right-padded batch: input_ids/attention_mask [B, T], action_mask and per-token fields [B, T-1],
    per-sequence fields [B], pixel_values and image_grid_thw concatenated over samples in order.
    Which field goes where is what `Sample` declares; dicts are read as Samples."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    typed = [_as_sample(i, s) for i, s in enumerate(samples)]
    for i, sample in enumerate(typed):
        _check_sample(i, sample)
    prompt_lens = [len(s.prompt_ids) for s in typed]
    completion_lens = [len(s.completion_ids) for s in typed]
    batch, width = len(typed), max(p + c for p, c in zip(prompt_lens, completion_lens))
    width = max(width, 2)  # at least one next-token position

    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(batch, width, dtype=torch.long)
    action_mask = torch.zeros(batch, width - 1, dtype=torch.bool)
    for b, sample in enumerate(typed):
        p, c = prompt_lens[b], completion_lens[b]
        input_ids[b, : p + c] = torch.as_tensor(list(sample.prompt_ids) + list(sample.completion_ids))
        attention_mask[b, : p + c] = 1
        # Position t predicts token t+1: completion tokens p..p+c-1 are predicted from p-1..p+c-2.
        action_mask[b, p - 1 : p + c - 1] = True

    declared: dict[str, torch.Tensor | None] = {}
    for name in fields_of_kind(PER_SEQUENCE):
        values = _present(typed, name)
        declared[name] = None if values is None else torch.tensor([float(v) for v in values])
    for name in fields_of_kind(PER_TOKEN):
        values = _present(typed, name)
        if values is None:
            declared[name] = None
            continue
        grid = torch.zeros(batch, width - 1, dtype=torch.float32)
        for b, value in enumerate(values):
            p, c = prompt_lens[b], completion_lens[b]
            if len(value) != c:
                raise ValueError(f"sample {b}: {name!r} has {len(value)} values for {c} completion tokens")
            grid[b, p - 1 : p + c - 1] = torch.as_tensor(value, dtype=torch.float32)
        declared[name] = grid
    # Qwen2.5-VL consumes the batch's patches in image-token order, i.e. sample by sample.
    vision = {name: _concat_rows(typed, name) for name in fields_of_kind(MULTIMODAL)}
    if vision["image_grid_thw"] is not None:
        vision["image_grid_thw"] = vision["image_grid_thw"].to(torch.long)
    return Batch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        action_mask=action_mask,
        prompt_lengths=torch.tensor(prompt_lens),
        completion_lengths=torch.tensor(completion_lens),
        **vision,
        **declared,
    )


def _concat_rows(samples: Sequence[Sample], name: str) -> torch.Tensor | None:
    """Concatenate a tensor field along dim 0, skipping samples without it (text-only); None if none."""
    parts = [getattr(s, name) for s in samples if getattr(s, name) is not None and getattr(s, name).shape[0] > 0]
    return torch.cat(parts) if parts else None


def model_inputs(batch: Batch, image_token_id: int, video_token_id: int) -> dict[str, Any]:
    """The keyword arguments of a Qwen2.5-VL forward for a collated batch.

    transformers 5 builds the 3D M-RoPE positions only when it is given `mm_token_type_ids` (0 text,
    1 image, 2 video); without them every token gets its 1D index. vLLM always uses M-RoPE, so a learner
    that left them out trained and scored under other positions than the sampler generates with: image
    tokens sat at other positions, and every token after an image was shifted (by 2 for a 4-token picture).
    """
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if batch.pixel_values is not None and batch.pixel_values.numel():
        ids = batch.input_ids
        token_types = (ids == image_token_id).to(torch.int32) + 2 * (ids == video_token_id).to(torch.int32)
        inputs.update(
            pixel_values=batch.pixel_values, image_grid_thw=batch.image_grid_thw, mm_token_type_ids=token_types
        )
    return inputs
