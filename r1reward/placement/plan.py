"""Placement plan: which bundles (GPU, CPU) each role needs and whether they fit a set of nodes.

Pure Python (no Ray) so the launcher can check a plan and print it before any cluster exists; the
runtime reserves the same plan with r1reward.placement.groups.
Bundle order: rollout workers, learner ranks, reward actor, judge. A TP rank needs a device of its
own, so with tensor parallelism a rollout worker asks whole GPUs, and a Ray actor asks either a
fraction of one GPU or whole GPUs. Colocated rule (resources.colocate=True, refused at start-up until
a colocated weight path exists, but planned here so that its layout is right): rollout worker i
shares learner bundles [i*tp, (i+1)*tp) (its TP group, kept on one node), one whole GPU each; its
slot's num_gpus is its share of every GPU of that group (COLOCATE_ROLLOUT_FRACTION), and the learner
on each of them keeps the rest. Needs num_workers * tp <= num_ranks; gpus_per_rollout_worker is
unused. Declared GPUs are scheduling labels only: never pick a device from them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from r1reward.algo.judges import needs_model_actor
from r1reward.config import Config, validate
from r1reward.errors import UserError

COLOCATE_ROLLOUT_FRACTION = 0.5
ROLE_NAMES = {
    "rollout": "a rollout worker",
    "learner": "a learner rank",
    "reward": "the reward actor",
    "judge": "the judge",
}
EPS = 1e-9


class PlacementError(UserError):
    pass


@dataclass(frozen=True)
class Slot:
    """One actor: the bundle it is scheduled on, what it asks for there, and its TP group."""

    role: str  # rollout | learner | reward | judge
    rank: int
    bundle: int
    num_gpus: float
    num_cpus: float
    group: tuple[int, ...]  # bundles that must share one node with it
    cores: tuple[int, ...] = ()  # the cores its process is held to (resources.pin_cores); () = any


@dataclass
class PlacementPlan:
    config: Config
    bundles: list[dict[str, float]]  # Ray bundle dicts, zero entries left out (Ray rejects all-zero)
    labels: list[str]  # per bundle, for the table
    slots: list[Slot]
    groups: list[tuple[int, ...]]  # a partition of the bundles; each group lands on one node
    strategy: str

    @property
    def totals(self) -> tuple[float, float]:
        return (sum(b.get("GPU", 0.0) for b in self.bundles), sum(b.get("CPU", 0.0) for b in self.bundles))

    @property
    def judge_gpus(self) -> float:
        return sum(s.num_gpus for s in self.role_slots("judge"))

    def role_slots(self, role: str) -> list[Slot]:
        return [s for s in self.slots if s.role == role]

    def bundle_indices(self) -> dict[str, list[int]]:
        return {r: [s.bundle for s in self.role_slots(r)] for r in ("rollout", "learner", "reward", "judge")}


def _n(x: float) -> str:
    return f"{x:g}"


def _bundle(gpu: float, cpu: float, what: str) -> dict[str, float]:
    if gpu < 0 or cpu < 0 or gpu + cpu <= 0:
        raise PlacementError(
            f"{what} must ask for some GPU or CPU and nothing negative (got GPU {_n(gpu)}, "
            f"CPU {_n(cpu)}): check the resources.* settings"
        )
    return {k: float(v) for k, v in (("GPU", gpu), ("CPU", cpu)) if v > 0}


def _check_gpu_shares(config: Config) -> None:
    """The GPU counts Ray can give an actor, and that tensor parallelism can use."""
    res, tp = config.resources, config.rollout.tensor_parallel_size
    per_rank, per_learner = res.gpus_per_rollout_worker, res.gpus_per_learner_rank
    if res.colocate and per_learner not in (0, 1):
        raise PlacementError(
            f"resources.colocate shares one GPU per learner rank with the rollout: "
            f"resources.gpus_per_learner_rank must be 1 (or 0 on CPUs), got {_n(per_learner)}"
        )
    if not res.colocate and tp > 1 and per_rank != int(per_rank):
        raise PlacementError(
            f"rollout.tensor_parallel_size={tp} runs each TP rank on a GPU of its own: "
            f"resources.gpus_per_rollout_worker must be a whole number, got {_n(per_rank)}"
        )
    for key, gpus in (("gpus_per_rollout_worker", tp * per_rank), ("gpus_per_learner_rank", per_learner)):
        if gpus > 1 and gpus != int(gpus):
            raise PlacementError(
                f"an actor gets a fraction of one GPU or whole GPUs, not {_n(gpus)}: check resources.{key}"
            )


def make_plan(config: Config) -> PlacementPlan:
    ro, res = config.rollout, config.resources
    nw, tp, nr = ro.num_workers, ro.tensor_parallel_size, config.learner.num_ranks
    _check_gpu_shares(config)
    g_r, g_l, c_r, c_l = (
        tp * res.gpus_per_rollout_worker,
        res.gpus_per_learner_rank,
        res.cpus_per_rollout_worker,
        res.cpus_per_learner_rank,
    )
    plan = PlacementPlan(config, [], [], [], [], res.placement_strategy)

    def add(role: str, rank: int, gpu: float, cpu: float, label: str, slot_gpu: float, slot_cpu: float) -> None:
        plan.slots.append(Slot(role, rank, len(plan.bundles), slot_gpu, slot_cpu, (len(plan.bundles),)))
        plan.bundles.append(_bundle(gpu, cpu, ROLE_NAMES[role]))
        plan.labels.append(label)

    if not res.colocate:
        for i in range(nw):
            add("rollout", i, g_r, c_r, "rollout", g_r, c_r)
        for j in range(nr):
            add("learner", j, g_l, c_l, "learner", g_l, c_l)
        plan.groups += [(b,) for b in range(len(plan.bundles))]
    else:
        if nw * tp > nr:
            raise PlacementError(
                f"resources.colocate needs rollout.num_workers x tensor_parallel_size ({nw} x {tp} = {nw * tp}) "
                f"<= learner.num_ranks ({nr}): every rollout GPU shares a learner rank's bundle"
            )
        f, shared = COLOCATE_ROLLOUT_FRACTION, nw * tp
        for j in range(nr):  # the first bundle of each TP group also hosts the engine actor's CPUs
            add(
                "learner",
                j,
                g_l,
                c_l + (c_r if j < shared and j % tp == 0 else 0.0),
                "learner+rollout" if j < shared else "learner",
                g_l * (1 - f) if j < shared else g_l,
                c_l,
            )
        for i in range(nw):
            group = tuple(range(i * tp, (i + 1) * tp))
            plan.slots.append(Slot("rollout", i, i * tp, g_l * f, c_r, group))
            plan.groups.append(group)
        plan.groups += [(b,) for b in range(shared, nr)]
    judge_gpu = 1.0 if plan.totals[0] > 0 else 0.0
    for role, gpu in [("reward", 0.0)] + ([("judge", judge_gpu)] if needs_model_actor(config.reward.judge) else []):
        plan.groups.append((len(plan.bundles),))
        add(role, 0, gpu, 1.0, role, gpu, 1.0)
    return plan


def learner_plan(config: Config) -> PlacementPlan:
    """Only the learner ranks: supervised fine-tuning needs no rollout, reward or judge actors."""
    res = config.resources
    plan = PlacementPlan(config, [], [], [], [], res.placement_strategy)
    for j in range(config.learner.num_ranks):
        plan.slots.append(Slot("learner", j, j, res.gpus_per_learner_rank, res.cpus_per_learner_rank, (j,)))
        plan.bundles.append(_bundle(res.gpus_per_learner_rank, res.cpus_per_learner_rank, ROLE_NAMES["learner"]))
        plan.labels.append("learner")
        plan.groups.append((j,))
    return plan


def rollout_plan(config: Config, num_workers: int | None = None) -> PlacementPlan:
    """Only rollout workers (hard-example selection, evaluation): `num_workers` (default
    rollout.num_workers) engines of TP tensor_parallel_size, each with its planned GPUs and CPUs."""
    res, tp = config.resources, config.rollout.tensor_parallel_size
    workers = config.rollout.num_workers if num_workers is None else num_workers
    gpus, cpus = tp * res.gpus_per_rollout_worker, res.cpus_per_rollout_worker
    plan = PlacementPlan(config, [], [], [], [], res.placement_strategy)
    for i in range(workers):
        plan.slots.append(Slot("rollout", i, i, gpus, cpus, (i,)))
        plan.bundles.append(_bundle(gpus, cpus, ROLE_NAMES["rollout"]))
        plan.labels.append("rollout")
        plan.groups.append((i,))
    return plan


def _need(plan: PlacementPlan, group: tuple[int, ...]) -> tuple[float, float]:
    return (sum(plan.bundles[b].get("GPU", 0.0) for b in group), sum(plan.bundles[b].get("CPU", 0.0) for b in group))


def _pack(plan: PlacementPlan, nodes: list[dict[str, float]]) -> tuple[list[list[int]] | None, tuple[int, ...]]:
    """First-fit decreasing over groups (SPREAD: most-free node first). Returns (assignment, failed group)."""
    groups = [tuple(range(len(plan.bundles)))] if plan.strategy == "STRICT_PACK" else plan.groups
    free = [[float(n.get("GPU", 0.0)), float(n.get("CPU", 0.0))] for n in nodes]
    out: list[list[int]] = [[] for _ in nodes]
    for group in sorted(groups, key=lambda g: tuple(-x for x in _need(plan, g)) + (g[0],)):
        gpu, cpu = _need(plan, group)
        fits = [
            i
            for i, (fg, fc) in enumerate(free)
            if gpu <= fg + EPS
            and cpu <= fc + EPS
            and not (plan.strategy == "STRICT_SPREAD" and (out[i] or len(group) > 1))
        ]
        if not fits:
            return None, group
        node = max(fits, key=lambda i: (free[i][0], free[i][1], -i)) if plan.strategy == "SPREAD" else fits[0]
        free[node][0] -= gpu
        free[node][1] -= cpu
        out[node] += group
    return [sorted(b) for b in out], ()


def with_split(config: Config, workers: int, ranks: int) -> Config:
    """A copy of `config` with `workers` rollout workers and `ranks` learner ranks."""
    new = copy.deepcopy(config)
    new.rollout.num_workers, new.learner.num_ranks = workers, ranks
    return new


def split_fits(config: Config, nodes: list[dict[str, float]]) -> bool:
    """Whether `config` is valid (batch divisibility included) and its plan packs onto `nodes`."""
    try:
        validate(config)
        return _pack(make_plan(config), nodes)[0] is not None
    except UserError:
        return False


def _gpu_what(plan: PlacementPlan) -> str:
    c, res = plan.config, plan.config.resources
    per_r, per_l = (
        ("" if g == 1 else f" x {_n(g)} GPU") for g in (res.gpus_per_rollout_worker, res.gpus_per_learner_rank)
    )
    what = f"{c.learner.num_ranks} learner ranks{per_l}"
    if not res.colocate:
        what = f"{c.rollout.num_workers} rollout workers x TP {c.rollout.tensor_parallel_size}{per_r} + {what}"
    return what + (" shared with rollout" if res.colocate else "") + (" + 1 judge" if plan.judge_gpus else "")


def _suggest(plan: PlacementPlan, nodes: list[dict[str, float]], cluster_gpus: float) -> str:
    """Configs that would fit, checked by packing them: a --ratio split and a smaller learner."""
    c, res = plan.config, plan.config.resources
    judge = plan.judge_gpus
    avail, tips = cluster_gpus - judge, []
    if not res.colocate and res.gpus_per_rollout_worker > 0 and res.gpus_per_learner_rank > 0:
        unit_r, unit_l = c.rollout.tensor_parallel_size * res.gpus_per_rollout_worker, res.gpus_per_learner_rank
        rollout_now = c.rollout.num_workers * unit_r  # keep today's split as closely as possible
        target = avail * rollout_now / (rollout_now + c.learner.num_ranks * unit_l)
        for w in sorted(range(1, int(avail // unit_r) + 1), key=lambda w: (abs(w * unit_r - target), -w)):
            ranks = (avail - w * unit_r) / unit_l
            if ranks >= 1 and abs(ranks - round(ranks)) < EPS and split_fits(with_split(c, w, round(ranks)), nodes):
                tips.append(f"--ratio {_n(w * unit_r)}:{_n(round(ranks) * unit_l)}")
                break
    for ranks in range(c.learner.num_ranks - 1, 0, -1):
        if split_fits(with_split(c, c.rollout.num_workers, ranks), nodes):
            tips.append(f"learner.num_ranks={ranks}")
            break
    if not tips:
        return "; add GPUs or lower rollout.num_workers / learner.num_ranks"
    left = f" ({_n(judge)} GPU stays for the judge)" if judge else ""
    return f"; with {_n(cluster_gpus)} GPUs try {' or '.join(tips)}{left}"


def _describe(plan: PlacementPlan, group: tuple[int, ...]) -> str:
    mine = [s for s in plan.slots if s.bundle in group]
    s = next((s for s in mine if s.role == "rollout"), mine[0])  # a shared bundle is named by its rollout
    tp = plan.config.rollout.tensor_parallel_size
    return {"rollout": f"rollout worker {s.rank} (TP {tp})", "learner": f"learner rank {s.rank}"}.get(
        s.role, ROLE_NAMES[s.role]
    )


def fit_to_nodes(plan: PlacementPlan, nodes: list[dict[str, float]]) -> list[list[int]]:
    """Bundle indices per node, or PlacementError with one line saying what does not fit and what would."""
    if not nodes:
        raise PlacementError("the cluster has no alive nodes")
    assignment, failed = _pack(plan, nodes)
    if assignment is not None:
        return assignment
    gpus, cpus = plan.totals
    have_g, have_c = sum(n.get("GPU", 0.0) for n in nodes), sum(n.get("CPU", 0.0) for n in nodes)
    on = f"on {len(nodes)} node{'s' if len(nodes) > 1 else ''}"
    if gpus > have_g + EPS:
        raise PlacementError(
            f"the plan needs {_n(gpus)} GPUs ({_gpu_what(plan)}) but the cluster has "
            f"{_n(have_g)} GPUs {on}{_suggest(plan, nodes, have_g)}"
        )
    if cpus > have_c + EPS:
        raise PlacementError(
            f"the plan needs {_n(cpus)} CPUs but the cluster has {_n(have_c)} CPUs {on}; lower "
            f"resources.cpus_per_rollout_worker / cpus_per_learner_rank or add nodes"
        )
    if plan.strategy == "STRICT_PACK":
        raise PlacementError(
            f"placement_strategy STRICT_PACK needs {_n(gpus)} GPUs and {_n(cpus)} CPUs on one "
            f"node, but no node has that much; use resources.placement_strategy=PACK"
        )
    if plan.strategy == "STRICT_SPREAD":
        raise PlacementError(
            f"placement_strategy STRICT_SPREAD needs one node per bundle ({len(plan.bundles)} "
            f"bundles, {len(nodes)} nodes) and no TP group over several bundles; use PACK"
        )
    gpu, cpu = _need(plan, failed)
    sizes = ", ".join(f"{_n(n.get('GPU', 0.0))}/{_n(n.get('CPU', 0.0))}" for n in nodes)
    raise PlacementError(
        f"{_describe(plan, failed)} needs {_n(gpu)} GPUs and {_n(cpu)} CPUs on one node, but "
        f"no node has that much left (nodes' GPU/CPU: {sizes}); lower "
        f"rollout.tensor_parallel_size or use larger nodes"
    )


def format_plan(plan: PlacementPlan, assignment: list[list[int]], nodes: list[dict[str, float]]) -> str:
    rows = [("node", "role", "count", "GPUs", "CPUs")]
    for i, (idxs, node) in enumerate(zip(assignment, nodes)):
        for label in dict.fromkeys(plan.labels[b] for b in idxs):  # first-seen order
            mine = [b for b in idxs if plan.labels[b] == label]
            rows.append(
                (
                    str(i),
                    label,
                    str(len(mine)),
                    _n(sum(plan.bundles[b].get("GPU", 0.0) for b in mine)),
                    _n(sum(plan.bundles[b].get("CPU", 0.0) for b in mine)),
                )
            )
        used_g, used_c = _need(plan, tuple(idxs))
        rows.append((str(i), "(free)", "", _n(node.get("GPU", 0.0) - used_g), _n(node.get("CPU", 0.0) - used_c)))
    gpus, cpus = plan.totals
    rows.append(("total", "", str(len(plan.bundles)), _n(gpus), _n(cpus)))
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    return "\n".join(
        "  ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths))) for r in rows
    )


def parse_ratio(text: str) -> tuple[int, int]:
    parts = text.replace(" ", "").split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise PlacementError(f"--ratio must be ROLLOUT:LEARNER with positive whole numbers (e.g. 1:3), got {text!r}")
    return int(parts[0]), int(parts[1])


def apply_ratio(config: Config, total_gpus: float, ratio: tuple[int, int] | int) -> Config:
    """A copy of `config` whose rollout:learner GPUs follow `ratio` (or `ratio` rollout GPUs) out of
    `total_gpus`, less one GPU for a vLLM judge. Raises PlacementError/ConfigError when it cannot."""
    res, tp = config.resources, config.rollout.tensor_parallel_size
    if res.colocate:
        raise PlacementError(
            "--ratio splits GPUs between rollout and learner; it does not apply with resources.colocate=true"
        )
    if res.gpus_per_rollout_worker <= 0 or res.gpus_per_learner_rank <= 0:
        raise PlacementError("--ratio needs resources.gpus_per_rollout_worker and gpus_per_learner_rank > 0")
    avail = total_gpus - (1.0 if needs_model_actor(config.reward.judge) else 0.0)
    desc = f"{ratio[0]}:{ratio[1]}" if isinstance(ratio, tuple) else f"{ratio} rollout GPUs"
    rollout = avail * ratio[0] / sum(ratio) if isinstance(ratio, tuple) else float(ratio)
    learner = avail - rollout
    workers = rollout / (tp * res.gpus_per_rollout_worker)
    ranks = learner / res.gpus_per_learner_rank
    where = f"{_n(avail)} GPUs" + (" (1 kept for the judge)" if avail != total_gpus else "")
    if abs(workers - round(workers)) > EPS or round(workers) < 1:
        raise PlacementError(
            f"--ratio {desc} of {where} gives {_n(round(rollout, 3))} rollout GPUs, not a positive "
            f"multiple of TP {tp} x {_n(res.gpus_per_rollout_worker)} GPU per worker"
        )
    if abs(ranks - round(ranks)) > EPS or round(ranks) < 1:
        raise PlacementError(
            f"--ratio {desc} of {where} gives {_n(round(learner, 3))} learner GPUs, not a positive "
            f"multiple of {_n(res.gpus_per_learner_rank)} GPU per learner rank"
        )
    new = with_split(config, round(workers), round(ranks))
    validate(new, origin=f"--ratio {desc}")
    return new
