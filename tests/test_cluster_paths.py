"""Multi-node details on a local Ray cluster of three nodes: the driver's head (no CPUs for bundles) and
two learner nodes, each with a port range of its own (VLLM_PORT, as a firewalled node would have).

- the learners' rendezvous port (and the sync master's) is found on the node that binds it, so it lies in
  that node's range, not wherever the driver happens to run;
- a checkpoint is declared complete only when the driver sees every rank's files: a rank whose shard
  never reached the shared file system (a node-local disk) leaves no `step_K/` and one line.

Real DeepSpeed ranks (gloo, the tiny model, ZeRO 2) on two Ray nodes; the cluster is this module's own
(ray.cluster_utils), shut down at the end, never `ray stop`.
"""

from __future__ import annotations

import os
import socket

import pytest

pytestmark = pytest.mark.slow

PORT_SPAN = 200  # each node's range: [base, base + PORT_SPAN)


def _port_bases(n: int) -> list[int]:
    """`n` bases of free ranges far from the ephemeral ports the driver's own choice would come from."""
    bases = []
    for base in range(20000, 30000, 1000):
        with socket.socket() as s:
            try:
                s.bind(("", base))
            except OSError:
                continue
        bases.append(base)
        if len(bases) == n:
            return bases
    pytest.skip("no free port ranges under 30000 on this machine")


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    bases = _port_bases(2)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1, env_vars={"VLLM_PORT": str(base)}) for base in bases]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield {node.node_id: base for node, base in zip(nodes, bases)}
    finally:
        ray.shutdown()
        cluster.shutdown()


def _node_of(pg, bundle: int) -> str:
    import ray

    return ray.util.placement_group_table(pg)["bundles_to_node_id"][bundle]


@pytest.fixture(scope="module")
def learners(cluster, tiny_model_dir):
    from r1reward.config import load_config
    from r1reward.learner.group import LearnerGroup
    from r1reward.placement.groups import create_placement_group, remove_group
    from r1reward.placement.plan import learner_plan

    config = load_config(
        "configs/tiny-cpu.yaml",
        [f"model.path={tiny_model_dir}", "timeouts.startup_s=600", "timeouts.remote_call_s=600"],
    )
    plan = learner_plan(config)
    pg, _ = create_placement_group(plan, timeout_s=120)
    group = None
    try:
        assert {_node_of(pg, 0), _node_of(pg, 1)} == set(cluster)  # one rank per learner node
        group = LearnerGroup.start(config, pg, plan.role_slots("learner"), total_optimizer_steps=1)
        yield group, pg
    finally:
        if group is not None:
            group.close()
        remove_group(pg)


def test_ports_are_found_on_the_node_that_binds_them(cluster, learners):
    import ray

    group, pg = learners
    port = int(ray.get(group.ranks[0].__ray_call__.remote(lambda rank: os.environ["MASTER_PORT"])))
    base = cluster[_node_of(pg, 0)]
    assert base <= port < base + PORT_SPAN, f"rendezvous port {port} is not from rank 0's node (range {base}+)"
    # The sync master's port comes the same way: for each bundle, from its node's range.
    from r1reward.placement.groups import listen_address

    for bundle in (0, 1):
        _, port = listen_address(pg, bundle, "a test listener", timeout_s=120)
        base = cluster[_node_of(pg, bundle)]
        assert base <= port < base + PORT_SPAN


def test_checkpoint_is_complete_only_with_every_ranks_files(learners, tiny_model_dir, tmp_path):
    from transformers import AutoProcessor

    from r1reward.trainer.checkpoint import IncompleteCheckpoint, latest_checkpoint, save_checkpoint

    group, _ = learners
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    done = save_checkpoint(group, processor, tmp_path, 1, {})
    assert latest_checkpoint(tmp_path) == done

    class Rank1OnALocalDisk:
        """Rank 1 writes its shard, but to a disk the driver's node does not see."""

        def save(self, *args):
            written = group.save(*args)
            assert written[1] and all("zero_pp_rank_1_" in path for path, _ in written[1])
            for path, _ in written[1]:
                os.remove(path)
            return written

    with pytest.raises(IncompleteCheckpoint) as err:
        save_checkpoint(Rank1OnALocalDisk(), processor, tmp_path, 2, {})
    message = str(err.value)
    assert message.startswith("checkpoint step_2 is incomplete: learner rank 1 wrote deepspeed/step_2/")
    assert "missing on the driver's node" in message and "\n" not in message
    assert latest_checkpoint(tmp_path) == done and not (tmp_path / "checkpoints" / "step_2").exists()
