"""Cold-start supervised fine-tuning in one process: teach the output format before RL.

A random model never writes `<think>...</think><answer>N</answer>`, so every RL reward is 0 and
the update has nothing to follow. This trains on reasoning targets (loss on the response tokens
only) with plain torch. It is the small-scale stage 1 of the paper; the multi-rank version on the
DeepSpeed learner actors is tracked separately.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from r1reward.data.collate import collate_for_learner
from r1reward.data.readers import read_records
from r1reward.data.render import encode_prompt


def sft_examples(processor: Any, sft_path: str | Path, min_pixels: int, max_pixels: int) -> list[dict[str, Any]]:
    """Encoded prompt + target token ids for each row of a canonical JSONL with a `target` column."""
    targets = [json.loads(line)["target"] for line in Path(sft_path).read_text().splitlines() if line.strip()]
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


def sft_local(model_dir: str | Path, sft_path: str | Path, out_dir: str | Path, steps: int = 60,
              batch_size: int = 8, lr: float = 3e-3, seed: int = 0, min_pixels: int = 56 * 56,
              max_pixels: int = 28 * 28 * 64) -> list[float]:
    """Train and save to `out_dir` (model + processor); returns the loss per step."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(seed)
    rng = random.Random(seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    examples = sft_examples(processor, sft_path, min_pixels, max_pixels)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    pad = model.config.text_config.pad_token_id or 0
    losses = []
    for _ in range(steps):
        batch = collate_for_learner(rng.sample(examples, min(batch_size, len(examples))), pad)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"]).logits[:, :-1]
        logp = torch.log_softmax(logits.float(), -1).gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
        mask = batch["action_mask"]
        loss = -(logp * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(float(loss))
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return losses
