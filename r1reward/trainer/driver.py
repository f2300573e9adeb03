"""The training driver: one readable loop over the paper's algorithm box.

    generate (rollout workers) -> score (reward actor) -> experience (old log-probs, returns,
    advantage filter) -> update (learner ranks) -> sync weights (learners -> rollout workers)

Actors, placement and checkpoints are set up here; the maths lives in `r1reward.algo` and
`r1reward.trainer.experience`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from r1reward.config.schema import Config
from r1reward.data.order import step_indices, steps_for_epochs
from r1reward.errors import UserError
from r1reward.lifetime import start_guard
from r1reward.trainer.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from r1reward.trainer.actors import ActorRun, bundle_node_ip, ensure_ray, learner_roles, split, start_learners
from r1reward.trainer.experience import assign_advantages, logprob_gap, make_samples, prepare_prompt
from r1reward.trainer.metrics import MetricsLogger, format_timings
from r1reward.waits import WaitError, error_line, wait_all


class RunStopped(UserError):
    """An actor died or did not answer mid-run: the one line names the role, the step and the checkpoint."""


class Trainer(ActorRun):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.output_dir = Path(config.trainer.output_dir)
        self.timings: dict[str, float] = {}
        self.step = 0

    def _wait(self, refs: list[Any], roles: list[str], call: str, timeout_s: float | None = None) -> list[Any]:
        """Every remote wait of the run: bounded by the config, failing with the role named."""
        return wait_all(refs, roles, call, timeout_s or self.config.timeouts.remote_call_s)

    def _learner_wait(self, refs: list[Any], call: str, timeout_s: float | None = None) -> list[Any]:
        return self._wait(refs, learner_roles(len(refs)), call, timeout_s)

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
        tokens = lambda record: len(self.processor.tokenizer(record.question + record.response_1 + record.response_2).input_ids)
        self.dataset = PreferenceDataset.from_file(
            cfg.data.train_path, cfg.data.schema, swap_seed=cfg.data.seed, **load_options(cfg),
            strict=cfg.data.strict, max_prompt_tokens=cfg.data.max_prompt_tokens, token_counter=tokens,
            unique_ids=True)  # a repeated pair would be trained on twice as often
        if len(self.dataset) == 0:
            raise UserError(f"no usable rows in {cfg.data.train_path}")
        report = self.dataset.report
        if report is not None:  # the rows skipped, by reason, beside the metrics
            (self.output_dir / "data_report.json").write_text(
                json.dumps({**report.as_dict(), "first_bad_rows": report.examples}, indent=1))

    def _start_actors(self) -> None:
        import ray
        from vllm.utils.network_utils import get_open_port

        from r1reward.launch.plan import make_plan
        from r1reward.reward.actor import RewardActor
        from r1reward.rollout.worker import RolloutWorker
        from r1reward.sync.transfer import RayRolloutClient
        from r1reward.trainer.placement import create_placement_group, slot_options, validate_cluster

        cfg = self.config
        plan = make_plan(cfg)
        validate_cluster(plan)  # a clear error before any actor starts
        self.placement_group, _ = create_placement_group(plan)
        pg = self.placement_group
        pixels = (cfg.data.min_pixels, cfg.data.max_pixels)
        self.rollout = [ray.remote(RolloutWorker).options(**slot_options(pg, slot)).remote(
            cfg.model.path, asdict(cfg.rollout), pixels) for slot in plan.role_slots("rollout")]
        judge = None
        if cfg.reward.judge == "vllm":  # the judge model gets its planned slot (a GPU on a cluster)
            from r1reward.reward.actor import make_judge_actor_class

            judge = make_judge_actor_class().options(**slot_options(pg, plan.role_slots("judge")[0])).remote(
                cfg.reward.judge_model, kv_cache_memory_bytes=cfg.rollout.kv_cache_memory_bytes,
                gpu_memory_utilization=cfg.rollout.gpu_memory_utilization)
        self.reward = ray.remote(RewardActor).options(**slot_options(pg, plan.role_slots("reward")[0])).remote(
            asdict(cfg.reward), judge)
        samples = cfg.trainer.rollout_batch_size * cfg.rollout.n_samples_per_prompt
        optimizer_steps = cfg.trainer.num_steps * cfg.learner.epochs_per_rollout * samples // cfg.learner.train_batch_size
        self.learners = start_learners(cfg, pg, plan.role_slots("learner"), optimizer_steps)
        self._wait([worker.ready.remote() for worker in self.rollout], self._rollout_roles(), "rollout start-up",
                   cfg.timeouts.startup_s)
        client = RayRolloutClient(self.rollout, cfg.rollout.tensor_parallel_size, cfg.timeouts.weight_sync_s)
        # Rank 0 of the sync group is learner rank 0, so it listens on that rank's node.
        sync_master = (bundle_node_ip(pg, plan.role_slots("learner")[0].bundle), get_open_port())
        self._learner_wait([learner.init_weight_sync.remote(client, *sync_master) for learner in self.learners],
                           "weight sync set-up", cfg.timeouts.weight_sync_s + 60)

    def _rollout_roles(self) -> list[str]:
        return [f"rollout worker {i}" for i in range(len(self.rollout))]

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

    def _generate(self, prompts: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
        cfg = self.config
        seeds = [cfg.trainer.seed * 1_000_003 + step * 10_007 + i for i in range(len(prompts))]
        chunks, seed_chunks = split(prompts, len(self.rollout)), split(seeds, len(self.rollout))
        busy = [(w, c, s, role) for w, c, s, role in zip(self.rollout, chunks, seed_chunks, self._rollout_roles()) if c]
        refs = [w.generate.remote(c, n=cfg.rollout.n_samples_per_prompt, seeds=s) for w, c, s, _ in busy]
        return [r for part in self._wait(refs, [role for *_, role in busy], "generate") for r in part]

    def _on_learners(self, method: str, samples: list[dict[str, Any]]) -> list[Any]:
        return self._learner_wait([getattr(l, method).remote(part)
                                   for l, part in zip(self.learners, split(samples, len(self.learners)))], method)

    def _sync_weights(self, step: int | None = None) -> None:
        """Learners -> rollout workers. Each side bounds its own waits by timeouts.weight_sync_s; the
        driver waits a little longer, so that the side that timed out names its peer first."""
        if step is not None and self.config.trainer.debug_stall_sync_step == step + 1:  # fault injection
            self._wait([self.rollout[0].debug_stall_next_update.remote()], ["rollout worker 0"], "debug stall")
        self._learner_wait([l.push_weights.remote() for l in self.learners], "weight sync",
                           self.config.timeouts.weight_sync_s + 60)

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.config
        with self._phase("prepare"):
            prompts = [prepare_prompt(self.processor, r, cfg.data.min_pixels, cfg.data.max_pixels)
                       for r in self._records_for(step)]
        with self._phase("generate"):
            # The workers hold the weights of `step` syncs (one per step; a resume pushes its checkpoint's).
            samples = make_samples(prompts, self._generate(prompts, step), policy_version=step)
        with self._phase("reward"):
            scores = self._wait([self.reward.score.remote([s.text for s in samples], [s.label for s in samples])],
                                ["reward actor"], "score")[0]
            for sample, reward in zip(samples, scores["reward"]):
                sample.reward = reward
        with self._phase("experience"):
            parts = self._on_learners("compute_logprobs", samples)  # old and (with KL) reference log-probs
            for key in parts[0]:  # "old_logprobs" and, with KL, "ref_logprobs": Sample fields
                for sample, logp in zip(samples, [x for part in parts for x in part[key]]):
                    setattr(sample, key, logp)
            metrics = {**assign_advantages(samples, scores["reward"], cfg.algo, cfg.rollout.n_samples_per_prompt),
                       **logprob_gap(samples)}
            if cfg.trainer.debug_nan_advantages_step == step + 1:  # fault injection (tests/test_faults.py)
                samples[0].advantages = [math.nan] * len(samples[0].advantages)
        with self._phase("train"):
            samples = [s.for_learner() for s in samples]  # what the learner does not need stays here
            nan_loss = cfg.trainer.debug_nan_loss_step == step + 1  # fault injection: rank 0's loss only
            parts = self._learner_wait([learner.train.remote(part, debug_nan_loss=nan_loss and rank == 0)
                                        for rank, (learner, part)
                                        in enumerate(zip(self.learners, split(samples, len(self.learners))))], "train")
        with self._phase("sync"):
            self._sync_weights(step)
        lengths = [len(s.completion_ids) for s in samples]
        metrics.update({k: sum(p[k] for p in parts) / len(parts) for k in parts[0]})
        metrics.update({
            "reward/mean": scores["reward_mean"], "reward/format_rate": scores["format_rate"],
            "reward/result_rate": scores["result_rate"], "reward/consistency_mean": scores["consistency_mean"],
            "reward/judge_failures": float(scores["judge_failures"]), "reward/parse_failures": float(scores["parse_failures"]),
            "response_length/mean": sum(lengths) / len(lengths), "response_length/max": float(max(lengths)),
            **{f"time/{k}": v for k, v in self.timings.items()}})
        return metrics

    # --- checkpoints ----------------------------------------------------------------------------
    def save_checkpoint(self, step: int) -> Path:
        state = {"samples_seen": step * self.config.trainer.rollout_batch_size, "config": asdict(self.config)}
        return save_checkpoint(self.learners, self.processor, self.output_dir, step, state,
                               keep=self.config.trainer.keep_checkpoints, timeout_s=self.config.timeouts.remote_call_s)

    def _resume(self) -> None:
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is None:
            return
        self.step = load_checkpoint(self.learners, checkpoint, timeout_s=self.config.timeouts.remote_call_s)["step"]
        self._sync_weights()  # the rollout workers start from the base model
        print(f"resumed from {checkpoint} at step {self.step}")

    # --- the loop -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Data, Ray, placement, actors, first sync on resume. Errors here come before any training."""

        cfg = self.config
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
        self._load_data()
        if cfg.trainer.num_epochs > 0:  # the number of steps follows from the usable rows
            cfg.trainer.num_steps = steps_for_epochs(len(self.dataset), cfg.trainer.num_epochs,
                                                     cfg.trainer.rollout_batch_size)
            (self.output_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
            print(f"{cfg.trainer.num_epochs} epoch(s) of {len(self.dataset)} prompts: {cfg.trainer.num_steps} steps")
        start_guard()  # a local Ray and everything under it ends with this process, however it ends
        ensure_ray(cfg, self.output_dir / "logs")
        self._start_actors()
        if cfg.trainer.resume:
            self._resume()

    def actors(self) -> list[Any]:
        reward = [self.reward] if getattr(self, "reward", None) is not None else []
        return [*getattr(self, "rollout", []), *getattr(self, "learners", []), *reward]

    def fit(self) -> dict[str, Any]:
        import ray

        cfg = self.config
        logger = MetricsLogger(self.output_dir, cfg.trainer.num_steps, self.step, desc="rl")
        last_saved = latest_checkpoint(self.output_dir)
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
    """`r1reward train`: Trainer.run(), started again from the last checkpoint after a dead or late actor,
    up to trainer.max_restarts times (bad input and a run without a checkpoint still end it)."""
    restarts = 0
    while True:
        try:
            return {**Trainer(config).run(), "restarts": restarts}
        except RunStopped as error:
            if restarts >= config.trainer.max_restarts or latest_checkpoint(Path(config.trainer.output_dir)) is None:
                raise
            restarts += 1
            print(f"{error}; restart {restarts} of {config.trainer.max_restarts}", flush=True)
            config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, resume=True))
