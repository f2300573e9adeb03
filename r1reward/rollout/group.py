"""`RolloutGroup`: the only way anything starts or calls rollout workers (vLLM engines as Ray actors).

The RL driver starts one on its training placement group; hard-example selection, evaluation and the
server start one on a rollout-only plan (`start_alone`), so on a cluster they get the planned GPUs
and CPUs too. A call is split across the workers, run concurrently and put back in the input order;
every wait has a deadline and fails with one line naming the call.
"""

from __future__ import annotations

from typing import Any

from r1reward.placement.remote import split_even, wait_all

# How long an engine may take to load its model, and one generate call to finish. No config setting
# bounds them; these are far above what a healthy engine needs, and only stop a hung run.
START_TIMEOUT_S = 1800.0
GENERATE_TIMEOUT_S = 6 * 3600.0


class RolloutGroup:
    """W rollout workers used as one engine (the `RolloutWorker.generate` signature)."""

    def __init__(self, workers: list[Any], tensor_parallel_size: int = 1, placement_group: Any = None,
                 owns_ray: bool = False) -> None:
        if not workers:
            raise ValueError("RolloutGroup needs at least one worker")
        self.workers = workers
        self.tensor_parallel_size = tensor_parallel_size
        self.placement_group = placement_group  # set when this group reserved it (start_alone)
        self.owns_ray = owns_ray  # set when this group started Ray (start_alone on a fresh process)

    @classmethod
    def start(cls, model_path: str, rollout_cfg: dict[str, Any], mm_pixels: tuple[int, int], pg: Any,
              slots: list[Any], wait: bool = True) -> RolloutGroup:
        """One worker per planned rollout slot of `pg`; returns once every engine has loaded, or at once
        with `wait=False` (the driver starts the learners meanwhile, then calls `wait_ready`)."""
        import ray

        from r1reward.placement.groups import slot_options
        from r1reward.rollout.worker import RolloutWorker

        actor = ray.remote(RolloutWorker)
        workers = [actor.options(**slot_options(pg, slot)).remote(model_path, rollout_cfg, mm_pixels)
                   for slot in slots]
        group = cls(workers, rollout_cfg.get("tensor_parallel_size", 1))
        if wait:
            try:
                group.wait_ready()
            except BaseException:
                group.close()
                raise
        return group

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until every engine has loaded its model."""
        wait_all([w.ready.remote() for w in self.workers], timeout_s, f"{len(self.workers)} rollout worker(s): start")

    @classmethod
    def start_alone(cls, model_path: str, rollout_cfg: dict[str, Any], mm_pixels: tuple[int, int],
                    plan: Any) -> RolloutGroup:
        """Start (or join) Ray for `plan`, reserve its placement group and start its rollout workers;
        `close()` gives back all three."""
        from r1reward.placement.groups import create_placement_group, remove_group
        from r1reward.placement.ray_init import ensure_ray

        owns_ray = ensure_ray(plan.config, plan=plan)
        pg = None
        try:
            pg, _ = create_placement_group(plan)
            group = cls.start(model_path, rollout_cfg, mm_pixels, pg, plan.role_slots("rollout"))
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

    def generate(self, prompts: list[dict[str, Any]], n: int = 1, temperature: float | None = None,
                 top_p: float | None = None, max_tokens: int | None = None, seeds: list[int] | None = None,
                 timeout_s: float = GENERATE_TIMEOUT_S) -> list[dict[str, Any]]:
        """`RolloutWorker.generate` over the workers: contiguous chunks, results in the input order."""
        chunks = split_even(prompts, len(self.workers))
        seed_chunks = split_even(seeds, len(self.workers)) if seeds is not None else [None] * len(self.workers)
        refs = [w.generate.remote(c, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seeds=s)
                for w, c, s in zip(self.workers, chunks, seed_chunks) if c]
        parts = wait_all(refs, timeout_s, f"{len(self.workers)} rollout worker(s): generate of {len(prompts)} prompts")
        return [result for part in parts for result in part]

    def sync_client(self) -> Any:
        """The weight-sync client over these workers (vLLM's weight-transfer protocol; see r1reward.sync)."""
        from r1reward.sync.transfer import RayRolloutClient

        return RayRolloutClient(self.workers, self.tensor_parallel_size)

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
