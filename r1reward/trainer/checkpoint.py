"""Checkpoints: `step_K/` holds `deepspeed/` (every rank's state, to resume), `hf/` (a Hugging Face
model that transformers and vLLM load) and `trainer_state.json`, written last to mark it complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"


def latest_checkpoint(output_dir: Path) -> Path | None:
    done = [p.parent for p in (Path(output_dir) / "checkpoints").glob(f"step_*/{STATE_FILE}")]
    return max(done, key=lambda p: int(p.name.split("_")[1]), default=None)


def save_checkpoint(learners: list[Any], processor: Any, output_dir: Path, step: int, state: dict[str, Any]) -> Path:
    import ray

    directory = Path(output_dir) / "checkpoints" / f"step_{step}"
    hf_dir = directory / "hf"
    ray.get([learner.save.remote(str(directory / "deepspeed"), f"step_{step}", str(hf_dir)) for learner in learners])
    processor.save_pretrained(hf_dir)
    (directory / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=1))
    return directory


def load_checkpoint(learners: list[Any], checkpoint: Path) -> dict[str, Any]:
    """Restores every rank's DeepSpeed state; returns the saved trainer state."""
    import ray

    ray.get([learner.load.remote(str(checkpoint / "deepspeed"), checkpoint.name) for learner in learners])
    return json.loads((checkpoint / STATE_FILE).read_text())
