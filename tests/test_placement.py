"""Placement: the pure plan (bundles, bin packing, one-line errors, --ratio) and its Ray side on a
small fake cluster (declared GPUs are only labels here)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from r1reward.config import ConfigError, load_config
from r1reward.errors import UserError
from r1reward.placement.plan import (
    PlacementError,
    apply_ratio,
    fit_to_nodes,
    format_plan,
    make_plan,
    parse_ratio,
)

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper-qwen2.5-vl-7b.yaml"
GPU_ON = ["resources.gpus_per_rollout_worker=1", "resources.gpus_per_learner_rank=1"]


def nodes(n: int, gpus: float, cpus: float = 64) -> list[dict[str, float]]:
    return [{"GPU": gpus, "CPU": cpus} for _ in range(n)]


def colocated(config):
    """`config` with resources.colocate=true, which start-up refuses until a colocated weight path exists;
    the plan still lays it out, so that its shares are right when one does."""
    config.resources.colocate = True
    return config


def paper(*overrides: str):
    # The 8 rollout + 24 learner layout these tests reason about (the shipped file has 15 rollout workers,
    # 16 learner ranks and a judge GPU); 24 ranks x micro 2 need a train batch of 144 (the paper's is 128).
    return load_config(
        PAPER,
        [
            "reward.judge=rule",
            "rollout.num_workers=8",
            "learner.num_ranks=24",
            "learner.train_batch_size=144",
            "trainer.rollout_batch_size=288",
            *overrides,
        ],
    )


def test_paper_plan_fits_4x8_one_rollout_node_and_three_learner_nodes():
    plan = make_plan(paper())
    assert plan.totals == (32, 8 + 24 + 1)  # + the reward actor's CPU
    assert plan.bundle_indices()["rollout"] == list(range(8))
    assert plan.bundle_indices()["learner"] == list(range(8, 32)) and plan.bundle_indices()["judge"] == []
    assignment = fit_to_nodes(plan, nodes(4, 8))
    assert sorted(b for node in assignment for b in node) == list(range(33))
    assert [sum(plan.bundles[b].get("GPU", 0) for b in node) for node in assignment] == [8, 8, 8, 8]
    table = format_plan(plan, assignment, nodes(4, 8))
    assert table.splitlines()[0].split() == ["node", "role", "count", "GPUs", "CPUs"]
    assert "rollout      8     8     8" in table and table.splitlines()[-1].split() == ["total", "33", "32", "33"]


def test_paper_plan_on_2x8_fails_with_one_line_and_a_suggestion_that_works():
    with pytest.raises(PlacementError) as err:
        fit_to_nodes(make_plan(paper()), nodes(2, 8))
    assert str(err.value) == (
        "the plan needs 32 GPUs (8 rollout workers x TP 1 + 24 learner ranks) but the cluster has 16 GPUs on "
        "2 nodes; with 16 GPUs try --ratio 4:12 or learner.num_ranks=8"
    )
    assert isinstance(err.value, UserError)
    fixed = apply_ratio(paper(), 16, parse_ratio("4:12"))
    assert fit_to_nodes(make_plan(fixed), nodes(2, 8))
    assert fit_to_nodes(make_plan(paper("learner.num_ranks=8")), nodes(2, 8))


def test_paper_config_as_shipped_fits_4x8_with_one_gpu_for_the_vllm_judge():
    plan = make_plan(load_config(PAPER))
    assert plan.totals[0] == 32 and plan.bundles[plan.bundle_indices()["judge"][0]] == {"GPU": 1, "CPU": 1}
    assert fit_to_nodes(plan, nodes(4, 8))
    # A sixteenth rollout worker would need a 33rd GPU: the message names the judge and a ratio that fits.
    plan = make_plan(load_config(PAPER, ["rollout.num_workers=16"]))
    with pytest.raises(PlacementError, match=r"needs 33 GPUs \(.* \+ 1 judge\) but the cluster has 32 GPUs") as err:
        fit_to_nodes(plan, nodes(4, 8))
    assert "\n" not in str(err.value) and "--ratio 15:16" in str(err.value)


def test_tp2_group_stays_on_one_node_even_when_total_gpus_suffice():
    cfg = load_config(None, [*GPU_ON, "rollout.num_workers=2", "rollout.tensor_parallel_size=2"])
    plan = make_plan(cfg)
    assert plan.bundles[0] == {"GPU": 2, "CPU": 1} and plan.totals[0] == 6
    assignment = fit_to_nodes(plan, [{"GPU": 3, "CPU": 4}, {"GPU": 3, "CPU": 4}])
    assert [sorted(plan.labels[b] for b in node) for node in assignment] == [
        ["learner", "reward", "rollout"],
        ["learner", "rollout"],
    ]
    with pytest.raises(PlacementError, match=r"^rollout worker \d \(TP 2\) needs 2 GPUs and 1 CPUs on one node"):
        fit_to_nodes(plan, nodes(6, 1, 4))  # 6 GPUs in all, but never 2 on one node


def test_colocated_totals_and_tp_groups():
    plan = make_plan(colocated(paper()))
    assert plan.totals == (24, 24 + 8 + 1) and len(plan.bundles) == 25
    rollout, learner = plan.role_slots("rollout"), plan.role_slots("learner")
    assert [s.bundle for s in rollout] == list(range(8)) and {s.num_gpus for s in rollout} == {0.5}
    assert [s.num_gpus for s in learner[7:9]] == [0.5, 1.0] and plan.bundles[0] == {"GPU": 1, "CPU": 2}
    cfg = load_config(
        None,
        [
            *GPU_ON,
            "rollout.num_workers=2",
            "rollout.tensor_parallel_size=2",
            "learner.num_ranks=4",
            "learner.train_batch_size=8",
        ],
    )
    plan = make_plan(colocated(cfg))
    assert plan.groups[:2] == [(0, 1), (2, 3)] and plan.totals[0] == 4
    assignment = fit_to_nodes(plan, [{"GPU": 3, "CPU": 8}, {"GPU": 3, "CPU": 8}])
    assert [b for b in assignment[0] if b < 4] == [0, 1] and [b for b in assignment[1] if b < 4] == [2, 3]
    with pytest.raises(PlacementError, match=r"colocate needs .* \(2 x 2 = 4\) <= learner.num_ranks \(2\)"):
        make_plan(colocated(load_config(None, ["rollout.num_workers=2", "rollout.tensor_parallel_size=2"])))


def _gpu_per_bundle(plan) -> list[dict[str, float]]:
    """What each role takes of each bundle's GPU: a colocated rollout slot's share is per GPU of its TP group."""
    use = [{} for _ in plan.bundles]
    for s in plan.slots:
        for b in s.group if s.role == "rollout" and plan.config.resources.colocate else (s.bundle,):
            use[b][s.role] = use[b].get(s.role, 0.0) + s.num_gpus
    return use


def test_tp_gpu_shares_fill_each_gpu_and_give_every_tp_rank_its_own():
    tp2 = [*GPU_ON, "rollout.num_workers=2", "rollout.tensor_parallel_size=2"]
    plan = make_plan(load_config(None, tp2))  # separate: the engine actor holds its TP group's whole GPUs
    assert [s.num_gpus for s in plan.role_slots("rollout")] == [2, 2]
    assert _gpu_per_bundle(plan)[:4] == [{"rollout": 2}, {"rollout": 2}, {"learner": 1}, {"learner": 1}]
    cfg = colocated(load_config(None, [*tp2, "learner.num_ranks=4", "learner.train_batch_size=8"]))
    plan = make_plan(cfg)  # colocated: every GPU of a TP group is split rollout / learner, none left idle
    assert _gpu_per_bundle(plan)[:4] == [{"learner": 0.5, "rollout": 0.5}] * 4
    assert [s.group for s in plan.role_slots("rollout")] == [(0, 1), (2, 3)]
    # A TP rank needs a device of its own, and Ray gives an actor a fraction of one GPU or whole GPUs.
    for overrides, message in [
        (["resources.gpus_per_rollout_worker=0.5"], "gpus_per_rollout_worker must be a whole number, got 0.5"),
        (
            ["rollout.tensor_parallel_size=1", "resources.gpus_per_rollout_worker=1.5"],
            "not 1.5: check resources.gpus_per_rollout_worker",
        ),
        (["resources.gpus_per_learner_rank=2.5"], "not 2.5: check resources.gpus_per_learner_rank"),
    ]:
        with pytest.raises(PlacementError, match=re.escape(message)):
            make_plan(load_config(None, [*tp2, *overrides]))
    with pytest.raises(PlacementError, match="colocate shares .*gpus_per_learner_rank must be 1"):
        make_plan(
            colocated(
                load_config(
                    None,
                    [*tp2, "learner.num_ranks=4", "learner.train_batch_size=8", "resources.gpus_per_learner_rank=0.5"],
                )
            )
        )
    assert make_plan(
        load_config(None, [*tp2, "rollout.tensor_parallel_size=1", "resources.gpus_per_rollout_worker=0.5"])
    )


def test_cpu_shortage_and_strict_strategies():
    cfg = load_config(None, GPU_ON)  # 1 rollout + 2 learners + reward: 3 GPUs, 4 CPUs
    with pytest.raises(PlacementError, match=r"^the plan needs 4 CPUs but the cluster has 2 CPUs on 1 node;"):
        fit_to_nodes(make_plan(cfg), [{"GPU": 4, "CPU": 2}])
    strict = make_plan(load_config(None, [*GPU_ON, "resources.placement_strategy=STRICT_PACK"]))
    assert fit_to_nodes(strict, [{"GPU": 2, "CPU": 8}, {"GPU": 4, "CPU": 8}]) == [[], [0, 1, 2, 3]]
    with pytest.raises(PlacementError, match="STRICT_PACK needs 3 GPUs and 4 CPUs on one node"):
        fit_to_nodes(strict, nodes(2, 2))
    spread = make_plan(load_config(None, [*GPU_ON, "resources.placement_strategy=STRICT_SPREAD"]))
    assert sorted(len(n) for n in fit_to_nodes(spread, nodes(4, 2))) == [1, 1, 1, 1]
    with pytest.raises(PlacementError, match="STRICT_SPREAD needs one node per bundle"):
        fit_to_nodes(spread, nodes(3, 2))


def test_rollout_only_plans_of_hard_example_selection_and_eval():
    from r1reward.eval.generation import eval_plan
    from r1reward.placement.plan import rollout_plan

    cfg = load_config(None, [*GPU_ON, "rollout.num_workers=3", "rollout.tensor_parallel_size=2"])
    plan = rollout_plan(cfg, num_workers=1)  # hard-example selection: one engine, a training worker's share
    assert plan.bundles == [{"GPU": 2.0, "CPU": 1.0}] and plan.bundle_indices()["learner"] == []
    assert [s.rank for s in rollout_plan(cfg).role_slots("rollout")] == [0, 1, 2]
    with pytest.raises(PlacementError, match="the plan needs 2 GPUs"):
        fit_to_nodes(plan, [{"CPU": 8}])  # a GPU-less cluster is refused, not silently run on CPUs
    plan = eval_plan(4, 0.5)  # `r1reward eval --workers 4 --gpus-per-worker 0.5`
    assert plan.bundles == [{"GPU": 0.5, "CPU": 1.0}] * 4 and [s.bundle for s in plan.slots] == [0, 1, 2, 3]
    assert fit_to_nodes(plan, [{"GPU": 1, "CPU": 2}, {"GPU": 1, "CPU": 2}]) == [[0, 1], [2, 3]]
    assert eval_plan(2, 0.0).bundles == [{"CPU": 1.0}] * 2  # the CPU: no GPU asked for


def test_empty_bundle_is_a_user_error():
    with pytest.raises(PlacementError, match="a learner rank must ask for some GPU or CPU"):
        make_plan(load_config(None, ["resources.cpus_per_learner_rank=0"]))


@pytest.mark.parametrize("text, want", [("1:3", (1, 3)), ("4:12", (4, 12)), (" 8 : 24 ", (8, 24))])
def test_parse_ratio(text, want):
    assert parse_ratio(text) == want


@pytest.mark.parametrize("text", ["1", "0:3", "a:b", "1:2:3", "-1:3", "1.5:3", ""])
def test_parse_ratio_rejects(text):
    with pytest.raises(PlacementError, match="ROLLOUT:LEARNER"):
        parse_ratio(text)


def test_apply_ratio():
    base = paper()
    cfg = apply_ratio(base, 16, (1, 3))
    assert (cfg.rollout.num_workers, cfg.learner.num_ranks) == (4, 12)
    assert (base.rollout.num_workers, base.learner.num_ranks) == (8, 24)  # the input is untouched
    cfg = apply_ratio(base, 16, 8)  # rollout GPUs given directly
    assert (cfg.rollout.num_workers, cfg.learner.num_ranks) == (8, 8)
    cfg = apply_ratio(paper("rollout.tensor_parallel_size=2"), 32, (1, 3))
    assert (cfg.rollout.num_workers, cfg.learner.num_ranks) == (4, 24)
    with pytest.raises(PlacementError, match="not a positive multiple of TP 2"):
        apply_ratio(paper("rollout.tensor_parallel_size=2"), 16, 3)
    with pytest.raises(PlacementError, match="gives 0.16 rollout GPUs"):
        apply_ratio(base, 16, (1, 99))  # zero workers
    with pytest.raises(PlacementError, match="gives 5.333 rollout GPUs"):
        apply_ratio(base, 16, (1, 2))
    with pytest.raises(PlacementError, match="gives 0 learner GPUs"):
        apply_ratio(base, 16, 16)
    with pytest.raises(ConfigError, match=r"^--ratio 6:10: learner.train_batch_size \(144\)"):
        apply_ratio(base, 16, (6, 10))
    with pytest.raises(PlacementError, match="does not apply with resources.colocate"):
        apply_ratio(colocated(paper()), 16, (1, 3))
    with pytest.raises(PlacementError, match="gpus_per_learner_rank > 0"):
        apply_ratio(load_config(), 4, (1, 1))


# ---- Ray: head (1 CPU, no GPU) + 2 workers (2 declared GPUs, 3 CPUs each) ----


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    workers = [cluster.add_node(num_cpus=3, num_gpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    try:
        yield {"head": cluster.head_node.node_id, "workers": [w.node_id for w in workers]}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_validate_cluster_accepts_a_fitting_plan(ray_cluster):
    from r1reward.placement.groups import cluster_nodes, validate_cluster

    found = cluster_nodes()
    assert sorted((n.get("GPU", 0), n["CPU"]) for n in found) == [(0, 1), (2, 3), (2, 3)]
    plan = make_plan(load_config(None, GPU_ON))
    assignment = validate_cluster(plan)
    assert sorted(b for node in assignment for b in node) == [0, 1, 2, 3]
    for node, idxs in zip(found, assignment):
        assert sum(plan.bundles[b].get("GPU", 0) for b in idxs) <= node.get("GPU", 0)


def test_too_large_plan_is_rejected_before_anything_is_reserved(ray_cluster):
    import ray

    from r1reward.placement.groups import create_placement_group, validate_cluster

    before = len(ray.util.placement_group_table())
    plan = make_plan(load_config(None, [*GPU_ON, "rollout.num_workers=2", "rollout.tensor_parallel_size=2"]))
    for attempt in (validate_cluster, create_placement_group):
        with pytest.raises(PlacementError) as err:
            attempt(plan)
        assert str(err.value).startswith(
            "the plan needs 6 GPUs (2 rollout workers x TP 2 + 2 learner ranks) but the cluster has 4 GPUs on 3 nodes"
        )
        assert "\n" not in str(err.value)
    assert len(ray.util.placement_group_table()) == before


def test_placement_group_bundles_land_as_planned(ray_cluster):
    import ray
    from ray.util.placement_group import remove_placement_group

    from r1reward.placement.groups import create_placement_group, slot_options, validate_cluster

    # Colocated TP 2: the rollout's two learner bundles must share a node, which Ray alone won't ensure.
    plan = make_plan(colocated(load_config(None, [*GPU_ON, "rollout.tensor_parallel_size=2"])))
    planned = validate_cluster(plan)
    pg, roles = create_placement_group(plan, timeout_s=60)
    try:
        assert roles == {"rollout": [0], "learner": [0, 1], "reward": [2], "judge": []}
        placed = ray.util.placement_group_table(pg)["bundles_to_node_id"]
        ids = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        assert {b: ids[i] for i, idxs in enumerate(planned) for b in idxs} == placed
        assert placed[0] == placed[1] and placed[0] in ray_cluster["workers"]

        @ray.remote
        def where() -> str:
            return ray.get_runtime_context().get_node_id()

        rollout = plan.role_slots("rollout")[0]
        assert ray.get(where.options(**slot_options(pg, rollout)).remote()) == placed[rollout.bundle]
    finally:
        remove_placement_group(pg)
