"""A learner rank: a Ray actor holding one DeepSpeed engine of the reward model.

It recomputes log-probs of generated tokens on the multimodal inputs, applies the StableReinforce
update over micro-batches, saves and restores checkpoints, and sends its weights to the rollout
workers through the sync module. Ranks form one torch.distributed group (gloo on CPU, NCCL on GPU).

With `algo.kl_coef > 0` each rank also holds a frozen reference copy of the initial model (as
OpenRLHF keeps one beside each actor rank), which gives `ref_logprobs` for the KL penalty in the
reward; with `kl_coef == 0` none is loaded.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch

from r1reward.algo.stats import reduce_stats
from r1reward.config.schema import AlgoConfig, LearnerConfig, ModelConfig, TimeoutsConfig
from r1reward.data.collate import collate_for_learner
from r1reward.data.samples import Batch, Sample
from r1reward.learner.loss import SamplingParams, policy_loss_on_micro_batch, token_logprobs
from r1reward.placement.cores import pin_this_process

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cosine_with_warmup(total_steps: int, warmup_ratio: float, min_lr_ratio: float):
    """The reference run's schedule: linear warm-up, then cosine down to min_lr_ratio x lr."""
    warmup = max(1, math.ceil(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def rank_files(roots: list[str], rank: int) -> list[tuple[str, int]]:
    """(path, size) of the files under `roots` that `rank` wrote: DeepSpeed names a rank's ZeRO shards
    `*zero_pp_rank_<rank>_*`; every other file (model states, `latest`, the HF model) is rank 0's."""
    shard = re.compile(r"zero_pp_rank_(\d+)_")
    out = []
    for root in roots:
        for folder, _, names in os.walk(root):
            for name in sorted(names):
                owner = int(m.group(1)) if (m := shard.search(name)) else 0
                if owner == rank:
                    path = os.path.join(folder, name)
                    out.append((path, os.path.getsize(path)))
    return out


def _no_step(closure: Any = None) -> None:
    return None


class UpdateClock:
    """Seconds of each part of an update (forward, backward, optimizer), summed over its micro-batches,
    so that a step's breakdown can tell the update's own work from the calls around it. On a GPU each
    part waits for the device at its end, or the clock would read the kernel launches only."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, part: str):
        start = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds[part] += time.perf_counter() - start

    def stats(self) -> dict[str, float]:
        """`time/update/<part>_max`, with the step's other timings: over the ranks the slowest one's
        seconds (`reduce_stats` reads `_max`)."""
        return {f"time/update/{part}_max": seconds for part, seconds in self.seconds.items()}


def _gradients_finite(module: torch.nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class LearnerRank:
    def __init__(
        self,
        rank: int,
        world_size: int,
        master_address: str,
        master_port: int,
        model_path: str,
        model_cfg: dict,
        learner_cfg: dict,
        algo_cfg: dict,
        total_optimizer_steps: int,
        seed: int = 0,
        timeouts: dict[str, float] | None = None,
        sampling_temperature: float = 1.0,
        cores: tuple[int, ...] = (),
    ) -> None:
        pin_this_process(cores)  # before DeepSpeed and gloo start their threads (resources.pin_cores)
        self.rank, self.world_size = rank, world_size
        # The rendezvous and every collective between ranks (gloo/NCCL) fail after collective_s, not never.
        self.timeouts = TimeoutsConfig(**(timeouts or {}))
        self.model_cfg, self.cfg, self.algo = (
            ModelConfig(**model_cfg),
            LearnerConfig(**learner_cfg),
            AlgoConfig(**algo_cfg),
        )
        cuda = torch.cuda.is_available()
        backend = self.cfg.backend if self.cfg.backend != "auto" else ("nccl" if cuda else "gloo")
        os.environ.update(
            MASTER_ADDR=master_address,
            MASTER_PORT=str(master_port),
            RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_RANK="0",
        )
        if not cuda:
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        import deepspeed
        from transformers import AutoModelForImageTextToText

        from r1reward.learner.ops import bounded_extension_lock

        with bounded_extension_lock():  # on the CPU it loads a JIT-built op under a lock file
            deepspeed.init_distributed(dist_backend=backend, timeout=timedelta(seconds=self.timeouts.collective_s))
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=DTYPES[self.model_cfg.dtype])
        if self.model_cfg.freeze_vision:
            model.model.visual.requires_grad_(False)
        if self.model_cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.pad_token_id = model.config.text_config.pad_token_id or 0
        self.mm_token_ids = (model.config.image_token_id, model.config.video_token_id)
        # The rollout's distribution (algo/sampling.py): its temperature, and the vision tokens it bans.
        vision = ("vision_start_token_id", "vision_end_token_id", "image_token_id", "video_token_id")
        banned = tuple(i for i in (getattr(model.config, name, None) for name in vision) if i is not None)
        self.sampling = SamplingParams(sampling_temperature, banned)
        grad_accum = self.cfg.train_batch_size // (world_size * self.cfg.micro_batch_size)
        ds_config = {
            "train_batch_size": self.cfg.train_batch_size,
            "train_micro_batch_size_per_gpu": self.cfg.micro_batch_size,
            "gradient_accumulation_steps": grad_accum,
            "gradient_clipping": self.cfg.grad_clip,
            "zero_optimization": {"stage": self.cfg.zero_stage},
            "optimizer": {
                "type": "AdamW",
                "params": {
                    "lr": self.cfg.lr,
                    "betas": list(self.cfg.adam_betas),
                    "weight_decay": self.cfg.weight_decay,
                    "torch_adam": True,
                },
            },
            "bf16": {"enabled": self.model_cfg.dtype == "bfloat16"},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        schedule = cosine_with_warmup(total_optimizer_steps, self.cfg.warmup_ratio, self.cfg.min_lr_ratio)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            config=ds_config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule),
        )
        self.device = self.engine.device
        self.weight_sender = None
        # The reference is the model the run starts from (model_path), also after a resume.
        self.reference = self._load_reference(model_path, ds_config) if self.algo.kl_coef > 0 else None

    def _load_reference(self, model_path: str, ds_config: dict[str, Any]) -> Any:
        """A frozen copy of the initial model: no gradients, no optimizer; ZeRO-3 shards it like the policy."""
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(model_path, dtype=DTYPES[self.model_cfg.dtype])
        model.requires_grad_(False).eval()
        if self.cfg.zero_stage != 3:
            return model.to(self.device)
        import deepspeed

        eval_config = {k: v for k, v in ds_config.items() if k not in ("optimizer", "gradient_clipping")}
        engine, *_ = deepspeed.initialize(model=model, config=eval_config)
        engine.eval()
        return engine

    # --- log-probs ------------------------------------------------------------------------------
    def _forward_logprobs(self, batch: Batch, model: Any = None) -> torch.Tensor:
        """Log-prob of each next token, [B, T-1], aligned with the batch's action mask; `model` is the
        policy engine unless given (the reference)."""
        model = self.engine if model is None else model
        return token_logprobs(
            model, batch, self.mm_token_ids, self.device, self.cfg.completion_logits_only, self.sampling
        )

    def _micro_batches(self, samples: list[Sample] | list[dict[str, Any]]):
        size = self.cfg.micro_batch_size
        for start in range(0, len(samples), size):
            yield collate_for_learner(samples[start : start + size], self.pad_token_id)

    @torch.no_grad()
    def compute_logprobs(self, samples: list[Sample]) -> dict[str, list[list[float]]]:
        """Per-token log-probs of each sample's completion: `old_logprobs` from the current policy and,
        when a reference model is loaded (kl_coef > 0), `ref_logprobs` from it."""
        self.engine.eval()
        from_sampler = self.algo.old_logprobs == "sampler"  # only the reference's forward is left to run
        models = {} if from_sampler else {"old_logprobs": None}
        models |= {"ref_logprobs": self.reference} if self.reference is not None else {}
        out: dict[str, list[list[float]]] = {key: [] for key in models}
        if from_sampler:
            out["old_logprobs"] = [list(s.sampler_logprobs) for s in samples]
        for batch in self._micro_batches(samples):
            mask = batch.action_mask
            for key, model in models.items():
                logp = self._forward_logprobs(batch, model).cpu()
                out[key].extend(logp[i][mask[i]].tolist() for i in range(logp.shape[0]))
        return out

    # --- the update -----------------------------------------------------------------------------
    def train(self, samples: list[Sample]) -> dict[str, float]:
        """One pass per epoch over this rank's samples (which carry `old_logprobs` and `advantages`).

        An optimizer step whose micro-batches gave a non-finite loss, or non-finite gradients, on any
        rank is skipped on every rank: no optimizer or LR-schedule step, gradients dropped, weights and
        optimizer state as they were (`_step`). Its micro-batches count in `nonfinite_skipped` and are
        left out of the statistics, which are reduced by kind (`reduce_stats`)."""
        self.engine.train()
        clock = UpdateClock(self.device)
        started = time.perf_counter()
        kept: list[dict[str, float]] = []  # stats of the micro-batches whose update was applied
        window: list[dict[str, float]] = []  # stats of the micro-batches of the step being accumulated
        keys: set[str] = set()
        skipped, nonfinite = 0, False
        skipped_steps = self.engine.skipped_steps
        for _ in range(self.cfg.epochs_per_rollout):
            for batch in self._micro_batches(samples):
                with clock("forward"):
                    loss, stats = policy_loss_on_micro_batch(
                        self.engine,
                        batch,
                        self.algo,
                        self.mm_token_ids,
                        self.device,
                        self.cfg.completion_logits_only,
                        self.sampling,
                    )
                keys.update(stats)
                if not self._on_every_rank(bool(torch.isfinite(loss))):
                    # Every rank turns the step's gradients into NaN, which the step below never applies.
                    nonfinite = True
                    loss = loss * float("nan")
                with clock("backward"):  # with ZeRO, the gradients' reduction over the ranks too
                    self.engine.backward(loss)
                window.append({**stats, "loss": float(loss.detach())})
                if not self.engine.is_gradient_accumulation_boundary():
                    self.engine.step()  # DeepSpeed only counts the micro-step here
                    continue
                with clock("optimizer"):
                    applied = self._step(nonfinite)
                if applied:
                    kept += window
                else:
                    skipped += len(window)
                window, nonfinite = [], False
        means = reduce_stats(kept)
        for key in sorted(keys | {"loss"}):  # the same keys every step: 0 when every update was skipped
            means.setdefault(key, 0.0)
        grad_norm = self.engine.get_global_grad_norm()
        means.update(
            nonfinite_skipped=float(skipped),
            lr=float(self.scheduler.get_last_lr()[0]),
            optimizer_steps_skipped=float(self.engine.skipped_steps - skipped_steps),
            grad_norm=float(grad_norm) if grad_norm is not None and math.isfinite(grad_norm) else 0.0,
        )
        means.update(clock.stats(), **{"time/update/total_max": time.perf_counter() - started})
        return means

    def _on_every_rank(self, ok: bool) -> bool:
        """True when `ok` holds on every rank (a vote: every rank gets the same answer)."""
        flag = torch.tensor([float(ok)], device=self.device)  # NCCL reduces device tensors only
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return flag.item() == 1

    def _step(self, nonfinite: bool) -> bool:
        """The optimizer step at an accumulation boundary; False when it was skipped for non-finite
        gradients (on any rank), which `nonfinite` (a non-finite loss this step) has made sure of.

        ZeRO (stages 1-3) and DeepSpeed's fp16/bf16 optimizers check the reduced gradients of every
        rank for inf/NaN and skip such a step themselves (their `overflow`). A plain optimizer (ZeRO
        stage 0 in fp32) has no such check: here the ranks vote on their gradients (already averaged
        over the ranks at this point), and for a skipped step the optimizer's own step does nothing
        while it raises the `overflow` flag the engine reads after every step, so that DeepSpeed clears
        the gradients, holds the LR schedule and counts the skip exactly as after an fp16 overflow."""
        engine, before = self.engine, self.engine.skipped_steps
        optimizer = engine.optimizer
        if hasattr(optimizer, "overflow"):
            engine.step()
        elif self._on_every_rank(not nonfinite and _gradients_finite(engine.module)):
            engine.step()
        else:
            nonfinite = True
            optimizer.step, optimizer.overflow = _no_step, True  # this call only: the class's step comes back
            try:
                engine.step()
            finally:
                del optimizer.step, optimizer.overflow
        applied = engine.skipped_steps == before
        if nonfinite and applied:
            raise RuntimeError(
                f"learner rank {self.rank}: DeepSpeed applied an optimizer step with non-finite gradients "
                f"(ZeRO stage {self.cfg.zero_stage}, {self.model_cfg.dtype}); the weights cannot be trusted"
            )
        return applied

    def sft_train(self, samples: list[Sample | dict[str, Any]]) -> dict[str, float]:
        """Supervised step(s): negative log-likelihood of the completion (target) tokens only."""
        self.engine.train()
        losses = []
        for batch in self._micro_batches(samples):
            mask = batch.action_mask.to(self.device)
            loss = -(self._forward_logprobs(batch) * mask).sum() / mask.sum().clamp(min=1)
            self.engine.backward(loss)
            self.engine.step()
            losses.append(float(loss.detach()))
        grad_norm = self.engine.get_global_grad_norm()
        return {
            "sft_loss": sum(losses) / len(losses),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "grad_norm": float(grad_norm) if grad_norm is not None else float("nan"),
        }

    # --- checkpoints ----------------------------------------------------------------------------
    def save(self, directory: str, tag: str, hf_dir: str | None = None) -> list[tuple[str, int]]:
        """DeepSpeed state (all ranks) and, on rank 0, a Hugging Face model loadable by vLLM. Returns the
        (path, size) of each file this rank wrote, which the driver finds on the shared file system
        before it declares the checkpoint complete."""
        self.engine.save_checkpoint(directory, tag=tag)
        state = self._full_state_dict()
        if self.rank == 0 and hf_dir is not None:
            self.engine.module.save_pretrained(hf_dir, state_dict=state)
        roots = [os.path.join(directory, tag)] + ([hf_dir] if hf_dir is not None else [])
        return rank_files(roots, self.rank)

    def _full_state_dict(self) -> dict[str, torch.Tensor] | None:
        module = self.engine.module
        if self.cfg.zero_stage != 3:
            return {k: v.detach().cpu() for k, v in module.state_dict().items()} if self.rank == 0 else None
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()} if self.rank == 0 else None

    def load(self, directory: str, tag: str) -> None:
        path, _ = self.engine.load_checkpoint(directory, tag=tag)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint {tag!r} under {directory}")

    # --- weight sync ----------------------------------------------------------------------------
    def init_weight_sync(self, client: Any, master_address: str, master_port: int) -> None:
        from r1reward.sync.transfer import TrainableSource, connect_trainer

        only_trainable = self.model_cfg.freeze_vision  # a frozen tower never changes: do not resend it
        self.weight_sender = connect_trainer(
            client,
            TrainableSource(self.engine.module, only_trainable),
            self.rank,
            master_address,
            master_port,
            timeout_s=self.timeouts.weight_sync_s,
        )

    def push_weights(self) -> list[tuple[int, int]]:
        self.weight_sender.send_weights()
        return list(getattr(self.weight_sender, "sent_checksums", []))

    def ready(self) -> bool:
        return True
