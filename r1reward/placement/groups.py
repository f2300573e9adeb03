"""Ray side of placement: read the live cluster, check the plan fits it before any actor starts,
reserve the whole plan as one placement group, and say where each bundle landed.

Declared GPUs are Ray scheduling labels (on a CPU machine they stand for nothing): actors must
never choose a device from Ray's GPU resource or ids; device selection belongs to the roles.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.placement_group import NODE_ID_LABEL_KEY, PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from r1reward.placement.plan import PlacementError, PlacementPlan, Slot, fit_to_nodes


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def cluster_nodes() -> list[dict[str, float]]:
    """Total resources of each alive node, in `ray.nodes()` order."""
    return [dict(n["Resources"]) for n in _alive_nodes()]


def validate_cluster(plan: PlacementPlan) -> list[list[int]]:
    """Bundle indices per alive node, or PlacementError (one line) if the plan cannot fit."""
    return fit_to_nodes(plan, cluster_nodes())


def create_placement_group(
    plan: PlacementPlan, timeout_s: float = 60.0, pin: bool = True
) -> tuple[PlacementGroup, dict[str, list[int]]]:
    """Reserve `plan.bundles` with `plan.strategy`; returns the group and bundle indices per role.

    pin=True ties each bundle to the node `fit_to_nodes` chose (a node-id label selector): Ray's own
    strategies cannot keep a multi-bundle TP group on one node, and pinning makes the printed plan
    the real one. The fit is checked first, so nothing is reserved for a plan that cannot fit.
    """
    alive = _alive_nodes()
    assignment = fit_to_nodes(plan, [dict(n["Resources"]) for n in alive])
    selectors = None
    if pin:
        selectors = [{} for _ in plan.bundles]
        for node, idxs in zip(alive, assignment):
            for b in idxs:
                selectors[b] = {NODE_ID_LABEL_KEY: node["NodeID"]}
    pg = placement_group(plan.bundles, strategy=plan.strategy, bundle_label_selector=selectors)
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(pg)  # do not leave a half-reserved group holding resources
        gpus, cpus = plan.totals
        raise PlacementError(
            f"placement group of {len(plan.bundles)} bundles ({gpus:g} GPUs, {cpus:g} CPUs) was not ready after "
            f"{timeout_s:g} s: other jobs may hold the resources (see `ray status`)"
        )
    return pg, plan.bundle_indices()


def remove_group(pg: PlacementGroup | None) -> None:
    """Release a placement group (None: nothing was reserved)."""
    if pg is not None:
        remove_placement_group(pg)


def bundle_node_ip(pg: PlacementGroup, bundle: int) -> str:
    """The address of the node holding a bundle: learner rank 0 listens there for the other ranks."""
    node_id = ray.util.placement_group_table(pg)["bundles_to_node_id"][bundle]
    return next(n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id)


def _open_port() -> int:
    from vllm.utils.network_utils import get_open_port  # honours VLLM_PORT, a node's allowed range

    return get_open_port()


def listen_address(pg: PlacementGroup, bundle: int, what: str, timeout_s: float) -> tuple[str, int]:
    """(address, free port) of the node holding `bundle`, the port found on that node: a port free on
    the driver's node may be taken, or outside the allowed range, where the listener binds it."""
    from r1reward.waits import wait_all

    task = ray.remote(_open_port).options(**actor_options(pg, bundle, num_cpus=0, num_gpus=0))
    (port,) = wait_all([task.remote()], [f"the node of bundle {bundle}"], f"a free port for {what}", timeout_s)
    return bundle_node_ip(pg, bundle), port


def actor_options(
    pg: PlacementGroup, bundle_index: int, num_cpus: float, num_gpus: float, capture_child_tasks: bool = False
) -> dict[str, Any]:
    """Options for `ray.remote(cls).options(**opts)` that schedule the actor on one bundle."""
    return {
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=pg,
            placement_group_bundle_index=bundle_index,
            placement_group_capture_child_tasks=capture_child_tasks,
        ),
    }


def slot_options(pg: PlacementGroup, slot: Slot, capture_child_tasks: bool = False) -> dict[str, Any]:
    """`actor_options` for one planned actor (its bundle and its share of that bundle)."""
    return actor_options(pg, slot.bundle, slot.num_cpus, slot.num_gpus, capture_child_tasks)
