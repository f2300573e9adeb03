"""The training driver: one readable loop over the paper's algorithm box.

    generate (rollout workers) -> score (reward actor) -> experience (old log-probs, returns,
    advantage filter) -> update (learner ranks) -> sync weights (learners -> rollout workers)

With trainer.max_staleness = eta > 0 the workers generate the next eta batches while the learners
score and train on this one (the batch of step k+1 comes from the weights of step k); with eta = 0
each batch is generated at the start of its own step, as in the paper.

Actors, placement and checkpoints are set up here; starting and calling the actors goes through the
role groups (RolloutGroup, RewardGroup, LearnerGroup), so the step holds no Ray calls. The maths lives
in `r1reward.algo` and `r1reward.trainer.experience`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1reward.algo.staleness import bound_staleness
from r1reward.algo.stats import reduce_stats
from r1reward.config.schema import Config
from r1reward.data.order import step_indices, steps_for_epochs
from r1reward.data.samples import Sample
from r1reward.errors import UserError
from r1reward.lifetime import start_guard
from r1reward.trainer.checkpoint import claim_output_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from r1reward.trainer.experience import assign_advantages, logprob_gap, make_samples, prepare_prompt
from r1reward.trainer.metrics import MetricsLogger, format_timings, idle_fractions
from r1reward.trainer.run import ActorRun
from r1reward.waits import WaitError, error_line

if TYPE_CHECKING:  # the driver imports Ray's side only when it starts the actors
    from r1reward.rollout.group import Generation


@dataclass
class StepRollout:
    """A step's batch on its way: its prompts and the generation started for them on the rollout
    workers' weights of `policy_version`."""

    step: int
    prompts: list[dict[str, Any]]
    handle: Generation
    policy_version: int


class RunStopped(UserError):
    """An actor died or did not answer mid-run: the one line names the role, the step and the checkpoint."""


