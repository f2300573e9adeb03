"""Starting the learner ranks: shared by RL training and supervised fine-tuning."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from r1reward.config.schema import Config


def bundle_node_ip(pg: Any, bundle: int) -> str:
    """The address of the node holding a bundle: learner rank 0 listens there for the other ranks."""
    import ray

    node_id = ray.util.placement_group_table(pg)["bundles_to_node_id"][bundle]
    return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)


def start_learners(config: Config, pg: Any, slots: list, total_optimizer_steps: int,
                   model_path: str | None = None, lr: float | None = None,
                   train_batch_size: int | None = None) -> list[Any]:
    """One DeepSpeed rank per planned learner slot; returns once every rank has initialised."""
    import ray
    from vllm.utils.network_utils import get_open_port

    from r1reward.learner.worker import LearnerRank
    from r1reward.trainer.placement import slot_options
    from r1reward.waits import wait_all

    learner_cfg = asdict(config.learner) | ({"lr": lr} if lr is not None else {}) | (
        {"train_batch_size": train_batch_size} if train_batch_size else {})
    master = (bundle_node_ip(pg, slots[0].bundle), get_open_port())
    learners = [ray.remote(LearnerRank).options(**slot_options(pg, slot)).remote(
        slot.rank, config.learner.num_ranks, *master, model_path or config.model.path, asdict(config.model),
        learner_cfg, asdict(config.algo), total_optimizer_steps, config.trainer.seed,
        timeouts=asdict(config.timeouts)) for slot in slots]
    wait_all([learner.ready.remote() for learner in learners], learner_roles(len(learners)), "learner start-up",
             config.timeouts.startup_s)
    return learners


def learner_roles(n: int) -> list[str]:
    return [f"learner rank {rank}" for rank in range(n)]


def split(items: list, parts: int) -> list[list]:
    """Contiguous, near-equal parts (the last may be shorter)."""
    size = -(-len(items) // parts)
    return [items[i * size:(i + 1) * size] for i in range(parts)]


class ActorRun:
    """setup() -> fit() -> shutdown(): the actors and their placement group are released even when a
    step fails, so a failed run never leaves resources held on the cluster."""

    placement_group: Any = None

    def actors(self) -> list[Any]:
        return []

    def setup(self) -> None:
        raise NotImplementedError

    def fit(self) -> dict[str, Any]:
        raise NotImplementedError

    def shutdown(self) -> None:
        import ray

        for actor in self.actors():
            ray.kill(actor)
        if self.placement_group is not None:
            ray.util.remove_placement_group(self.placement_group)
            self.placement_group = None

    def run(self) -> dict[str, Any]:
        try:
            self.setup()
            return self.fit()
        finally:
            self.shutdown()


def ensure_ray(config: Config, log_dir: str | Path | None = None) -> None:
    """Join `resources.ray_address` (or RAY_ADDRESS), or start a local Ray with enough logical CPUs for
    the plan.

    A small machine has fewer cores than the plan has actors; Ray's CPUs are scheduling slots, and the
    actors share the cores (as they would share a GPU node's CPUs), so a local run oversubscribes."""
    import math
    import os

    import ray

    from r1reward.launch.plan import make_plan

    if ray.is_initialized():
        return
    # Actors' INFO output (vLLM, DeepSpeed, Ray workers: thousands of lines) stays in Ray's log files,
    # linked from `log_dir`; errors still reach the driver as exceptions. R1REWARD_VERBOSE=1 shows it all.
    verbose = os.environ.get("R1REWARD_VERBOSE", "") not in ("", "0")
    quiet = {} if verbose else {"log_to_driver": False, "logging_level": logging.WARNING}
    address = config.resources.ray_address or os.environ.get("RAY_ADDRESS")  # set inside a Ray job
    if address:
        ray.init(address=address, **quiet)
    else:
        needed = make_plan(config).totals[1]
        # address="local": always a new Ray owned by this run. Without it ray.init joins the newest
        # `ray start` cluster on the machine (someone else's), and refuses num_cpus there.
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(needed)), include_dashboard=False,
                 **quiet)
    if log_dir is not None and not verbose:
        link_ray_logs(Path(log_dir))


def link_ray_logs(log_dir: Path) -> Path | None:
    """`log_dir/ray` -> this Ray session's log folder (every actor's stdout and stderr)."""
    import ray

    try:
        logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    except AttributeError:  # a future Ray without this private handle: the logs stay where Ray puts them
        return None
    log_dir.mkdir(parents=True, exist_ok=True)
    link = log_dir / "ray"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(logs, target_is_directory=True)
    return link
