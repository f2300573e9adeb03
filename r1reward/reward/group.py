"""`RewardGroup`: the reward actor (and, with `reward.judge=vllm`, its judge engine) started on their
planned bundles, and scoring called with a deadline, so the driver's step holds no Ray calls."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from r1reward.config.schema import Config, TimeoutsConfig
from r1reward.waits import wait_all


class RewardGroup:
    def __init__(self, actor: Any, judge: Any = None, timeouts: TimeoutsConfig | None = None) -> None:
        self.actor, self.judge = actor, judge
        self.timeouts = timeouts or TimeoutsConfig()

    @classmethod
    def start(cls, config: Config, pg: Any, plan: Any) -> RewardGroup:
        """The reward actor on its planned bundle; the vLLM judge on its own (a GPU on a cluster)."""
        import ray

        from r1reward.algo.judges import needs_model_actor
        from r1reward.placement.groups import slot_options
        from r1reward.reward.actor import RewardActor, make_judge_actor_class

        judge = None
        if needs_model_actor(config.reward.judge):
            judge = (
                make_judge_actor_class()
                .options(**slot_options(pg, plan.role_slots("judge")[0]))
                .remote(
                    config.reward.judge_model,
                    kv_cache_memory_bytes=config.rollout.kv_cache_memory_bytes,
                    gpu_memory_utilization=config.rollout.gpu_memory_utilization,
                )
            )
        actor = (
            ray.remote(RewardActor)
            .options(**slot_options(pg, plan.role_slots("reward")[0]))
            .remote(asdict(config.reward), judge)
        )
        return cls(actor, judge, config.timeouts)

    def score(self, texts: list[str], labels: list[Any]) -> dict[str, Any]:
        """`RewardActor.score` on the actor (each judge request is bounded by timeouts.judge_request_s;
        the call as a whole by timeouts.remote_call_s)."""
        return wait_all(
            [self.actor.score.remote(texts, labels)], ["reward actor"], "score", self.timeouts.remote_call_s
        )[0]

    def close(self) -> None:
        import ray

        for actor in (self.actor, self.judge):
            if actor is not None:
                ray.kill(actor)
        self.actor = self.judge = None
