"""`LearnerGroup`: the only way anything starts or calls the learner ranks (DeepSpeed ranks as Ray actors).

RL training and SFT start one on their placement group; each call fans out to every rank (samples
split into contiguous parts, one per rank) and waits with a deadline that fails with one line naming
the call.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from r1reward.config.schema import AlgoConfig, Config, TimeoutsConfig
from r1reward.placement.remote import split
from r1reward.waits import wait_all

# A weight sync's waits on the ranks get this on top of timeouts.weight_sync_s, so that the side that
# timed out (a rank or a rollout worker) names its peer before the driver gives up on it.
SYNC_MARGIN_S = 60.0


class LearnerGroup:
    """M learner ranks that form one torch.distributed group."""

    def __init__(
        self,
        ranks: list[Any],
        placement_group: Any = None,
        first_bundle: int = 0,
        timeouts: TimeoutsConfig | None = None,
        algo: AlgoConfig | None = None,
    ) -> None:
        self.ranks = ranks
        self.algo = algo or AlgoConfig()
        self.placement_group, self.first_bundle = placement_group, first_bundle
        self.timeouts = timeouts or TimeoutsConfig()
        self.roles = [f"learner rank {rank}" for rank in range(len(ranks))]

    @classmethod
    def start(
        cls,
        config: Config,
        pg: Any,
        slots: list[Any],
        total_optimizer_steps: int,
        model_path: str | None = None,
        lr: float | None = None,
        train_batch_size: int | None = None,
    ) -> LearnerGroup:
        """One DeepSpeed rank per planned learner slot; returns once every rank has initialised."""
        import ray

        from r1reward.learner.worker import LearnerRank
        from r1reward.placement.groups import listen_address, slot_options

        learner_cfg = (
            asdict(config.learner)
            | ({"lr": lr} if lr is not None else {})
            | ({"train_batch_size": train_batch_size} if train_batch_size else {})
        )
        # Rank 0 listens for the others on its node: the port is found there.
        master = listen_address(pg, slots[0].bundle, "the learners' rendezvous", config.timeouts.startup_s)
        actor = ray.remote(LearnerRank)
        ranks = [
            actor.options(**slot_options(pg, slot)).remote(
                slot.rank,
                config.learner.num_ranks,
                *master,
                model_path or config.model.path,
                asdict(config.model),
                learner_cfg,
                asdict(config.algo),
                total_optimizer_steps,
                config.trainer.seed,
                timeouts=asdict(config.timeouts),
                sampling_temperature=config.rollout.temperature,
                cores=slot.cores,
            )
            for slot in slots
        ]
        group = cls(ranks, pg, slots[0].bundle, config.timeouts, config.algo)
        try:
            group._all("learner start-up", [r.ready.remote() for r in ranks], config.timeouts.startup_s)
        except BaseException:
            group.close()
            raise
        return group

    def __len__(self) -> int:
        return len(self.ranks)

    def _all(self, call: str, refs: list[Any], timeout_s: float | None = None) -> list[Any]:
        """Every rank's answer, in rank order; the first rank that fails or is late is named."""
        return wait_all(refs, self.roles[: len(refs)], call, timeout_s or self.timeouts.remote_call_s)

    def _split(self, method: str, samples: list[Any], **kwargs: Any) -> list[Any]:
        parts = split(samples, len(self.ranks))
        return self._all(method, [getattr(r, method).remote(part, **kwargs) for r, part in zip(self.ranks, parts)])

    def compute_logprobs(self, samples: list[dict[str, Any]]) -> list[dict[str, list[list[float]]]]:
        """Each rank's part of `samples` scored; one dict per rank, in rank order. With
        algo.old_logprobs=sampler and no reference model nothing is left to compute: the sampler's
        log-probs come back as one part, and the samples are not shipped to the ranks at all."""
        if self.algo.old_logprobs == "sampler" and not self.algo.kl_coef:
            return [{"old_logprobs": [list(s.sampler_logprobs) for s in samples]}]
        return self._split("compute_logprobs", samples)

    def train(self, samples: list[dict[str, Any]]) -> list[dict[str, float]]:
        """One update over `samples`; each rank's statistics, in rank order."""
        return self._split("train", samples)

    def sft_train(self, samples: list[dict[str, Any]]) -> list[dict[str, float]]:
        return self._split("sft_train", samples)

    def save(self, directory: str, tag: str, hf_dir: str | None = None) -> list[list[tuple[str, int]]]:
        """Every rank's checkpoint files; returns, per rank, the (path, size) of each file it wrote."""
        return self._all("save", [r.save.remote(directory, tag, hf_dir) for r in self.ranks])

    def load(self, directory: str, tag: str) -> None:
        self._all("load", [r.load.remote(directory, tag) for r in self.ranks])

    def init_weight_sync(self, client: Any) -> None:
        """Join the rollout workers' weight-transfer group; rank 0 of it is learner rank 0, on its node."""
        from r1reward.placement.groups import listen_address

        master = listen_address(
            self.placement_group, self.first_bundle, "the weight-sync master", self.timeouts.remote_call_s
        )
        self._all(
            "weight sync set-up",
            [r.init_weight_sync.remote(client, *master) for r in self.ranks],
            self.timeouts.weight_sync_s + SYNC_MARGIN_S,
        )

    def push_weights(self) -> list[list[tuple[int, int]]]:
        """Send the current weights to the rollout workers; each rank's checksums of what it sent."""
        return self._all(
            "weight sync", [r.push_weights.remote() for r in self.ranks], self.timeouts.weight_sync_s + SYNC_MARGIN_S
        )

    def close(self) -> None:
        import ray

        for rank in self.ranks:
            ray.kill(rank)
        self.ranks = []
