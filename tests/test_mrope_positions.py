"""The learner's forward uses Qwen2.5-VL's 3D M-RoPE positions, as vLLM does.

transformers 5 computes M-RoPE only when given `mm_token_type_ids`; without them image tokens and
every token after an image get other positions than the sampler used (the learner/sampler gap)."""

from __future__ import annotations

import torch

from r1reward.data.collate import collate_for_learner, model_inputs
from r1reward.data.readers import read_records
from r1reward.data.render import encode_prompt


def test_model_inputs_give_mrope_positions(tiny_model_dir, synthetic_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    record = next(iter(read_records(synthetic_dir / "pairs.jsonl", "canonical")))
    completion = processor.tokenizer("<think>The image shows", add_special_tokens=False).input_ids
    sample = {**encode_prompt(processor, record, synthetic_dir), "completion_ids": completion}
    batch = collate_for_learner([sample], pad_token_id=0)
    inputs = model_inputs(batch, model.config.image_token_id, model.config.video_token_id)

    types = inputs["mm_token_type_ids"][0]
    assert int(types.sum()) == int(batch.image_grid_thw.prod(-1).sum()) // 4  # merged 2x2 patches
    positions, _ = model.model.get_rope_index(
        inputs["input_ids"], inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
    )
    # After the picture the text positions fall behind the token index (4 tokens take 2 positions).
    assert int(positions[0, 0, -1]) < inputs["input_ids"].shape[1] - 1

    with torch.no_grad():
        with_types = model(**inputs).logits
        explicit = model(**inputs, position_ids=positions).logits
        plain = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            pixel_values=inputs["pixel_values"],
            image_grid_thw=inputs["image_grid_thw"],
        ).logits
    assert torch.allclose(with_types, explicit, atol=1e-6)
    first_image = int(types.nonzero()[0])
    # 1D positions change everything from the picture on: the gap this helper closes.
    assert (plain[0, first_image:] - with_types[0, first_image:]).abs().max() > 1e-4
    assert torch.allclose(plain[0, :first_image], with_types[0, :first_image], atol=1e-5)


def test_text_only_batches_need_no_token_types():
    batch = collate_for_learner(
        [
            {
                "prompt_ids": [1, 2],
                "completion_ids": [3],
                "pixel_values": torch.zeros(0, 1176),
                "image_grid_thw": torch.zeros(0, 3),
            }
        ],
        0,
    )
    assert "mm_token_type_ids" not in model_inputs(batch, 9, 10)


def test_completion_only_logits_give_the_same_completion_logprobs(tiny_model_dir, synthetic_dir):
    """The learner's LM head runs only from the first completion column on (`logits_to_keep`); every
    completion token's log-prob must be what the full-sequence head gives, in a batch of unequal prompts."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from r1reward.learner.loss import first_completion_column, token_logprobs

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    records = list(read_records(synthetic_dir / "pairs.jsonl", "canonical"))[:3]
    completions = [processor.tokenizer(t, add_special_tokens=False).input_ids for t in ("<think>", "The image shows a")]
    samples = [
        {**encode_prompt(processor, r, synthetic_dir), "completion_ids": completions[i % 2]}
        for i, r in enumerate(records)
    ]
    batch = collate_for_learner(samples, pad_token_id=0)
    assert len({len(s["prompt_ids"]) for s in samples}) > 1  # prompts of different lengths
    ids = (model.config.image_token_id, model.config.video_token_id)
    with torch.no_grad():
        full = token_logprobs(model, batch, ids, "cpu", completion_only=False)
        part = token_logprobs(model, batch, ids, "cpu", completion_only=True)
    mask = batch.action_mask
    assert part.shape == full.shape == mask.shape
    assert first_completion_column(batch) == min(len(s["prompt_ids"]) for s in samples) - 1 > 0
    assert torch.allclose(part[mask], full[mask], atol=1e-5)
    assert torch.all(part[:, : first_completion_column(batch)] == 0)
