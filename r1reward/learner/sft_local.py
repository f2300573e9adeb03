"""Supervised training in one process: the tiny model's caption warm-up and a quick cold-start SFT.

The paper's base model, Qwen2.5-VL-7B-Instruct, can already describe an image before reward training
starts. A randomly initialised tiny model cannot, so SFT on reasoning traces only teaches it the
answer template (held-out accuracy stays at chance). `caption_warmup` stands in for that pretraining:
a few hundred steps of "describe the image" on fresh synthetic pictures. `sft_local` is a one-process
SFT used by the tests to prime a model; the multi-rank stage 1 is `r1reward sft`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from r1reward.data.collate import collate_for_learner, model_inputs
from r1reward.data.jsonl import read_jsonl
from r1reward.data.readers import read_records
from r1reward.data.render import encode_prompt, encode_rendered

CAPTION_PROMPT = "Describe the image."


def sft_examples(processor: Any, sft_path: str | Path, min_pixels: int, max_pixels: int) -> list[dict[str, Any]]:
    """Encoded prompt + target token ids for each row of a canonical JSONL with a `target` column."""
    targets = [row["target"] for row in read_jsonl(sft_path)]
    records = list(read_records(sft_path, "canonical"))
    if len(records) != len(targets):
        raise ValueError(f"{sft_path}: every row needs a `target`")
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    examples = []
    for record, target in zip(records, targets):
        encoded = encode_prompt(processor, record, Path(sft_path).parent, min_pixels, max_pixels)
        completion = processor.tokenizer(target, add_special_tokens=False).input_ids + [end]
        examples.append({**encoded, "completion_ids": completion})
    return examples


def caption_examples(processor: Any, num: int, seed: int, min_pixels: int, max_pixels: int) -> list[dict[str, Any]]:
    """`num` synthetic pictures, each with the caption the reasoning traces open with."""
    from r1reward.data.synthetic import caption, make_example

    rng = random.Random(seed)
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": CAPTION_PROMPT}, {"type": "image"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    examples = []
    for index in range(num):
        image, example = make_example(rng, index)
        encoded = encode_rendered(processor, text, [image], min_pixels, max_pixels)
        target = processor.tokenizer(caption(example), add_special_tokens=False).input_ids + [end]
        examples.append({**encoded, "completion_ids": target})
    return examples


def train_local(
    model: Any,
    examples: list[dict[str, Any]],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    progress: str | None = None,
) -> list[float]:
    """AdamW on the negative log-likelihood of the completion tokens; returns the loss per step."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    rng = random.Random(seed)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    pad = model.config.text_config.pad_token_id or 0
    losses = []
    bar = tqdm(range(steps), desc=progress, unit="step", dynamic_ncols=True, disable=progress is None)
    for _ in bar:
        batch = collate_for_learner(rng.sample(examples, min(batch_size, len(examples))), pad)
        logits = model(**model_inputs(batch, model.config.image_token_id, model.config.video_token_id)).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        mask = batch.action_mask
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return losses


def _load(model_dir: str | Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    return processor, AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)


def _save(model: Any, processor: Any, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def caption_warmup(
    model_dir: str | Path,
    out_dir: str | Path,
    steps: int = 400,
    num_images: int = 512,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 64,
    progress: str | None = None,
) -> list[float]:
    """Teach a fresh tiny model to describe synthetic pictures; saves it (with processor) to `out_dir`."""
    processor, model = _load(model_dir)
    examples = caption_examples(processor, num_images, seed + 17, min_pixels, max_pixels)
    losses = train_local(model, examples, steps, batch_size, lr, seed, progress)
    _save(model, processor, out_dir)
    return losses


def sft_local(
    model_dir: str | Path,
    sft_path: str | Path,
    out_dir: str | Path,
    steps: int = 60,
    batch_size: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    min_pixels: int = 56 * 56,
    max_pixels: int = 28 * 28 * 64,
) -> list[float]:
    """Train and save to `out_dir` (model + processor); returns the loss per step."""
    processor, model = _load(model_dir)
    examples = sft_examples(processor, sft_path, min_pixels, max_pixels)
    losses = train_local(model, examples, steps, batch_size, lr, seed)
    _save(model, processor, out_dir)
    return losses
