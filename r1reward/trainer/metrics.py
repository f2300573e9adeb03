"""Per-step metrics to TensorBoard, to a JSONL file and to a progress bar."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    def __init__(self, output_dir: Path, total_steps: int, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.path = output_dir / "metrics.jsonl"
        self.writer = SummaryWriter(str(output_dir / "tensorboard"))
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        self.bar.update(1)
        self.bar.set_postfix(reward=f"{metrics.get('reward/mean', math.nan):.3f}",
                             loss=f"{metrics.get('loss', math.nan):.3f}")

    def close(self) -> None:
        self.writer.close()
        self.bar.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def format_timings(timings: dict[str, float]) -> str:
    total = sum(timings.values()) or 1.0
    rows = [f"  {name:<10} {seconds:8.2f} s  {100 * seconds / total:5.1f} %" for name, seconds in timings.items()]
    return "\n".join(["per-phase time of the last step:", *rows])
