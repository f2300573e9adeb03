"""Step-time model: how long one synchronous RL step takes for a rollout:learner split, and how idle each
role is. Pure Python (no Ray), beside the plan it chooses counts for; `r1reward profile` calibrates it
from a short real run and `r1reward-launch --ratio auto` enumerates the splits with it.

The synchronous step (trainer.max_staleness = 0) runs its phases one after another, so its time is their sum:

    step = prepare + generate + reward + logprobs + train + sync

Each phase is affine in the work of its busiest actor, the actor the phase waits for:

    phase = latency + work_on_the_busiest_actor / throughput_per_actor

with the work shared as the role groups share it (data-parallel):

    prepare   prompts P                                     (the driver; the split does not change it)
    generate  ceil(P / N) prompts x n samples x L tokens    (RolloutGroup: prompts split evenly over N workers)
    reward    P x n samples                                 (one reward actor)
    logprobs  ceil(P x n / M) samples                       (LearnerGroup: contiguous parts over M ranks)
    train     epochs_per_rollout x ceil(P x n / M) samples
    sync      B bytes of sent weights                       (one broadcast reaches every worker)

Assumptions, each a limit of the model: actors of a role run in parallel on their own devices and an
actor's throughput does not depend on how many there are (no shared cores, links or memory bandwidth);
the learners' gradient all-reduce and the sync broadcast cost the same for any N and M (they grow
slowly with the count on real links: read the prediction for far-away splits with that in mind);
the mean response length L is the profile's (capped at the target's rollout.max_new_tokens). The latency
term holds what does not shrink with the work (a call's round trip, vLLM's per-decode-step cost that a
larger batch shares): with one calibration size it is 0 (pure throughput), with two or more sizes it is
fitted by least squares.

Idle fraction of a role: 1 - (mean busy seconds of its actors) / step, as the trainer logs idle/*:
a rollout worker is busy in its own part of generate, a learner rank in its part of logprobs and train;
the weight sync counts as idle for both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1reward.config import Config
from r1reward.errors import UserError
from r1reward.placement.plan import PlacementError, split_fits, with_split

PHASES = ("prepare", "generate", "reward", "logprobs", "train", "sync")
EVERY_STEP = ("prepare", "reward", "sync")  # one call each, whatever the split
UNITS = {
    "prepare": "prompt",
    "generate": "generated token on the busiest rollout worker",
    "reward": "sample",
    "logprobs": "sample on the busiest learner rank",
    "train": "sample-epoch on the busiest learner rank",
    "sync": "byte",
}
# The trainer's time/<phase> metric for each model phase (experience = old log-probs + advantages).
METRIC_OF = {
    "prepare": "time/prepare",
    "generate": "time/generate",
    "reward": "time/reward",
    "logprobs": "time/experience",
    "train": "time/train",
    "sync": "time/sync",
}


@dataclass(frozen=True)
class Workload:
    """What one step does: read from the config (and the profile's measured response length)."""

    prompts: int  # trainer.rollout_batch_size
    samples_per_prompt: int  # rollout.n_samples_per_prompt
    response_tokens: float  # mean generated tokens per sample
    epochs_per_rollout: int = 1
    sync_bytes: float = 0.0  # weights sent per sync (0: unknown, the sync phase is then its latency)

    @property
    def samples(self) -> int:
        return self.prompts * self.samples_per_prompt


@dataclass(frozen=True)
class Split:
    rollout_workers: int
    learner_ranks: int


def prompts_per_worker(prompts: int, workers: int) -> list[int]:
    """RolloutGroup's even split (r1reward.placement.remote.split_even): sizes differ by at most one."""
    size, extra = divmod(prompts, workers)
    return [size + (i < extra) for i in range(workers)]


def samples_per_rank(samples: int, ranks: int) -> list[int]:
    """LearnerGroup's contiguous split (r1reward.placement.remote.split): ceil-sized parts, the last shorter."""
    size = -(-samples // ranks)
    return [max(0, min(size, samples - i * size)) for i in range(ranks)]


def phase_work(workload: Workload, split: Split) -> dict[str, list[float]]:
    """Each phase's work per actor (one entry for the driver, the reward actor and the sync)."""
    w, n, length = workload, workload.samples_per_prompt, workload.response_tokens
    ranks = samples_per_rank(w.samples, split.learner_ranks)
    return {
        "prepare": [float(w.prompts)],
        "generate": [float(p * n * length) for p in prompts_per_worker(w.prompts, split.rollout_workers)],
        "reward": [float(w.samples)],
        "logprobs": [float(s) for s in ranks],
        "train": [float(s * w.epochs_per_rollout) for s in ranks],
        "sync": [float(w.sync_bytes)],
    }


@dataclass(frozen=True)
class PhaseCost:
    latency_s: float = 0.0
    seconds_per_unit: float = 0.0

    def time(self, work: float) -> float:
        return self.latency_s + self.seconds_per_unit * work


Devices = Callable[[Split], tuple[float, float]]  # a split -> (devices in all, learner devices)


@dataclass(frozen=True)
class Prediction:
    split: Split
    phases: dict[str, float]  # seconds
    step_s: float
    idle_rollout: float
    idle_learner: float


@dataclass
class StepModel:
    """Per-phase costs (the calibrated throughputs) and the profile's mean response length."""

    costs: dict[str, PhaseCost]
    response_tokens: float
    sync_bytes: float = 0.0
    max_new_tokens: int = 0  # the profile's (for the record; a target's caps the length)
    model_path: str = ""  # the model profiled

    def predict(self, workload: Workload, split: Split) -> Prediction:
        work = phase_work(workload, split)
        # A rollout worker or learner rank without work is not called: it costs nothing. The driver's
        # phases run every step (a sync of unknown size is its latency).
        busy = {
            name: [self.costs[name].time(x) if x > 0 or name in EVERY_STEP else 0.0 for x in work[name]]
            for name in PHASES
        }
        phases = {name: max(busy[name]) for name in PHASES}
        step = sum(phases.values())
        rollout = sum(busy["generate"]) / split.rollout_workers
        learner = sum(a + b for a, b in zip(busy["logprobs"], busy["train"])) / split.learner_ranks
        return Prediction(
            split,
            phases,
            step,
            idle_rollout=_idle(rollout, step),
            idle_learner=_idle(learner, step),
        )

    def workload(self, prompts: int, samples_per_prompt: int, epochs: int, max_new_tokens: int) -> Workload:
        """A target config's step: the profile's mean response length, capped at its max_new_tokens."""
        length = self.response_tokens if max_new_tokens <= 0 else min(self.response_tokens, float(max_new_tokens))
        return Workload(prompts, samples_per_prompt, length, epochs, self.sync_bytes)

    def throughputs(self) -> dict[str, float]:
        """The per-role figures a reader compares across machines (units per second and per actor),
        from the throughput term alone (the latency is reported beside them)."""

        def rate(name: str) -> float:
            s = self.costs[name].seconds_per_unit
            return 1.0 / s if s > 0 else math.inf

        return {
            "rollout_tokens_per_s_per_worker": rate("generate"),
            "rollout_samples_per_s_per_worker": rate("generate") / max(self.response_tokens, 1e-9),
            "learner_logprob_samples_per_s_per_rank": rate("logprobs"),
            "learner_train_samples_per_s_per_rank": rate("train"),
            "reward_samples_per_s": rate("reward"),
            "prepare_prompts_per_s": rate("prepare"),
            "sync_s_per_byte": self.costs["sync"].seconds_per_unit,
        }

    def to_dict(self) -> dict:
        return {
            "model_path": self.model_path,
            "response_tokens": self.response_tokens,
            "sync_bytes": self.sync_bytes,
            "max_new_tokens": self.max_new_tokens,
            "phases": {name: {**asdict(self.costs[name]), "unit": UNITS[name]} for name in PHASES},
            "throughput": {k: (None if math.isinf(v) else v) for k, v in self.throughputs().items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> StepModel:
        """Raises KeyError/TypeError/ValueError on a malformed profile (the caller names the file)."""
        costs = {}
        for name in PHASES:
            entry = data["phases"][name]
            costs[name] = PhaseCost(float(entry["latency_s"]), float(entry["seconds_per_unit"]))
            if costs[name].latency_s < 0 or costs[name].seconds_per_unit < 0:
                raise ValueError(f"phase {name} has a negative cost")
        return cls(
            costs,
            float(data["response_tokens"]),
            float(data.get("sync_bytes", 0.0)),
            int(data.get("max_new_tokens", 0)),
            str(data.get("model_path", "")),
        )


def load_step_model(path: str | Path) -> StepModel:
    """The StepModel of a profile file (`r1reward profile`); a missing or malformed file is one UserError line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"profile file not found: {path} (write one with `r1reward profile --config FILE`)")
    try:
        return StepModel.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"{path}: not a profile written by `r1reward profile` ({type(e).__name__}: {e})") from None


def _idle(busy: float, step: float) -> float:
    return min(1.0, max(0.0, 1.0 - busy / step)) if step > 0 else 0.0


@dataclass(frozen=True)
class Measurement:
    """One measured configuration: its workload, split and each phase's seconds (median over steps)."""

    workload: Workload
    split: Split
    phases: dict[str, float]
    step_s: float = 0.0
    steps: list[int] = field(default_factory=list)


def fit_affine(points: list[tuple[float, float]]) -> PhaseCost:
    """(work, seconds) -> latency + seconds_per_unit * work, least squares. One distinct work size (or
    none): a line through the origin (pure throughput). A fitted negative latency or slope (noise) falls
    back to the other term alone, so that the cost never shrinks with more work."""
    points = [(x, y) for x, y in points if x > 0]
    if not points:
        return PhaseCost()
    xs = {x for x, _ in points}
    if len(xs) == 1:
        return PhaseCost(0.0, sum(y for _, y in points) / sum(x for x, _ in points))
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    latency = my - slope * mx
    if slope <= 0:  # more work was not slower: the phase is latency-bound at these sizes
        return PhaseCost(max(0.0, my), 0.0)
    if latency < 0:
        return PhaseCost(0.0, sum(x * y for x, y in points) / sum(x * x for x, _ in points))
    return PhaseCost(latency, slope)


def calibrate(measurements: list[Measurement], max_new_tokens: int = 0) -> StepModel:
    """A StepModel from measured runs: each phase's measured seconds against its busiest actor's work."""
    if not measurements:
        raise ValueError("calibrate needs at least one measurement")
    costs = {}
    for name in PHASES:
        points = [(max(phase_work(m.workload, m.split)[name]), m.phases.get(name, 0.0)) for m in measurements]
        if name == "sync" and all(x <= 0 for x, _ in points):  # bytes unknown: the sync is a constant
            costs[name] = PhaseCost(sum(y for _, y in points) / len(points), 0.0)
        else:
            costs[name] = fit_affine(points)
    weights = [m.workload.samples for m in measurements]
    length = sum(m.workload.response_tokens * w for m, w in zip(measurements, weights)) / sum(weights)
    return StepModel(costs, length, measurements[0].workload.sync_bytes, max_new_tokens)


def relative_error(predicted: float, measured: float) -> float:
    return abs(predicted - measured) / measured if measured > 0 else math.inf


def fastest(predictions: list[Prediction], gpus_of: Devices) -> Prediction:
    """The shortest predicted step; a tie (within 1%: below the model's resolution) goes to the split with
    fewer devices in all, then fewer learner devices (`gpus_of(split)` -> (total, learner))."""
    best = min(p.step_s for p in predictions)
    close = [p for p in predictions if p.step_s <= best * 1.01]
    return min(close, key=lambda p: (*gpus_of(p.split), p.step_s))


def format_predictions(predictions: list[Prediction], chosen: Prediction, devices: Devices, unit: str) -> str:
    """One row per split: counts, devices, predicted phase and step seconds, idle fractions; * marks the choice."""
    head = ("", "rollout", "learner", f"{unit}s", *PHASES, "step_s", "idle_rollout", "idle_learner")
    rows = [head]
    for p in predictions:
        rows.append(
            (
                "*" if p is chosen else "",
                str(p.split.rollout_workers),
                str(p.split.learner_ranks),
                f"{devices(p.split)[0]:g}",
                *(f"{p.phases[name]:.3g}" for name in PHASES),
                f"{p.step_s:.3g}",
                f"{p.idle_rollout:.2f}",
                f"{p.idle_learner:.2f}",
            )
        )
    widths = [max(len(r[k]) for r in rows) for k in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# --- a config's splits on a cluster ---------------------------------------------------------------


def device_unit(config: Config) -> tuple[str, float, float]:
    """What a split divides: ("GPU", GPUs per rollout worker incl. TP, per learner rank), or the CPUs
    when the config asks for no GPUs (the CPU setups here). Raises PlacementError where no split applies."""
    res, tp = config.resources, config.rollout.tensor_parallel_size
    if res.colocate:
        raise PlacementError("--ratio auto splits devices between rollout and learner; not with resources.colocate")
    g_r, g_l = tp * res.gpus_per_rollout_worker, res.gpus_per_learner_rank
    if g_r > 0 and g_l > 0:
        return "GPU", g_r, g_l
    if g_r == 0 and g_l == 0 and res.cpus_per_rollout_worker > 0 and res.cpus_per_learner_rank > 0:
        return "CPU", res.cpus_per_rollout_worker, res.cpus_per_learner_rank
    raise PlacementError(
        "--ratio auto needs GPUs for both roles (resources.gpus_per_rollout_worker and gpus_per_learner_rank "
        "> 0) or for neither"
    )


def useful_workers(prompts: int, workers: int) -> int:
    """The fewest workers whose busiest one gets as many prompts as with `workers`: more add no speed."""
    load = -(-prompts // workers)
    return max(1, -(-prompts // load))


def candidate_splits(config: Config, nodes: list[dict[str, float]]) -> list[Split]:
    """For each learner count the config accepts (its batches divide) and the cluster holds: the most
    rollout workers that still fit beside it, cut to the workers that get prompts. Ascending learner count."""
    unit, per_r, per_l = device_unit(config)
    total = sum(n.get(unit, 0.0) for n in nodes)
    out = []
    for ranks in range(1, int(total // per_l) + 1):
        if not split_fits(with_split(config, 1, ranks), nodes):
            continue  # the batches do not split over this many ranks, or they do not fit at all
        most = int((total - ranks * per_l) // per_r)
        workers = next((w for w in range(most, 0, -1) if split_fits(with_split(config, w, ranks), nodes)), 0)
        if workers:
            out.append(Split(useful_workers(config.trainer.rollout_batch_size, workers), ranks))
    return out


def config_workload(config: Config, model: StepModel) -> Workload:
    return model.workload(
        config.trainer.rollout_batch_size,
        config.rollout.n_samples_per_prompt,
        config.learner.epochs_per_rollout,
        config.rollout.max_new_tokens,
    )


def devices_of(config: Config, split: Split) -> tuple[float, float]:
    """(devices in all, learner devices) of a split: the rollout and learner ones, the judge's not counted."""
    _, per_r, per_l = device_unit(config)
    learner = split.learner_ranks * per_l
    return split.rollout_workers * per_r + learner, learner


def predict_splits(
    config: Config, nodes: list[dict[str, float]], model: StepModel
) -> tuple[list[Prediction], Prediction]:
    """Every candidate split's prediction and the fastest (ties: fewer devices, then fewer learner ones).
    Raises PlacementError when no split fits."""
    splits = candidate_splits(config, nodes)
    if not splits:
        unit = device_unit(config)[0]
        have = sum(n.get(unit, 0.0) for n in nodes)
        raise PlacementError(
            f"no rollout:learner split of {have:g} {unit}s fits this config (one worker and one rank at the "
            f"least, a learner count that divides the batches); add {unit}s or change the batches"
        )
    workload = config_workload(config, model)
    predictions = [model.predict(workload, s) for s in splits]
    return predictions, fastest(predictions, lambda s: devices_of(config, s))
