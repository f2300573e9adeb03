"""Turning a record into what the model reads: Qwen chat messages, prompt text, token ids and pixels.

The layout matches the released R1-Reward training data: one user turn holding the filled Table-1
prompt first and then the image(s), followed by the assistant generation prompt. The released
evaluation scripts put the image(s) first instead (``image_first=True``, used by
``r1reward eval --protocol released``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PIL import Image

from r1reward.data.images import image_size, load_image
from r1reward.data.prompt import format_prompt
from r1reward.data.records import DataError, PreferenceRecord

# Qwen2.5-VL sees 14-pixel patches merged 2x2, so image sides must be multiples of 28.
PATCH_FACTOR = 28
MIN_PIXELS = 4 * 28 * 28  # Qwen2.5-VL's default minimum (56 * 56)
MAX_PIXELS = 640 * 28 * 28  # the released training script's max image pixels
_MAX_ASPECT_RATIO = 200  # beyond this Qwen's own resize refuses the image
# The most images one prompt may hold: the engines' limit_mm_per_prompt; the loader and the server refuse
# more, so that one such row or request cannot fail a whole batch in the engine.
MAX_IMAGES = 4


def build_messages(record: PreferenceRecord, image_first: bool = False) -> list[dict[str, Any]]:
    """A single user turn: the filled Table-1 prompt, then one image placeholder per image (the
    released training messages), or one video placeholder for a video row; ``image_first`` puts the
    images (the video) before the text."""
    text: list[dict[str, Any]] = [
        {"type": "text", "text": format_prompt(record.question, record.response_1, record.response_2)}
    ]
    media: list[dict[str, Any]] = [{"type": "video"}] if record.is_video else [{"type": "image"} for _ in record.images]
    return [{"role": "user", "content": media + text if image_first else text + media}]


def render_prompt(processor: Any, record: PreferenceRecord, image_first: bool = False) -> str:
    """The prompt string the model is conditioned on (chat template with the generation prompt)."""
    return processor.apply_chat_template(
        build_messages(record, image_first), tokenize=False, add_generation_prompt=True
    )


def count_prompt_tokens(
    processor: Any,
    record: PreferenceRecord,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> int:
    """The prompt's length as the engine counts it: the chat-templated text, each image's one placeholder
    token expanded to its image tokens (one per 28x28 patch of the resized image). Reads image headers
    only, so that checking a large set stays cheap."""
    n_tokens = len(processor.tokenizer(render_prompt(processor, record)).input_ids)
    for source in record.images:
        width, height = image_size(source)
        resized_height, resized_width = target_size(height, width, min_pixels, max_pixels)
        n_tokens += (resized_height // PATCH_FACTOR) * (resized_width // PATCH_FACTOR) - 1
    return n_tokens


def target_size(
    height: int,
    width: int,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    factor: int = PATCH_FACTOR,
) -> tuple[int, int]:
    """(height, width) rounded to multiples of ``factor``, keeping the aspect ratio and the pixel
    count within [min_pixels, max_pixels] (the same rule as Qwen's smart_resize)."""
    if min(height, width) < 1:
        raise DataError(f"image has no pixels: {width}x{height}", reason="image-undecodable")
    if max(height, width) / min(height, width) > _MAX_ASPECT_RATIO:
        raise DataError(f"image aspect ratio too extreme: {width}x{height}", reason="image-undecodable")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    if h * w > max_pixels:  # a very thin image: the short side was clamped up to one factor
        h, w = (
            (h, max(factor, max_pixels // h // factor * factor))
            if h <= w
            else (max(factor, max_pixels // w // factor * factor), w)
        )
    return h, w


def resize_for_model(image: Image.Image, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image resized so that the processor will not resize it again (bounds the patch count)."""
    height, width = target_size(image.height, image.width, min_pixels, max_pixels)
    if (height, width) == (image.height, image.width):
        return image
    return image.resize((width, height), Image.Resampling.BICUBIC)


def rollout_prompt(
    processor: Any,
    record: PreferenceRecord,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
    image_root: str | Path | None = None,
    image_first: bool = False,
) -> dict[str, Any]:
    """What a rollout worker takes for one record: ``{"prompt": rendered text, "images": PIL images}``.

    The one way a record becomes a prompt, for RL experience, hard-example selection, evaluation and
    the server alike. Images (paths, bytes or PIL images) are resized as in training, so the processor
    does not resize them again; ``image_first`` is the released evaluation's layout.
    """
    images = [resize_for_model(load_image(s, image_root), min_pixels, max_pixels) for s in record.images]
    return {"prompt": render_prompt(processor, record, image_first), "images": images}


def encode_prompt(
    processor: Any,
    record: PreferenceRecord,
    image_root: str | Path | None = None,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> dict[str, Any]:
    """Token ids of the rendered prompt and the pixel inputs for its images (see `encode_rendered`)."""
    prompt = rollout_prompt(processor, record, min_pixels, max_pixels, image_root)
    return encode_rendered(processor, prompt["prompt"], prompt["images"], min_pixels, max_pixels)


def encode_rendered(
    processor: Any, text: str, images: list[Image.Image], min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> dict[str, Any]:
    """``prompt_ids`` (list[int]), ``pixel_values`` (float tensor [patches, patch_dim]) and
    ``image_grid_thw`` (long tensor [n_images, 3]) of a rendered prompt; both tensors have zero rows
    when there are no images."""
    import torch  # here, not at the top: `r1reward --help` reads this module's pixel bounds without torch

    if images:
        # The same bounds go to the processor so that it keeps our (already conforming) sizes.
        size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
        out = processor(text=[text], images=images, size=size, return_tensors="pt")
        pixel_values, grid = out["pixel_values"], out["image_grid_thw"].to(torch.long)
    else:  # text only: empty pixel tensors keep the sample's shape contract for collation
        out = processor(text=[text], return_tensors="pt")
        ip = processor.image_processor
        pixel_values = torch.zeros(0, 3 * ip.temporal_patch_size * ip.patch_size**2)
        grid = torch.zeros(0, 3, dtype=torch.long)
    return {"prompt_ids": out["input_ids"][0].tolist(), "pixel_values": pixel_values, "image_grid_thw": grid}
