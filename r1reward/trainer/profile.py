"""`r1reward profile`: a few real training steps, read back as per-role throughputs for the step-time
model (r1reward/placement/stepmodel.py).

One ordinary `Trainer` run (synchronous: trainer.max_staleness = 0 where the config has it) whose steps
cycle through batch sizes (multiples of trainer.rollout_batch_size): the sizes differ in work only, so
each phase's fixed latency separates from its throughput (with one size the model is pure throughput).
Its metrics.jsonl gives each step's time/<phase> seconds and response length; with the config, that is
each phase's work. The first step of each size is left out: the warm-up (compiling, allocating).
"""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path
from typing import Any

from r1reward.config.schema import Config
from r1reward.errors import UserError
from r1reward.placement.stepmodel import (
    METRIC_OF,
    PHASES,
    Measurement,
    Split,
    Workload,
    calibrate,
)
from r1reward.trainer.metrics import read_metrics

PROFILE_VERSION = 1
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}


def sent_weight_bytes(config: Config) -> float:
    """Bytes one weight sync sends: the safetensors shapes of the model, less the vision tower when it is
    frozen (it is not resent), at model.dtype. 0 when the model is not a local folder."""
    from safetensors import safe_open

    folder = Path(config.model.path)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    size, total = DTYPE_BYTES.get(config.model.dtype, 4), 0
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():
                if config.model.freeze_vision and "visual." in key:
                    continue
                numel = 1
                for dim in handle.get_slice(key).get_shape():
                    numel *= dim
                total += numel
    return float(total * size)


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r.get(key, 0.0)) for r in rows)


BATCH_KEY = "profile/rollout_batch_size"


def measurement_of(rows: list[dict[str, Any]], config: Config, sync_bytes: float) -> Measurement:
    """Measured steps of one size (metrics.jsonl rows) as a Measurement: each phase's median seconds."""
    phases = {name: _median(rows, METRIC_OF[name]) for name in PHASES}
    # time/step where the trainer logs it (the step's wall time), else the phases' sum (the synchronous step).
    steps = [float(r["time/step"]) if "time/step" in r else sum(r.get(METRIC_OF[p], 0.0) for p in PHASES) for r in rows]
    workload = Workload(
        int(rows[0].get(BATCH_KEY, config.trainer.rollout_batch_size)),
        config.rollout.n_samples_per_prompt,
        statistics.mean(float(r["response_length/mean"]) for r in rows),
        config.learner.epochs_per_rollout,
        sync_bytes,
    )
    split = Split(config.rollout.num_workers, config.learner.num_ranks)
    return Measurement(workload, split, phases, statistics.median(steps), [int(r["step"]) for r in rows])


def measurements_of(run_dir: Path, config: Config, sync_bytes: float) -> list[Measurement]:
    """One Measurement per batch size of a run (one if it kept its size), leaving out the first step of
    each size: the warm-up (compiling, allocating, first calls)."""
    by_size: dict[int, list[dict[str, Any]]] = {}
    for row in read_metrics(run_dir / "metrics.jsonl"):
        by_size.setdefault(int(row.get(BATCH_KEY, config.trainer.rollout_batch_size)), []).append(row)
    out = []
    for size, rows in sorted(by_size.items()):
        if len(rows) < 2:
            raise UserError(f"{run_dir}: batch size {size} has no step after its warm-up step: use more --steps")
        out.append(measurement_of(sorted(rows, key=lambda r: r["step"])[1:], config, sync_bytes))
    return out


def run_config(config: Config, steps: int, run_dir: Path, batch: int) -> Config:
    """`config` as a short synchronous profiling run of `batch` prompts per step at most, in `run_dir`
    (fresh, no resume, one save at the end)."""
    new = copy.deepcopy(config)
    new.trainer.num_steps, new.trainer.num_epochs, new.trainer.rollout_batch_size = steps, 0.0, batch
    new.trainer.output_dir, new.trainer.resume = str(run_dir), False
    new.trainer.save_every, new.trainer.max_restarts = steps, 0
    if hasattr(new.trainer, "max_staleness"):  # the model is of the synchronous step
        new.trainer.max_staleness = 0
    return new


def profiling_trainer(config: Config, sizes: list[int]):
    """A Trainer whose step k takes sizes[k % len(sizes)] prompts (logged as profile/rollout_batch_size):
    one run, one actor start-up, several work sizes. Its optimizer-step count (the LR schedule) is set
    from config's rollout_batch_size, the largest size, so it never runs short."""
    from r1reward.trainer.driver import Trainer

    class ProfilingTrainer(Trainer):
        def train_step(self, step: int) -> dict[str, float]:
            size = sizes[step % len(sizes)]
            self.config.trainer.rollout_batch_size = size  # read by the step's prompt selection
            return {**super().train_step(step), BATCH_KEY: float(size)}

    return ProfilingTrainer(config)


def profile(config: Config, steps: int, out_dir: Path, multipliers: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Runs `steps` steps of `config` in out_dir, the prompts per step cycling through `multipliers` x
    trainer.rollout_batch_size, and returns the profile (calibrated model, what each size measured)."""
    sizes = [config.trainer.rollout_batch_size * m for m in multipliers]
    if len(set(sizes)) != len(sizes) or min(multipliers) < 1:
        raise UserError(f"--batch-multipliers must be distinct positive whole numbers, got {list(multipliers)}")
    if steps < 2 * len(sizes):
        raise UserError(
            f"--steps must be at least {2 * len(sizes)}: a warm-up and a measured step per batch size, got {steps}"
        )
    sync_bytes = sent_weight_bytes(config)
    cfg = run_config(config, steps, out_dir, max(sizes))
    profiling_trainer(cfg, sizes).run()
    measurements = measurements_of(out_dir, cfg, sync_bytes)
    model = calibrate(measurements, config.rollout.max_new_tokens)
    model.model_path = config.model.path
    return {
        "version": PROFILE_VERSION,
        "calibrated_at": {
            "rollout_workers": config.rollout.num_workers,
            "learner_ranks": config.learner.num_ranks,
            "rollout_batch_sizes": sizes,
            "n_samples_per_prompt": config.rollout.n_samples_per_prompt,
            "steps": steps,
            "run_dir": str(out_dir),
        },
        **model.to_dict(),
        "measured": [measurement_dict(m) for m in measurements],
    }


def measurement_dict(m: Measurement) -> dict[str, Any]:
    """What one batch size measured, with the model's inputs, for a reader to check the fit against."""
    return {
        "rollout_batch_size": m.workload.prompts,
        "n_samples_per_prompt": m.workload.samples_per_prompt,
        "response_tokens": m.workload.response_tokens,
        "steps": m.steps,
        "phases_s": m.phases,
        "step_s": m.step_s,
    }


def write_profile(data: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)
    return path
