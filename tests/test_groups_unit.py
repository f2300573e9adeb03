"""The role groups' fan-out without Ray actors: splitting, argument routing and role names.

Fake actor handles stand in for the remote service (a method's `.remote(...)` returns its answer, and
the groups' wait passes answers through); the real groups run in test_e2e_train.py and test_eval_e2e.py.
The deadline and the one-line error of the wait itself are tested in test_faults_unit.py.
"""

from __future__ import annotations

import pytest

from r1reward.placement.remote import split, split_even


class _Method:
    def __init__(self, log: list, name: str, rank: int) -> None:
        self.log, self.name, self.rank = log, name, rank

    def remote(self, *args, **kwargs):
        self.log.append((self.rank, self.name, args, kwargs))
        return {"rank": self.rank, "args": args, "kwargs": kwargs}


class _Handle:
    def __init__(self, log: list, rank: int) -> None:
        self.log, self.rank = log, rank

    def __getattr__(self, name: str) -> _Method:
        return _Method(self.log, name, self.rank)


@pytest.fixture
def waits(monkeypatch):
    """The groups' waits answer at once; each call's roles, name and deadline are recorded."""
    import r1reward.learner.group as learner_group
    import r1reward.rollout.group as rollout_group

    calls: list = []

    def wait_all(refs, roles, call, timeout_s):
        calls.append((list(roles), call, timeout_s))
        return refs

    for module in (learner_group, rollout_group):
        monkeypatch.setattr(module, "wait_all", wait_all)
    return calls


def test_split_and_split_even():
    assert split(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]  # the learner ranks' split (unchanged)
    assert split_even(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]  # the rollout workers'
    assert split_even([1], 3) == [[1], [], []]
    assert split([], 2) == [[], []]


def test_learner_group_splits_samples_in_rank_order(waits):
    from r1reward.config.schema import TimeoutsConfig
    from r1reward.learner.group import LearnerGroup

    log: list = []
    group = LearnerGroup([_Handle(log, 0), _Handle(log, 1)], timeouts=TimeoutsConfig(remote_call_s=7.0))
    out = group.train(list(range(5)))
    assert waits[-1] == (["learner rank 0", "learner rank 1"], "train", 7.0)  # roles named, config's deadline
    assert [(r, a, k) for r, _, a, k in log] == [(0, ([0, 1, 2],), {}), (1, ([3, 4],), {})]
    assert [o["rank"] for o in out] == [0, 1]
    log.clear()
    group.save("d", "step_1", "hf")
    assert [(r, n, a) for r, n, a, _ in log] == [(0, "save", ("d", "step_1", "hf")), (1, "save", ("d", "step_1", "hf"))]


def test_rollout_group_keeps_the_order_and_gives_each_worker_its_seeds(monkeypatch):
    import r1reward.rollout.group as rollout_group

    log: list = []
    roles_seen: list = []

    def wait_all(refs, roles, call, timeout_s):  # each fake worker: one result per prompt, with rank and seed
        roles_seen.append(list(roles))
        return [
            ([{"rank": r["rank"], "prompt": p, "seed": s} for p, s in zip(r["args"][0], r["kwargs"]["seeds"])], 0.5)
            for r in refs
        ]

    monkeypatch.setattr(rollout_group, "wait_all", wait_all)
    group = rollout_group.RolloutGroup([_Handle(log, 0), _Handle(log, 1)])
    out = group.generate(["a", "b", "c"], n=4, seeds=[10, 11, 12])
    assert [(o["rank"], o["prompt"], o["seed"]) for o in out] == [(0, "a", 10), (0, "b", 11), (1, "c", 12)]
    assert all(k["n"] == 4 for _, _, _, k in log)
    assert roles_seen == [["rollout worker 0", "rollout worker 1"]]
    log.clear()
    group.generate(["a"], seeds=[1])  # a worker with no prompts gets no call and is not waited for
    assert [r for r, *_ in log] == [0] and roles_seen[-1] == ["rollout worker 0"]

    # Non-blocking: generate_async submits and returns; only collect waits, once, however often called.
    log.clear()
    handle = group.generate_async(["a", "b", "c"], seeds=[1, 2, 3])
    assert len(log) == 2 and len(roles_seen) == 2 and handle.results is None
    first = group.collect(handle)
    assert group.collect(handle) is first and len(roles_seen) == 3
    assert [o["seed"] for o in first] == [1, 2, 3]
    assert handle.busy_s == {"rollout worker 0": 0.5, "rollout worker 1": 0.5}


def test_learner_group_takes_old_logprobs_from_the_sampler_without_calling_the_ranks(waits):
    from r1reward.config.schema import AlgoConfig
    from r1reward.data.samples import Sample
    from r1reward.learner.group import LearnerGroup

    log: list = []
    samples = [
        Sample(prompt_ids=[1, 2], completion_ids=[3, 4], sampler_logprobs=[-0.5, -1.5]),
        Sample(prompt_ids=[1], completion_ids=[5], sampler_logprobs=[-2.0]),
    ]
    sampler = LearnerGroup([_Handle(log, 0), _Handle(log, 1)], algo=AlgoConfig(old_logprobs="sampler"))
    assert sampler.compute_logprobs(samples) == [{"old_logprobs": [[-0.5, -1.5], [-2.0]]}]
    assert log == [] and waits == []  # no rank called: nothing was left to compute
    with_kl = LearnerGroup([_Handle(log, 0), _Handle(log, 1)], algo=AlgoConfig(old_logprobs="sampler", kl_coef=0.1))
    with_kl.compute_logprobs(samples)  # the reference's log-probs still need the ranks
    assert [(r, n) for r, n, _, _ in log] == [(0, "compute_logprobs"), (1, "compute_logprobs")]
