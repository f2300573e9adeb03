"""`RewardGroup`: the reward actor (and, with `reward.judge=vllm`, its judge engine) started on their
planned bundles, and scoring called with a deadline, so the driver's step holds no Ray calls.

The judge cannot vanish silently. At start-up the reward actor waits for it (`wait_ready`, within
timeouts.startup_s). During the run a generation the judge gave no verdict (a failed call, or a reply
without a 0/1) scores consistency 0, so a dead judge would quietly train on result and format alone:
`JudgeFailureWindow` stops the run once such generations exceed reward.max_judge_failure_rate of
those sent to the judge over the last reward.judge_failure_window steps. The check runs before the
step trains, so the batch that crossed the rate is not trained on.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from typing import Any

from r1reward.algo.judges import describe_judge
from r1reward.config.schema import Config, RewardConfig, TimeoutsConfig
from r1reward.waits import WaitError, wait_all

# The driver's wait for the reward actor's start-up exceeds the judge's own deadline by this much, so
# that the judge's one line (naming it) arrives before the driver gives up on the actor.
READY_MARGIN_S = 30.0


class JudgeFailing(WaitError):
    """The judge gave no verdict for too many generations: handled as a failed remote call (the run
    stops naming the checkpoint to resume from, and restarts from it if trainer.max_restarts allows,
    which waits for the judge again)."""


def _plural(count: int, word: str, words: str) -> str:
    return f"{count} {word if count == 1 else words}"


class JudgeFailureWindow:
    """Generations sent to the judge and those without a verdict, over the last `steps` steps. Steps in
    which no generation reached the judge count nothing; `max_rate` 1 never stops, 0 stops at the first
    failure."""

    def __init__(self, max_rate: float, steps: int) -> None:
        self.max_rate = max_rate
        self.steps: deque[tuple[int, int, int]] = deque(maxlen=max(1, steps))  # (asked, failed, invalid)

    def add(self, asked: int, failed: int, invalid: int = 0) -> None:
        """One step: `asked` generations sent to the judge, `failed` of them without a verdict, `invalid`
        of those because the reply held no 0/1 (the rest: calls that failed)."""
        self.steps.append((asked, failed, invalid))

    def _totals(self) -> tuple[int, int, int]:
        asked, failed, invalid = (sum(column) for column in zip(*self.steps)) if self.steps else (0, 0, 0)
        return asked, failed, invalid

    @property
    def rate(self) -> float:
        asked, failed, _ = self._totals()
        return failed / asked if asked else 0.0

    def check(self, judge: str) -> None:
        """Raises JudgeFailing, naming `judge` (see `algo.judges.describe_judge`), above the rate."""
        if self.rate <= self.max_rate:
            return
        asked, failed, invalid = self._totals()
        raise JudgeFailing(
            f"{judge} gave no verdict for {failed} of {asked} generations ({self.rate:.0%}) in the last "
            f"{_plural(len(self.steps), 'step', 'steps')} ({_plural(failed - invalid, 'failed call', 'failed calls')}, "
            f"{_plural(invalid, 'reply', 'replies')} without a 0/1), above "
            f"reward.max_judge_failure_rate={self.max_rate:g}"
        )


class RewardGroup:
    def __init__(
        self, actor: Any, judge: Any = None, timeouts: TimeoutsConfig | None = None, reward: RewardConfig | None = None
    ) -> None:
        self.actor, self.judge = actor, judge
        self.timeouts = timeouts or TimeoutsConfig()
        self.reward = reward or RewardConfig()
        self.failures = JudgeFailureWindow(self.reward.max_judge_failure_rate, self.reward.judge_failure_window)
        self._ready: Any = None  # the reward actor's start-up wait, started with the actor

    @classmethod
    def start(cls, config: Config, pg: Any, plan: Any) -> RewardGroup:
        """The reward actor on its planned bundle; the vLLM judge on its own (a GPU on a cluster). Returns
        at once: the actor waits for its judge while the other roles load; `wait_ready` collects it."""
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
        group = cls(actor, judge, config.timeouts, config.reward)
        group._ready = actor.ready.remote(config.timeouts.startup_s)
        return group

    def wait_ready(self) -> None:
        """Until the reward actor's judge answers (timeouts.startup_s); one line naming the judge if not."""
        ref = self._ready if self._ready is not None else self.actor.ready.remote(self.timeouts.startup_s)
        self._ready = None
        wait_all([ref], ["the reward actor"], "reward start-up", self.timeouts.startup_s + READY_MARGIN_S)

    def score(self, texts: list[str], labels: list[Any]) -> dict[str, Any]:
        """`RewardActor.score` on the actor (each judge request is bounded by timeouts.judge_request_s;
        the call as a whole by timeouts.remote_call_s), with `judge_failure_rate` over the window; raises
        JudgeFailing above reward.max_judge_failure_rate."""
        scores = wait_all(
            [self.actor.score.remote(texts, labels)], ["reward actor"], "score", self.timeouts.remote_call_s
        )[0]
        self.failures.add(scores["n"] - scores["judge_skipped"], scores["judge_failures"], scores["judge_invalid"])
        self.failures.check(describe_judge(self.reward))
        return {**scores, "judge_failure_rate": self.failures.rate}

    def close(self) -> None:
        import ray

        for actor in (self.actor, self.judge):
            if actor is not None:
                ray.kill(actor)
        self.actor = self.judge = None
