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

from r1reward.config import validate
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


BATCH_KEY, SAMPLES_KEY = "profile/rollout_batch_size", "profile/n_samples_per_prompt"
Shape = tuple[int, int]  # (prompts per step, samples per prompt)


def _shape(row: dict[str, Any], config: Config) -> Shape:
    return (
        int(row.get(BATCH_KEY, config.trainer.rollout_batch_size)),
        int(row.get(SAMPLES_KEY, config.rollout.n_samples_per_prompt)),
    )


def measurement_of(rows: list[dict[str, Any]], config: Config, sync_bytes: float) -> Measurement:
    """Measured steps of one shape (metrics.jsonl rows) as a Measurement: each phase's median seconds."""
    phases = {name: _median(rows, METRIC_OF[name]) for name in PHASES}
    # time/step where the trainer logs it (the step's wall time), else the phases' sum (the synchronous step).
    steps = [float(r["time/step"]) if "time/step" in r else sum(r.get(METRIC_OF[p], 0.0) for p in PHASES) for r in rows]
    prompts, n = _shape(rows[0], config)
    workload = Workload(
        prompts,
        n,
        statistics.mean(float(r["response_length/mean"]) for r in rows),
        config.learner.epochs_per_rollout,
        sync_bytes,
    )
    split = Split(config.rollout.num_workers, config.learner.num_ranks)
    return Measurement(workload, split, phases, statistics.median(steps), [int(r["step"]) for r in rows])


def measurements_of(run_dir: Path, config: Config, sync_bytes: float) -> list[Measurement]:
    """One Measurement per step shape of a run (one if it kept its shape), leaving out the first step of
    each shape: the warm-up (compiling, allocating, first calls). In the order the shapes first ran."""
    by_shape: dict[Shape, list[dict[str, Any]]] = {}
    for row in sorted(read_metrics(run_dir / "metrics.jsonl"), key=lambda r: r["step"]):
        by_shape.setdefault(_shape(row, config), []).append(row)
    out = []
    for (prompts, n), rows in by_shape.items():
        if len(rows) < 2:
            raise UserError(
                f"{run_dir}: the steps of {prompts} prompts x {n} samples have none after their warm-up: "
                f"use more --steps"
            )
        out.append(measurement_of(rows[1:], config, sync_bytes))
    return out


def run_config(config: Config, steps: int, run_dir: Path, shapes: list[Shape]) -> Config:
    """`config` as a short synchronous profiling run in `run_dir` (fresh, no resume, one save at the end),
    sized for the largest of `shapes` (each a multiple of a valid shape, so each divides the batches too)."""
    new = copy.deepcopy(config)
    new.trainer.num_steps, new.trainer.num_epochs = steps, 0.0
    new.trainer.rollout_batch_size = max(p for p, _ in shapes)
    new.rollout.n_samples_per_prompt = max(n for _, n in shapes)
    new.trainer.output_dir, new.trainer.resume = str(run_dir), False
    new.trainer.save_every, new.trainer.max_restarts = steps, 0
    if hasattr(new.trainer, "max_staleness"):  # the model is of the synchronous step
        new.trainer.max_staleness = 0
    validate(new, origin="r1reward profile")
    return new


def profiling_trainer(config: Config, shapes: list[Shape]):
    """A Trainer whose step k runs shapes[k % len(shapes)] (prompts, samples per prompt), logged as
    profile/*: one run, one actor start-up, several work sizes. Its optimizer-step count (the LR
    schedule) is set from `config`, sized for the largest shape (run_config), so it never runs short."""
    from r1reward.trainer.driver import Trainer

    class ProfilingTrainer(Trainer):
        def train_step(self, step: int) -> dict[str, float]:
            prompts, n = shapes[step % len(shapes)]
            # Both are read by the step itself (prompt selection, generation, advantages).
            self.config.trainer.rollout_batch_size, self.config.rollout.n_samples_per_prompt = prompts, n
            return {**super().train_step(step), BATCH_KEY: float(prompts), SAMPLES_KEY: float(n)}

    return ProfilingTrainer(config)


def check_profile_args(steps: int, multipliers: tuple[int, ...]) -> None:
    """One line for arguments that cannot profile, before any actor starts."""
    if not multipliers or len(set(multipliers)) != len(multipliers) or min(multipliers) < 1:
        raise UserError(f"--batch-multipliers must be distinct positive whole numbers, got {list(multipliers)}")
    if steps < 2 * len(multipliers):
        raise UserError(
            f"--steps must be at least {2 * len(multipliers)}: a warm-up and a measured step per batch size, "
            f"got {steps}"
        )


def profile_run(config: Config, steps: int, out_dir: Path, shapes: list[Shape]) -> list[Measurement]:
    """One run of `steps` steps in out_dir cycling through `shapes`; a Measurement per shape."""
    cfg = run_config(config, steps, out_dir, shapes)
    profiling_trainer(cfg, shapes).run()
    return measurements_of(out_dir, cfg, sent_weight_bytes(config))


def profile_dict(config: Config, measurements: list[Measurement], steps: int, out_dir: Path) -> dict[str, Any]:
    """The profile file's content: the model calibrated from `measurements` and what each measured."""
    model = calibrate(measurements, config.rollout.max_new_tokens)
    model.model_path = config.model.path
    return {
        "version": PROFILE_VERSION,
        "calibrated_at": {
            "rollout_workers": config.rollout.num_workers,
            "learner_ranks": config.learner.num_ranks,
            "rollout_batch_sizes": [m.workload.prompts for m in measurements],
            "n_samples_per_prompt": [m.workload.samples_per_prompt for m in measurements],
            "steps": steps,
            "run_dir": str(out_dir),
        },
        **model.to_dict(),
        "measured": [measurement_dict(m) for m in measurements],
    }


def profile(config: Config, steps: int, out_dir: Path, multipliers: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """`r1reward profile`: `steps` steps of `config` in out_dir, the prompts per step cycling through
    `multipliers` x trainer.rollout_batch_size; returns the profile."""
    check_profile_args(steps, multipliers)
    n = config.rollout.n_samples_per_prompt
    shapes = [(config.trainer.rollout_batch_size * m, n) for m in multipliers]
    return profile_dict(config, profile_run(config, steps, out_dir, shapes), steps, out_dir)


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
