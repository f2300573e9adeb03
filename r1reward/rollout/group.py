"""`RolloutGroup`: the only way anything starts or calls rollout workers (vLLM engines as Ray actors).

The RL driver starts one on its training placement group; hard-example selection, evaluation and the
server start one on a rollout-only plan (`start_alone`), so on a cluster they get the planned GPUs
and CPUs too. A call is split across the workers, run concurrently and put back in the input order;
every wait has a deadline and fails with one line naming the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from r1reward.config.schema import TimeoutsConfig
from r1reward.placement.remote import split_even
from r1reward.waits import wait_all


@dataclass
class Generation:
    """A submitted `RolloutGroup.generate_async`: one call per busy worker, collected once."""

    refs: list[Any]
    roles: list[str]
    results: list[dict[str, Any]] | None = None
    busy_s: dict[str, float] = field(default_factory=dict)  # worker role -> seconds spent generating


class RolloutGroup:
    """W rollout workers used as one engine (the `RolloutWorker.generate` signature)."""

    def __init__(
        self,
        workers: list[Any],
        tensor_parallel_size: int = 1,
        placement_group: Any = None,
        owns_ray: bool = False,
        timeouts: TimeoutsConfig | None = None,
    ) -> None:
        if not workers:
            raise ValueError("RolloutGroup needs at least one worker")
        self.workers = workers
        self.timeouts = timeouts or TimeoutsConfig()
        self.roles = [f"rollout worker {i}" for i in range(len(workers))]
        self.tensor_parallel_size = tensor_parallel_size
        self.placement_group = placement_group  # set when this group reserved it (start_alone)
        self.owns_ray = owns_ray  # set when this group started Ray (start_alone on a fresh process)

    @classmethod
    def start(
        cls,
        model_path: str,
        rollout_cfg: dict[str, Any],
        mm_pixels: tuple[int, int],
        pg: Any,
        slots: list[Any],
        wait: bool = True,
        timeouts: TimeoutsConfig | None = None,
        max_videos: int = 0,
    ) -> RolloutGroup:
        """One worker per planned rollout slot of `pg`; returns once every engine has loaded, or at once
        with `wait=False` (the driver starts the learners meanwhile, then calls `wait_ready`)."""
        import ray

        from r1reward.placement.groups import slot_options
        from r1reward.rollout.worker import RolloutWorker

        actor = ray.remote(RolloutWorker)
        workers = [
            actor.options(**slot_options(pg, slot)).remote(
                model_path, rollout_cfg, mm_pixels, max_videos=max_videos, cores=slot.cores
            )
            for slot in slots
        ]
        group = cls(workers, rollout_cfg.get("tensor_parallel_size", 1), timeouts=timeouts)
        if wait:
            try:
                group.wait_ready()
            except BaseException:
                group.close()
                raise
        return group

    def wait_ready(self) -> None:
        """Until every engine has loaded its model (timeouts.startup_s)."""
        wait_all([w.ready.remote() for w in self.workers], self.roles, "rollout start-up", self.timeouts.startup_s)

    @classmethod
    def start_alone(
        cls,
        model_path: str,
        rollout_cfg: dict[str, Any],
        mm_pixels: tuple[int, int],
        plan: Any,
        timeouts: TimeoutsConfig | None = None,
        max_videos: int = 0,
    ) -> RolloutGroup:
        """Start (or join) Ray for `plan`, reserve its placement group and start its rollout workers;
        `close()` gives back all three."""
        from r1reward.placement.groups import create_placement_group, remove_group
        from r1reward.placement.ray_init import ensure_ray

        owns_ray = ensure_ray(plan.config, plan=plan)
        pg = None
        try:
            pg, _ = create_placement_group(plan)
            group = cls.start(
                model_path,
                rollout_cfg,
                mm_pixels,
                pg,
                plan.role_slots("rollout"),
                timeouts=timeouts,
                max_videos=max_videos,
            )
        except BaseException:
            remove_group(pg)
            if owns_ray:
                import ray

                ray.shutdown()
            raise
        group.placement_group, group.owns_ray = pg, owns_ray
        return group

    def __len__(self) -> int:
        return len(self.workers)

    def generate_async(
        self,
        prompts: list[dict[str, Any]],
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seeds: list[int] | None = None,
    ) -> Generation:
        """Submit `RolloutWorker.generate` over the workers (contiguous chunks) and return at once; the
        results come from `collect`. Each worker runs its calls in the order they were submitted."""
        chunks = split_even(prompts, len(self.workers))
        seed_chunks = split_even(seeds, len(self.workers)) if seeds is not None else [None] * len(self.workers)
        busy = [(w, c, s, role) for w, c, s, role in zip(self.workers, chunks, seed_chunks, self.roles) if c]
        refs = [
            w.generate_timed.remote(c, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seeds=s)
            for w, c, s, _ in busy
        ]
        return Generation(refs, [role for *_, role in busy])

    def collect(self, handle: Generation, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """The results of `generate_async`, in the input order (waits at most timeouts.remote_call_s).
        Collecting twice returns the same results; `handle.busy_s` then holds each worker's seconds."""
        if handle.results is None:
            parts = wait_all(handle.refs, handle.roles, "generate", timeout_s or self.timeouts.remote_call_s)
            handle.results = [result for part, _ in parts for result in part]
            handle.busy_s = {role: seconds for role, (_, seconds) in zip(handle.roles, parts)}
        return handle.results

    def generate(
        self,
        prompts: list[dict[str, Any]],
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seeds: list[int] | None = None,
        timeout_s: float | None = None,
    ) -> list[dict[str, Any]]:
        """`RolloutWorker.generate` over the workers: contiguous chunks, results in the input order."""
        handle = self.generate_async(
            prompts, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seeds=seeds
        )
        return self.collect(handle, timeout_s)

    def load_checkpoint(self, path: str) -> None:
        """Every worker loads the Hugging Face checkpoint at `path` (same architecture) in place."""
        refs = [w.load_checkpoint.remote(str(path)) for w in self.workers]
        wait_all(refs, self.roles, f"loading {path}", self.timeouts.startup_s)

    def sync_client(self) -> Any:
        """The weight-sync client over these workers (vLLM's weight-transfer protocol; see r1reward.sync)."""
        from r1reward.sync.transfer import RayRolloutClient

        return RayRolloutClient(self.workers, self.tensor_parallel_size, self.timeouts.weight_sync_s)

    def close(self) -> None:
        """Stop the workers, and the placement group and Ray if this group started them."""
        import ray

        from r1reward.placement.groups import remove_group

        for worker in self.workers:
            ray.kill(worker)
        self.workers = []
        remove_group(self.placement_group)
        self.placement_group = None
        if self.owns_ray:
            ray.shutdown()
            self.owns_ray = False
