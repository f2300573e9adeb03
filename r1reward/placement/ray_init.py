"""Starting or joining Ray, once per process, with enough logical CPUs for the plan."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import ray

from r1reward.config.schema import Config
from r1reward.placement.plan import PlacementPlan, make_plan


def ensure_ray(config: Config, log_dir: str | Path | None = None, plan: PlacementPlan | None = None) -> bool:
    """Join `resources.ray_address` (or RAY_ADDRESS), or start a local Ray with enough logical CPUs for
    `plan` (default: the training plan). Returns True when this call started or joined Ray, False when
    Ray was already up (so the caller knows whether to shut it down).

    A small machine has fewer cores than the plan has actors; Ray's CPUs are scheduling slots, and the
    actors share the cores (as they would share a GPU node's CPUs), so a local run oversubscribes."""
    if ray.is_initialized():
        return False
    # Actors' INFO output (vLLM, DeepSpeed, Ray workers: thousands of lines) stays in Ray's log files,
    # linked from `log_dir`; errors still reach the driver as exceptions. R1REWARD_VERBOSE=1 shows it all.
    verbose = os.environ.get("R1REWARD_VERBOSE", "") not in ("", "0")
    quiet = {} if verbose else {"log_to_driver": False, "logging_level": logging.WARNING}
    address = config.resources.ray_address or os.environ.get("RAY_ADDRESS")  # set inside a Ray job
    if address:
        ray.init(address=address, **quiet)
    else:
        needed = (plan or make_plan(config)).totals[1]
        # address="local": always a new Ray owned by this run. Without it ray.init joins the newest
        # `ray start` cluster on the machine (someone else's), and refuses num_cpus there.
        ray.init(
            address="local", num_cpus=max(os.cpu_count() or 1, math.ceil(needed)), include_dashboard=False, **quiet
        )
    if log_dir is not None and not verbose:
        link_ray_logs(Path(log_dir))
    return True


def link_ray_logs(log_dir: Path) -> Path | None:
    """`log_dir/ray` -> this Ray session's log folder (every actor's stdout and stderr)."""
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
