"""Batching prompt+completion samples for the learner's forward pass.

Shapes follow the next-token convention: logits at position t predict token t+1, so the per-token
log-probs of a [B, T] batch form a [B, T-1] grid. ``action_mask`` marks on that grid exactly the
positions that predict a completion token, and per-token fields (old log-probs, advantages, ...) are
placed on the same grid, so a loss is ``(x * action_mask).sum() / action_mask.sum()`` with no shifting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

_CORE = ("prompt_ids", "completion_ids", "pixel_values", "image_grid_thw")


def replicate(encoded_prompt: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` samples of one prompt (e.g. n generations). They share the pixel tensors (no copy); the
    collated batch still repeats them once per sample, because every sequence has its own image tokens."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [{**encoded_prompt, "prompt_ids": list(encoded_prompt["prompt_ids"])} for _ in range(n)]


def _check_sample(i: int, sample: dict[str, Any]) -> None:
    for key in ("prompt_ids", "completion_ids"):
        if key not in sample:
            raise ValueError(f"sample {i} has no {key!r}")
    if not sample["prompt_ids"]:
        raise ValueError(f"sample {i} has an empty prompt")
    grid, pixels = sample.get("image_grid_thw"), sample.get("pixel_values")
    if grid is not None and pixels is not None and int(grid.prod(-1).sum()) != pixels.shape[0]:
        raise ValueError(
            f"sample {i}: image_grid_thw covers {int(grid.prod(-1).sum())} patches, "
            f"pixel_values has {pixels.shape[0]}"
        )


def _field_kind(values: list[Any], lengths: list[int], key: str) -> str:
    """"token" for per-completion-token fields, "scalar" for one number per sample, else "other"."""
    if all(isinstance(v, (int, float)) or (torch.is_tensor(v) and v.dim() == 0) for v in values):
        return "scalar"
    if all(isinstance(v, (list, tuple)) or (torch.is_tensor(v) and v.dim() == 1) for v in values):
        for i, (v, n) in enumerate(zip(values, lengths)):
            if len(v) != n:
                raise ValueError(f"sample {i}: {key!r} has {len(v)} values for {n} completion tokens")
        return "token"
    return "other"


def collate_for_learner(samples: Sequence[dict[str, Any]], pad_token_id: int) -> dict[str, Any]:
    """Right-padded batch: input_ids/attention_mask [B, T], action_mask and per-token fields [B, T-1],
    pixel_values and image_grid_thw concatenated over samples in order. Scalar fields become [B]
    tensors; any other extra field is passed through as a list."""
    if not samples:
        raise ValueError("cannot collate an empty batch")
    for i, sample in enumerate(samples):
        _check_sample(i, sample)
    prompt_lens = [len(s["prompt_ids"]) for s in samples]
    completion_lens = [len(s["completion_ids"]) for s in samples]
    batch, width = len(samples), max(p + c for p, c in zip(prompt_lens, completion_lens))
    width = max(width, 2)  # at least one next-token position

    input_ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros(batch, width, dtype=torch.long)
    action_mask = torch.zeros(batch, width - 1, dtype=torch.bool)
    for b, sample in enumerate(samples):
        p, c = prompt_lens[b], completion_lens[b]
        input_ids[b, : p + c] = torch.as_tensor(list(sample["prompt_ids"]) + list(sample["completion_ids"]))
        attention_mask[b, : p + c] = 1
        # Position t predicts token t+1: completion tokens p..p+c-1 are predicted from p-1..p+c-2.
        action_mask[b, p - 1 : p + c - 1] = True
    out: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "action_mask": action_mask,
        "prompt_lengths": torch.tensor(prompt_lens),
        "completion_lengths": torch.tensor(completion_lens),
    }

    extra_keys = sorted({k for s in samples for k in s if k not in _CORE})
    for key in extra_keys:
        missing = [i for i, s in enumerate(samples) if key not in s]
        if missing:
            raise ValueError(f"field {key!r} is missing from samples {missing}")
        values = [s[key] for s in samples]
        kind = _field_kind(values, completion_lens, key)
        if kind == "scalar":
            out[key] = torch.tensor([float(v) for v in values])
        elif kind == "token":
            grid = torch.zeros(batch, width - 1, dtype=torch.float32)
            for b, value in enumerate(values):
                p, c = prompt_lens[b], completion_lens[b]
                grid[b, p - 1 : p + c - 1] = torch.as_tensor(value, dtype=torch.float32)
            out[key] = grid
        else:
            out[key] = values

    # Qwen2.5-VL consumes the batch's patches in image-token order, i.e. sample by sample.
    out["pixel_values"] = _concat_rows(samples, "pixel_values")
    grid = _concat_rows(samples, "image_grid_thw")
    out["image_grid_thw"] = None if grid is None else grid.to(torch.long)
    return out


def _concat_rows(samples: Sequence[dict[str, Any]], key: str) -> torch.Tensor | None:
    """Concatenate a tensor field along dim 0, skipping samples without it (text-only); None if none."""
    parts = [s[key] for s in samples if s.get(key) is not None and s[key].shape[0] > 0]
    return torch.cat(parts) if parts else None


def model_inputs(batch: dict[str, Any], image_token_id: int, video_token_id: int) -> dict[str, Any]:
    """The keyword arguments of a Qwen2.5-VL forward for a collated batch.

    transformers 5 builds the 3D M-RoPE positions only when it is given `mm_token_type_ids` (0 text,
    1 image, 2 video); without them every token gets its 1D index. vLLM always uses M-RoPE, so a learner
    that left them out trained and scored under other positions than the sampler generates with: image
    tokens sat at other positions, and every token after an image was shifted (by 2 for a 4-token picture).
    """
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if batch.get("pixel_values") is not None and batch["pixel_values"].numel():
        ids = batch["input_ids"]
        token_types = (ids == image_token_id).to(torch.int32) + 2 * (ids == video_token_id).to(torch.int32)
        inputs.update(pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
                      mm_token_type_ids=token_types)
    return inputs
