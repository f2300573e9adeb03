"""Cold-start SFT on the DeepSpeed learner ranks (the paper's stage 1): `r1reward sft`.

Same actors, checkpoint format, metrics and resume as RL; the loss is the negative log-likelihood of
the reasoning target's tokens. Each step takes `sft.train_batch_size` (else `learner.train_batch_size`)
examples in an order re-drawn every epoch from `data.seed` (r1reward/data/order.py), so a resumed run
sees the same examples as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from r1reward.config.load import validate_sft
from r1reward.config.schema import Config
from r1reward.data.order import step_indices
from r1reward.errors import UserError
from r1reward.lifetime import start_guard
from r1reward.trainer.checkpoint import claim_output_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from r1reward.trainer.metrics import MetricsLogger
from r1reward.trainer.run import ActorRun


class SFTTrainer(ActorRun):
    def __init__(self, config: Config) -> None:
        self.config = config
        self.output_dir = Path(config.sft.output_dir)
        self.step = 0
        self.run_id: str | None = None

    def setup(self) -> None:
        from transformers import AutoProcessor

        from r1reward.learner.group import LearnerGroup
        from r1reward.learner.sft_local import sft_examples
        from r1reward.placement.groups import create_placement_group, validate_cluster
        from r1reward.placement.plan import learner_plan
        from r1reward.placement.ray_init import ensure_ray

        cfg = self.config
        validate_sft(cfg)
        for path, key in ((cfg.sft.data_path, "sft.data_path"), (cfg.model.path, "model.path")):
            if not Path(path).exists() and not (key == "model.path" and not path.startswith(("/", ".", "runs/"))):
                raise UserError(f"{key} does not exist: {path}")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.run_id, checkpoint = claim_output_dir(
            self.output_dir, resume=cfg.sft.resume, overwrite=cfg.sft.overwrite, section="sft"
        )
        self.processor = AutoProcessor.from_pretrained(cfg.model.path)
        self.examples = sft_examples(self.processor, cfg.sft.data_path, cfg.data.min_pixels, cfg.data.max_pixels)
        batch = self.batch_size = cfg.sft.train_batch_size or cfg.learner.train_batch_size
        self.total_steps = max(1, math.ceil(len(self.examples) * cfg.sft.num_epochs / batch))
        start_guard()  # a local Ray and everything under it ends with this process, however it ends
        ensure_ray(cfg, self.output_dir / "logs")
        plan = learner_plan(cfg)
        validate_cluster(plan)
        self.placement_group, _ = create_placement_group(plan)
        self.learners = LearnerGroup.start(
            cfg,
            self.placement_group,
            plan.role_slots("learner"),
            self.total_steps,
            lr=cfg.sft.lr,
            train_batch_size=batch,
        )
        if checkpoint is not None:
            self.step = load_checkpoint(self.learners, checkpoint)["step"]
            print(f"resumed from {checkpoint} at step {self.step}")

    def _batch(self, step: int) -> list[dict[str, Any]]:
        size, count = self.batch_size, len(self.examples)
        return [self.examples[index] for _, index in step_indices(step, size, count, self.config.data.seed)]

    def groups(self) -> list[Any]:
        return [self.learners] if getattr(self, "learners", None) is not None else []

    def fit(self) -> dict[str, Any]:
        cfg = self.config
        logger = MetricsLogger(
            self.output_dir, self.total_steps, self.step, desc="sft", bar_metrics={"loss": "sft_loss"}
        )
        save_every = cfg.sft.save_every or self.total_steps
        last = latest_checkpoint(self.output_dir, self.run_id)
        try:
            while self.step < self.total_steps:
                parts = self.learners.sft_train(self._batch(self.step))
                self.step += 1
                logger.log(self.step, {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]})
                if self.step % save_every == 0 or self.step == self.total_steps:
                    last = save_checkpoint(
                        self.learners,
                        self.processor,
                        self.output_dir,
                        self.step,
                        {"stage": "sft", "config": asdict(cfg)},
                        run_id=self.run_id,
                    )
        finally:
            logger.close()
        return {"step": self.step, "checkpoint": str(last), "hf": str(Path(last) / "hf")}
