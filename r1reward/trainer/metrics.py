"""Per-step metrics to TensorBoard, to a JSONL file and to a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1reward.data.jsonl import append_jsonl, iter_jsonl, read_jsonl, write_jsonl


class MetricsLogger:
    # What the progress bar shows: only the metrics the stage has (SFT has no reward).
    RL_BAR = {"reward": "reward/mean", "acc": "reward/result_rate", "format": "reward/format_rate"}

    def __init__(
        self,
        output_dir: Path,
        total_steps: int,
        start_step: int = 0,
        desc: str = "train",
        bar_metrics: dict[str, str] | None = None,
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        self.path = output_dir / "metrics.jsonl"
        # A run killed after its last checkpoint logged steps that the resumed run logs again: keep
        # each step once, as an uninterrupted run would have it (TensorBoard drops steps >= purge_step).
        truncate_metrics(self.path, start_step)
        self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_step + 1)
        self.bar = tqdm(total=total_steps, initial=start_step, desc=desc, unit="step", dynamic_ncols=True)
        self.bar_metrics = self.RL_BAR if bar_metrics is None else bar_metrics

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        append_jsonl({"step": step, **metrics}, self.path)
        self.bar.update(1)
        self.bar.set_postfix({name: f"{metrics[key]:.3f}" for name, key in self.bar_metrics.items() if key in metrics})

    def close(self) -> None:
        self.writer.close()
        self.bar.close()


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keeps the rows of `path` with step <= last_step (atomically); returns how many were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    rows = [row for _, row in iter_jsonl(path)]
    kept = []
    for row in rows:
        try:
            if row["step"] <= last_step:  # a line cut short by a kill is a DataError: dropped
                kept.append(row)
        except (KeyError, TypeError):
            continue
    if len(kept) == len(rows):
        return 0
    write_jsonl(kept, path)
    return len(rows) - len(kept)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    return read_jsonl(path)


def format_timings(timings: dict[str, float]) -> str:
    total = sum(timings.values()) or 1.0
    width = max((len(name) for name in timings), default=0)
    rows = [f"  {name:<{width}} {seconds:8.2f} s  {100 * seconds / total:5.1f} %" for name, seconds in timings.items()]
    return "\n".join(["per-phase time of the last step:", *rows])


def idle_fractions(
    generations: list[Any], worker_roles: list[str], timings: dict[str, float], wall_s: float
) -> dict[str, float]:
    """Each role's share of the step's wall time spent not computing. Rollout: 1 - the seconds each
    worker spent inside generate calls started in this step (they all end within it: the step waits
    for them before the weight sync), averaged over the workers. Learner: 1 - the log-prob and train
    phases' seconds. The weight sync counts as idle for both."""
    wall = max(wall_s, 1e-9)
    busy = [sum(g.busy_s.get(role, 0.0) for g in generations) for role in worker_roles]
    rollout = sum(busy) / max(1, len(busy))
    learner = timings.get("experience", 0.0) + timings.get("train", 0.0)
    return {"idle/rollout": max(0.0, 1 - rollout / wall), "idle/learner": max(0.0, 1 - learner / wall)}
