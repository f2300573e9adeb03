"""What every comparison runs on: the `small` tiny Qwen2.5-VL primed by a short SFT, and synthetic pairs.

The SFT matters for a fair rollout comparison: a random model almost never samples the end-of-turn token,
so every generation would run to max_tokens; the primed one answers in the trained format and stops at
different lengths, as a real policy does. Built once under runs/bench/ (same seed, same bytes) and reused.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "runs" / "bench"
MODEL = ASSETS / "small-sft"
DATA = ASSETS / "data"
NUM_PAIRS = 64
SFT_STEPS = 40

# One RL step as the bench measures it (the demo's step before issue #11 raised it to 32 prompts x 4):
# 16 prompts, 80 new tokens, temperature 1, top_p 1.
STEP_PROMPTS = 16
MAX_NEW_TOKENS = 80
TEMPERATURE = 1.0
TOP_P = 1.0
MIN_PIXELS = 28 * 28 * 4  # data.min_pixels / max_pixels defaults: 56x56 .. 224x224 images
MAX_PIXELS = 28 * 28 * 64


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "r1reward", *args], cwd=ROOT, check=True)


def ensure_assets() -> tuple[Path, Path]:
    """(model dir, data dir), made on first use."""
    base = ASSETS / "small-base"
    if not (base / "config.json").exists():
        _cli("make-tiny-model", str(base), "--size", "small")
    if not (DATA / "train.parquet").exists():
        _cli("make-synthetic-data", str(DATA), "--num", str(NUM_PAIRS))
    if not (MODEL / "config.json").exists():
        _cli("sft-local", str(base), str(DATA / "sft.jsonl"), str(MODEL), "--steps", str(SFT_STEPS))
    return MODEL, DATA


def load_prompts(num: int, model_dir: Path = MODEL, data_dir: Path = DATA) -> tuple[object, list[dict]]:
    """(processor, prompts) exactly as the trainer prepares a step: rendered text, resized images, ids."""
    from transformers import AutoProcessor

    from r1reward.data.dataset import PreferenceDataset
    from r1reward.trainer.experience import prepare_prompt

    processor = AutoProcessor.from_pretrained(model_dir)
    dataset = PreferenceDataset.from_file(str(data_dir / "train.parquet"), "r1reward-rl")
    records = [dataset[i % len(dataset)] for i in range(num)]
    return processor, [prepare_prompt(processor, r, MIN_PIXELS, MAX_PIXELS) for r in records]
