"""Rollout: the project's vLLM rollout worker vs Hugging Face `generate`, same prompts, images and sampling.

Both sample for real (temperature, top_p, the vision tokens banned, stop at the end-of-turn token), so
generation lengths differ per prompt as in training; the tokens counted are the ones each engine returned.
The worker is `RolloutWorker` in this process, called exactly as the trainer's step calls it (one seed per
prompt). The two engines alternate per batch size and repeat, so load from other jobs hits both alike.

    python -m benchmarks.rollout [--batches 1 8 16 32] [--repeats 3] [--out benchmarks/results/rollout.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from benchmarks.assets import (
    MAX_NEW_TOKENS,
    MAX_PIXELS,
    MIN_PIXELS,
    STEP_PROMPTS,
    TEMPERATURE,
    TOP_P,
    ensure_assets,
    load_prompts,
)


class HFGenerate:
    """Batched `model.generate` with the worker's sampling settings (left padding; the processor adds the
    `mm_token_type_ids` that transformers 5 needs for Qwen2.5-VL's M-RoPE positions)."""

    def __init__(self, model_dir: Path, processor: Any) -> None:
        from transformers import AutoModelForImageTextToText

        from r1reward.algo.sampling import VISION_TOKENS

        self.processor = processor
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
        tok = processor.tokenizer
        self.eos = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
        self.banned = [[tok.convert_tokens_to_ids(t)] for t in VISION_TOKENS]

    @torch.inference_mode()
    def generate(self, prompts: list[dict[str, Any]], seed: int) -> list[int]:
        """Generated token counts per prompt (up to and including the stop token, as vLLM counts them)."""
        size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
        inputs = self.processor(
            text=[p["prompt"] for p in prompts],
            images=[p["images"] for p in prompts],
            size=size,
            padding=True,
            padding_side="left",
            return_tensors="pt",
        )
        torch.manual_seed(seed)
        out = self.model.generate(
            **inputs,
            do_sample=True,
            temperature=TEMPERATURE,
            top_p=TOP_P,
            top_k=0,
            max_new_tokens=MAX_NEW_TOKENS,
            eos_token_id=self.eos,
            pad_token_id=self.eos[1],
            bad_words_ids=self.banned,
        )
        new = out[:, inputs["input_ids"].shape[1] :]
        counts = []
        for row in new.tolist():
            stop = next((i for i, t in enumerate(row) if t in self.eos), None)
            counts.append(len(row) if stop is None else stop + 1)
        return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, STEP_PROMPTS, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/rollout.json")
    args = parser.parse_args()

    from r1reward.config.schema import RolloutConfig
    from r1reward.rollout.worker import RolloutWorker

    model_dir, _ = ensure_assets()
    processor, prompts = load_prompts(max(args.batches))
    hf = HFGenerate(model_dir, processor)
    cfg = RolloutConfig(max_new_tokens=MAX_NEW_TOKENS, temperature=TEMPERATURE, top_p=TOP_P)
    worker = RolloutWorker(str(model_dir), asdict(cfg), (MIN_PIXELS, MAX_PIXELS))

    def vllm_run(batch: list[dict[str, Any]], seed: int) -> list[int]:
        seeds = [seed * 10_007 + i for i in range(len(batch))]  # as Trainer._generate: one seed per prompt
        out = worker.generate([{"prompt": p["prompt"], "images": p["images"]} for p in batch], seeds=seeds)
        return [len(r["generations"][0]["token_ids"]) for r in out]

    engines = {"vllm_worker": vllm_run, "hf_generate": hf.generate}
    for run in engines.values():  # warm-up: first-call compilation and allocation are not throughput
        run(prompts[:2], seed=0)
    rows: dict[str, dict[str, Any]] = {name: {} for name in engines}
    for batch_size in args.batches:
        batch = prompts[:batch_size]
        runs: dict[str, list[tuple[float, int, int]]] = {name: [] for name in engines}
        for repeat in range(args.repeats):
            for name, run in engines.items():
                start = time.perf_counter()
                counts = run(batch, seed=repeat + 1)
                runs[name].append((time.perf_counter() - start, sum(counts), max(counts)))
        for name, samples in runs.items():
            seconds = statistics.median(s for s, _, _ in samples)
            tokens = statistics.median(t for _, t, _ in samples)
            rows[name][str(batch_size)] = {
                "seconds": seconds,
                "tokens": tokens,
                "tokens_per_s": statistics.median(t / s for s, t, _ in samples),
                "prompts_per_s": statistics.median(batch_size / s for s, _, _ in samples),
                "mean_length": tokens / batch_size,
                # A batch takes as many decode steps as its longest generation: the time per step says
                # whether an engine is bound by per-step overhead (flat in the batch) or by compute.
                "ms_per_decode_step": statistics.median(1000 * s / m for s, _, m in samples),
                "runs": [{"seconds": s, "tokens": t, "longest": m} for s, t, m in samples],
            }
        print(
            f"batch {batch_size:>3}: "
            + "  ".join(f"{n} {rows[n][str(batch_size)]['tokens_per_s']:7.1f} tok/s" for n in engines),
            flush=True,
        )
    result = {
        "name": "rollout",
        "model": "small (r1reward make-tiny-model --size small, primed by sft-local)",
        "prompt_tokens_mean": statistics.mean(len(p["prompt_ids"]) for p in prompts),
        "settings": {
            "max_new_tokens": MAX_NEW_TOKENS,
            "temperature": TEMPERATURE,
            "top_p": TOP_P,
            "min_pixels": MIN_PIXELS,
            "max_pixels": MAX_PIXELS,
            "repeats": args.repeats,
            "step_batch": STEP_PROMPTS,
            "torch_threads": torch.get_num_threads(),
        },
        "engines": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