class Trainer(ActorRun):
    def __init__(self, config: Config, run_id: str | None = None) -> None:
        self.config = config
        self.output_dir = Path(config.trainer.output_dir)
        self.run_id = run_id  # set at start-up; given: a restart of that run
        self.resume_from: Path | None = None
        self.timings: dict[str, float] = {}
        self.step = 0
        self.rollout_version = 0  # weight syncs the rollout workers have received (0: the initial weights)
        self._ahead: dict[int, StepRollout] = {}  # steps generating ahead (max_staleness > 0)
        self._started: list[Generation] = []  # the generations started in the current step

    @contextmanager
    def _phase(self, name: str):
        start = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - start

    # --- set-up ---------------------------------------------------------------------------------
    def _load_data(self):
        from transformers import AutoProcessor

        from r1reward.data.check import load_options
        from r1reward.data.dataset import PreferenceDataset

        cfg = self.config
        if not Path(cfg.model.path).exists() and cfg.model.path.startswith(("/", ".", "runs/")):
            raise UserError(f"model.path does not exist: {cfg.model.path}")
        self.processor = AutoProcessor.from_pretrained(cfg.model.path)
        self.dataset = PreferenceDataset.from_file(
            cfg.data.train_path,
            cfg.data.schema,
            swap_seed=cfg.data.seed,
            **load_options(cfg, processor=self.processor),  # prompts measured as the engine sees them
            strict=cfg.data.strict,
            unique_ids=True,
        )  # a repeated pair would be trained on twice as often
        if len(self.dataset) == 0:
            raise UserError(f"no usable rows in {cfg.data.train_path}")
        report = self.dataset.report
        if report is not None:  # the rows skipped, by reason, beside the metrics
            (self.output_dir / "data_report.json").write_text(
                json.dumps({**report.as_dict(), "first_bad_rows": report.examples}, indent=1)
            )

    def _start_actors(self) -> None:
        from r1reward.learner.group import LearnerGroup
        from r1reward.placement.cores import assign_cores
        from r1reward.placement.groups import create_placement_group, validate_cluster
        from r1reward.placement.plan import make_plan
        from r1reward.reward.group import RewardGroup
        from r1reward.rollout.group import RolloutGroup

        cfg = self.config
        plan = make_plan(cfg)
        if cfg.resources.pin_cores:  # each actor holds itself to its slot's cores at its start
            plan = assign_cores(plan, sorted(os.sched_getaffinity(0)))
        validate_cluster(plan)  # a clear error before any actor starts
        self.placement_group, _ = create_placement_group(plan)
        pg = self.placement_group
        pixels = (cfg.data.min_pixels, cfg.data.max_pixels)
        # The engines load while the learners start; wait_ready below waits for them.
        self.rollout = RolloutGroup.start(
            cfg.model.path,
            asdict(cfg.rollout),
            pixels,
            pg,
            plan.role_slots("rollout"),
            wait=False,
            timeouts=cfg.timeouts,
        )
        self.reward = RewardGroup.start(cfg, pg, plan)
        samples = cfg.trainer.rollout_batch_size * cfg.rollout.n_samples_per_prompt
        optimizer_steps = (
            cfg.trainer.num_steps * cfg.learner.epochs_per_rollout * samples // cfg.learner.train_batch_size
        )
        self.learners = LearnerGroup.start(cfg, pg, plan.role_slots("learner"), optimizer_steps)
        self.rollout.wait_ready()
        self.reward.wait_ready()  # the judge answers, or start-up ends naming it
        self.learners.init_weight_sync(self.rollout.sync_client())

    # --- one step -------------------------------------------------------------------------------
    def _records_for(self, step: int):
        """The step's prompts: positions of a per-epoch shuffle (data/order.py), a pure function of the
        step, so a resumed run continues the same order. The epoch also sets the position swap."""
        batch = self.config.trainer.rollout_batch_size
        records = []
        for epoch, index in step_indices(step, batch, len(self.dataset), self.config.data.seed):
            if self.dataset.epoch != epoch:
                self.dataset.set_epoch(epoch)
            records.append(self.dataset[index])
        return records

    def _seeds(self, step: int, count: int) -> list[int]:
        """One sampling seed per prompt, a function of the step alone: a resumed or asynchronous run
        samples each step's prompts with the seeds of the synchronous one."""
        return [self.config.trainer.seed * 1_000_003 + step * 10_007 + i for i in range(count)]

    def _submit(self, step: int) -> StepRollout:
        """Prepare the step's prompts and start their generation on the workers' current weights."""
        cfg = self.config
        prompts = [
            prepare_prompt(self.processor, r, cfg.data.min_pixels, cfg.data.max_pixels) for r in self._records_for(step)
        ]
        handle = self.rollout.generate_async(
            prompts, n=cfg.rollout.n_samples_per_prompt, seeds=self._seeds(step, len(prompts))
        )
        self._started.append(handle)
        return StepRollout(step, prompts, handle, self.rollout_version)

    def _collect(self, rollout: StepRollout, step: int) -> tuple[list[Sample], dict[str, float]]:
        """The step's samples and their staleness counts. Samples more than trainer.max_staleness versions
        behind the learner (version `step`) are dropped, counted, and their prompts generated again now
        on the current weights (with their own seeds). The loop never submits further ahead than that, so
        none is dropped in a run; this guards the rule."""
        cfg = self.config
        n, eta = cfg.rollout.n_samples_per_prompt, cfg.trainer.max_staleness
        results = list(self.rollout.collect(rollout.handle))
        versions = [rollout.policy_version] * len(results)
        keep, counts = bound_staleness([v for v in versions for _ in range(n)], step, eta)
        again = sorted({i // n for i in set(range(len(results) * n)) - set(keep)})
        if again:
            seeds = self._seeds(step, len(results))
            fresh = self.rollout.generate_async(
                [rollout.prompts[i] for i in again], n=n, seeds=[seeds[i] for i in again]
            )
            self._started.append(fresh)
            for i, result in zip(again, self.rollout.collect(fresh)):
                results[i], versions[i] = result, self.rollout_version
            dropped = counts["staleness/dropped"]
            _, counts = bound_staleness([v for v in versions for _ in range(n)], step, eta)
            counts["staleness/dropped"] = dropped
        samples = make_samples(rollout.prompts, results, policy_version=rollout.policy_version)
        for sample in samples:
            sample.policy_version = versions[sample.prompt_index]
        return samples, counts

    def _submit_ahead(self, step: int) -> None:
        """With trainer.max_staleness = eta > 0, start generating steps step+1 .. step+eta (those not yet
        started) on the current weights; the workers run them while the learners train on this step."""
        last = min(step + self.config.trainer.max_staleness, self.config.trainer.num_steps - 1)
        for ahead in range(step + 1, last + 1):
            if ahead not in self._ahead:
                self._ahead[ahead] = self._submit(ahead)

    def _wait_ahead(self) -> None:
        """Generations in flight end on the weights they started with (and carry that version): weights
        change between batches, never inside one."""
        for rollout in self._ahead.values():
            self.rollout.collect(rollout.handle)

    def _sync_weights(self, step: int | None = None) -> None:
        """Learners -> rollout workers. Each side bounds its own waits by timeouts.weight_sync_s; the
        learner group waits a little longer, so that the side that timed out names its peer first."""
        self.learners.push_weights()
        # The workers now hold the learners' weights after `step + 1` updates (a resume: the checkpoint's).
        self.rollout_version = self.step if step is None else step + 1

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        started, self._started = time.perf_counter(), []
        with self._phase("prepare"):
            # Started a step ahead with max_staleness > 0; else prepared and generated now, as in the paper.
            rollout = self._ahead.pop(step, None) or self._submit(step)
        with self._phase("generate"):
            samples, staleness = self._collect(rollout, step)
        with self._phase("submit_ahead"):
            self._submit_ahead(step)
        with self._phase("reward"):
            scores = self.reward.score([s.text for s in samples], [s.label for s in samples])
            for sample, reward in zip(samples, scores["reward"]):
                sample.reward = reward
        with self._phase("experience"):
            parts = self.learners.compute_logprobs(samples)  # old and (with KL) reference log-probs
            for key in parts[0]:  # "old_logprobs" and, with KL, "ref_logprobs": Sample fields
                for sample, logp in zip(samples, [x for part in parts for x in part[key]]):
                    setattr(sample, key, logp)
            metrics = {
                **assign_advantages(samples, scores["reward"], cfg.algo, cfg.rollout.n_samples_per_prompt),
                **logprob_gap(samples, self.processor.tokenizer.decode),
                **staleness,
            }
        with self._phase("train"):
            samples = [s.for_learner() for s in samples]  # what the learner does not need stays here
            parts = self.learners.train(samples)
        with self._phase("rollout_wait"):
            self._wait_ahead()
        with self._phase("sync"):
            self._sync_weights(step)
        wall = time.perf_counter() - started
        lengths = [len(s.completion_ids) for s in samples]
        metrics.update(reduce_stats(parts))  # by kind: *_max the ranks' maximum, means weighted by tokens
        metrics.update(
            {
                "reward/mean": scores["reward_mean"],
                "reward/format_rate": scores["format_rate"],
                "reward/result_rate": scores["result_rate"],
                "reward/consistency_mean": scores["consistency_mean"],
                "reward/judge_failures": float(scores["judge_failures"]),
                "reward/judge_failure_rate": scores["judge_failure_rate"],  # over reward.judge_failure_window
                "reward/parse_failures": float(scores["parse_failures"]),
                "response_length/mean": sum(lengths) / len(lengths),
                "response_length/max": float(max(lengths)),
                **{f"time/{k}": v for k, v in self.timings.items()},
                "time/step": wall,
                **idle_fractions(self._started, self.rollout.roles, self.timings, wall),
            }
        )
        return metrics

    # --- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, step: int) -> Path:
        state = {"samples_seen": step * self.config.trainer.rollout_batch_size, "config": asdict(self.config)}
        keep = self.config.trainer.keep_checkpoints
        return save_checkpoint(self.learners, self.processor, self.output_dir, step, state, keep, self.run_id)

    def _resume(self) -> None:
        checkpoint = self.resume_from
        if checkpoint is None:
            return
        self.step = load_checkpoint(self.learners, checkpoint)["step"]
        self._sync_weights()  # the rollout workers start from the base model
        print(f"resumed from {checkpoint} at step {self.step}")

    # --- the loop -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Data, Ray, placement, actors, first sync on resume. Errors here come before any training."""

        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        t = cfg.trainer  # whether this run may use output_dir: before anything in it is written
        self.run_id, self.resume_from = claim_output_dir(
            self.output_dir, resume=t.resume, overwrite=t.overwrite, section="trainer", run_id=self.run_id
        )
        (self.output_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        self._load_data()
        if cfg.trainer.num_epochs > 0:  # the number of steps follows from the usable rows
            cfg.trainer.num_steps = steps_for_epochs(
                len(self.dataset), cfg.trainer.num_epochs, cfg.trainer.rollout_batch_size
            )
            (self.output_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
            print(f"{cfg.trainer.num_epochs} epoch(s) of {len(self.dataset)} prompts: {cfg.trainer.num_steps} steps")
        from r1reward.placement.ray_init import ensure_ray

        start_guard()  # a local Ray and everything under it ends with this process, however it ends
        ensure_ray(cfg, self.output_dir / "logs")
        self._start_actors()
        if cfg.trainer.resume:
            self._resume()

    def groups(self) -> list[Any]:
        return [g for g in (getattr(self, n, None) for n in ("rollout", "learners", "reward")) if g is not None]

    def fit(self) -> dict[str, Any]:
        import ray

        cfg = self.config
        logger = MetricsLogger(self.output_dir, cfg.trainer.num_steps, self.step, desc="rl")
        last_saved = latest_checkpoint(self.output_dir, self.run_id)
        try:
            while self.step < cfg.trainer.num_steps:
                metrics = self.train_step(self.step)
                self.step += 1
                logger.log(self.step, metrics)
                if self.step % cfg.trainer.save_every == 0 or self.step == cfg.trainer.num_steps:
                    last_saved = self.save_checkpoint(self.step)
        except (ray.exceptions.RayError, WaitError) as error:
            hint = f"; resume from {last_saved} with trainer.resume=true" if last_saved else ""
            what = str(error) if isinstance(error, WaitError) else error_line(error)
            raise RunStopped(f"training stopped at step {self.step + 1}: {what}{hint}") from error
        finally:
            logger.close()
        print(format_timings(self.timings))
        return {"step": self.step, "checkpoint": str(last_saved), "timings": dict(self.timings)}


def train(config: Config) -> dict[str, Any]:
    """`r1reward train`: Trainer.run(), started again from its last checkpoint after a dead or late actor,
    up to trainer.max_restarts times (bad input and a run without a checkpoint of its own still end it)."""
    restarts, run_id = 0, None
    while True:
        trainer = Trainer(config, run_id)
        try:
            return {**trainer.run(), "restarts": restarts}
        except RunStopped as error:
            run_id = trainer.run_id
            own = latest_checkpoint(Path(config.trainer.output_dir), run_id) if run_id else None
            if restarts >= config.trainer.max_restarts or own is None:
                raise
            restarts += 1
            print(f"{error}; restart {restarts} of {config.trainer.max_restarts}", flush=True)
            config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, resume=True))
