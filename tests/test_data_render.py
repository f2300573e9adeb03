"""Rendering records for the model: messages, the chat-templated prompt, resizing and encoding."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from r1reward.data.collate import collate_for_learner, replicate
from r1reward.data.prompt import EVALUATOR_PROMPT, format_prompt
from r1reward.data.records import DataError, PreferenceRecord
from r1reward.data.render import (
    build_messages,
    encode_prompt,
    render_prompt,
    resize_for_model,
    rollout_prompt,
    target_size,
)


@pytest.fixture(scope="module")
def processor(tiny_model_dir):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


def png_bytes(size: tuple[int, int], color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def make_record(images: list, question: str = "What colour is the shape?") -> PreferenceRecord:
    return PreferenceRecord("r0", question, images, "It is red.", "It is {blue}.", 1)


def test_build_messages_puts_prompt_first_then_images_as_released_training_does():
    record = make_record(["a.png", "b.png"])
    text = {"type": "text", "text": format_prompt(record.question, record.response_1, record.response_2)}
    (turn,) = build_messages(record)
    assert turn["role"] == "user"
    assert turn["content"] == [text, {"type": "image"}, {"type": "image"}]
    (turn,) = build_messages(record, image_first=True)  # the released evaluation's layout
    assert turn["content"] == [{"type": "image"}, {"type": "image"}, text]


def test_rendered_prompt_contains_exact_table1_text(processor):
    record = make_record([png_bytes((56, 56))])
    text = render_prompt(processor, record)
    filled = format_prompt(record.question, record.response_1, record.response_2)
    assert filled in text
    assert EVALUATOR_PROMPT.split("{question}")[0] in text
    assert "###### [Question]:\nWhat colour is the shape?  \n\n###### [Response 1]:\nIt is red.  \n\n" in text
    # One image placeholder, after the prompt text, inside the user turn; generation prompt at the end.
    assert text.count("<|image_pad|>") == 1
    assert text.index(filled) < text.index("<|vision_start|><|image_pad|><|vision_end|>")
    assert filled + "<|vision_start|><|image_pad|><|vision_end|><|im_end|>" in text
    assert text.index("<|im_start|>user") < text.index(filled)
    assert text.endswith("<|im_start|>assistant\n")
    image_first = render_prompt(processor, record, image_first=True)
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>" + filled in image_first


@pytest.mark.parametrize("size", [(1000, 800), (100, 60), (20, 20), (3000, 40), (28, 28)])
def test_resize_for_model_bounds_and_multiples(size):
    min_pixels, max_pixels = 4 * 28 * 28, 64 * 28 * 28
    image = resize_for_model(Image.new("RGB", size), min_pixels, max_pixels)
    width, height = image.size
    assert width % 28 == 0 and height % 28 == 0
    assert min_pixels <= width * height <= max_pixels


@pytest.mark.parametrize("size", [(1000, 800), (800, 1000), (300, 200), (4000, 3000)])
def test_resize_for_model_keeps_aspect_ratio(size):
    width, height = resize_for_model(Image.new("RGB", size), 4 * 28 * 28, 256 * 28 * 28).size
    assert abs((width / height) / (size[0] / size[1]) - 1) < 0.15


def test_resize_is_identity_when_already_conforming():
    image = Image.new("RGB", (112, 56))
    assert resize_for_model(image, 4 * 28 * 28, 64 * 28 * 28) is image


def test_target_size_rejects_extreme_aspect_ratio():
    with pytest.raises(DataError, match="aspect"):
        target_size(10, 5000)


def test_encode_prompt_shapes(processor, tmp_path):
    (tmp_path / "big.png").write_bytes(png_bytes((1000, 800)))
    record = make_record(["big.png", png_bytes((100, 60), "blue")])
    min_pixels, max_pixels = 4 * 28 * 28, 256 * 28 * 28
    encoded = encode_prompt(processor, record, tmp_path, min_pixels, max_pixels)
    grid = encoded["image_grid_thw"]
    assert grid.shape == (2, 3) and grid.dtype == torch.long
    expected_big = target_size(800, 1000, min_pixels, max_pixels)
    assert grid[0].tolist() == [1, expected_big[0] // 14, expected_big[1] // 14]
    assert grid[1].tolist() == [1, 4, 8]  # 100x60 -> 112x56 pixels -> 8x4 patches
    assert encoded["pixel_values"].shape == (int(grid.prod(-1).sum()), 3 * 2 * 14 * 14)
    ids = encoded["prompt_ids"]
    assert isinstance(ids, list) and all(isinstance(t, int) for t in ids)
    # Each image expands to one <|image_pad|> per 2x2 merged patch.
    assert ids.count(processor.image_token_id) == int(grid.prod(-1).sum()) // 4
    assert processor.tokenizer.decode(ids).endswith("<|im_start|>assistant\n")


def test_encode_prompt_without_images(processor):
    encoded = encode_prompt(processor, make_record([]))
    assert encoded["pixel_values"].shape == (0, 1176)
    assert encoded["image_grid_thw"].shape == (0, 3)
    assert processor.image_token_id not in encoded["prompt_ids"]
    assert "It is {blue}." in processor.tokenizer.decode(encoded["prompt_ids"])


def test_encode_prompt_missing_image_is_data_error(processor, tmp_path):
    with pytest.raises(DataError) as info:
        encode_prompt(processor, make_record(["nope.png"]), tmp_path)
    assert info.value.reason == "image-missing"


def noise_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_collated_batch_matches_single_sample_forward(tiny_model_dir, processor):
    """Encoded prompts, replicated and collated with text-only ones, feed the model as one right-padded
    batch, and every row gives the same logits as that sample run alone."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_model_dir).eval()
    bounds = (4 * 28 * 28, 64 * 28 * 28)
    one = encode_prompt(processor, make_record([noise_png((100, 60))]), None, *bounds)
    two = encode_prompt(processor, make_record([noise_png((200, 200)), noise_png((60, 60))]), None, *bounds)
    text = encode_prompt(processor, make_record([]), None, *bounds)
    completions = [[105], [105, 106, 107], [108, 109, 110, 111], [120, 121]]
    prompts = [*replicate(one, 2), two, text]
    samples = [{**p, "completion_ids": c} for p, c in zip(prompts, completions)]
    batch = collate_for_learner(samples, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            pixel_values=batch.pixel_values,
            image_grid_thw=batch.image_grid_thw,
        ).logits
        for b, s in enumerate(samples):
            ids = torch.tensor([s["prompt_ids"] + s["completion_ids"]])
            vision = {"pixel_values": s["pixel_values"], "image_grid_thw": s["image_grid_thw"]}
            alone = model(input_ids=ids, **(vision if len(s["image_grid_thw"]) else {})).logits
            torch.testing.assert_close(logits[b, : ids.shape[1]], alone[0], atol=1e-4, rtol=1e-4)


def test_rollout_prompt_takes_paths_and_pil_images_alike(processor, tmp_path):
    """The one prompt builder (RL, hard examples, eval, serve): a PIL image and the same picture saved
    as a file give the same text and the same resized pixels; image_first moves the image ahead."""
    picture = Image.effect_noise((100, 60), 40).convert("RGB")
    picture.save(tmp_path / "p.png")
    bounds = (4 * 28 * 28, 16 * 28 * 28)
    from_file = rollout_prompt(processor, make_record(["p.png"]), *bounds, image_root=tmp_path)
    from_pil = rollout_prompt(processor, make_record([picture]), *bounds)
    assert from_file["prompt"] == from_pil["prompt"] == render_prompt(processor, make_record(["p.png"]))
    assert [i.size for i in from_file["images"]] == [i.size for i in from_pil["images"]] != [picture.size]
    assert list(from_file["images"][0].getdata()) == list(from_pil["images"][0].getdata())
    first = rollout_prompt(processor, make_record([picture]), *bounds, image_first=True)["prompt"]
    assert first == render_prompt(processor, make_record([picture]), image_first=True) != from_pil["prompt"]
