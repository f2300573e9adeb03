"""The role groups' fan-out without Ray actors: splitting, argument routing, and the one-line timeout.

Fake actor handles stand in for the remote service (a method's `.remote(...)` returns its answer, and
`ray.get` passes answers through); the real groups run in test_e2e_train.py and test_eval_e2e.py.
"""

from __future__ import annotations

import pytest

from r1reward.placement.remote import ActorTimeout, split, split_even, wait_all


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
def ray_get_passes_through(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "get", lambda refs, timeout=None: refs)


def test_split_and_split_even():
    assert split(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]  # the learner ranks' split (unchanged)
    assert split_even(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]  # the rollout workers'
    assert split_even([1], 3) == [[1], [], []]
    assert split([], 2) == [[], []]


def test_learner_group_splits_samples_and_sends_the_nan_loss_fault_to_rank_0_only(ray_get_passes_through):
    from r1reward.learner.group import LearnerGroup

    log: list = []
    group = LearnerGroup([_Handle(log, 0), _Handle(log, 1)])
    out = group.train(list(range(5)), debug_nan_loss=True)
    assert [(r, a, k) for r, _, a, k in log] == [(0, ([0, 1, 2],), {"debug_nan_loss": True}),
                                                 (1, ([3, 4],), {"debug_nan_loss": False})]
    assert [o["rank"] for o in out] == [0, 1]
    log.clear()
    group.save("d", "step_1", "hf")
    assert [(r, n, a) for r, n, a, _ in log] == [(0, "save", ("d", "step_1", "hf")), (1, "save", ("d", "step_1", "hf"))]


def test_rollout_group_keeps_the_order_and_gives_each_worker_its_seeds(ray_get_passes_through, monkeypatch):
    import r1reward.rollout.group as rollout_group

    log: list = []
    # Each fake worker answers one result per prompt of its chunk, tagged with its rank and seed.
    monkeypatch.setattr(rollout_group, "wait_all", lambda refs, timeout_s, what: [
        [{"rank": r["rank"], "prompt": p, "seed": s} for p, s in zip(r["args"][0], r["kwargs"]["seeds"])]
        for r in refs])
    group = rollout_group.RolloutGroup([_Handle(log, 0), _Handle(log, 1)])
    out = group.generate(["a", "b", "c"], n=4, seeds=[10, 11, 12])
    assert [(o["rank"], o["prompt"], o["seed"]) for o in out] == [(0, "a", 10), (0, "b", 11), (1, "c", 12)]
    assert all(k["n"] == 4 for _, _, _, k in log)


def test_a_call_that_does_not_answer_fails_with_one_line_naming_it(monkeypatch):
    import ray

    def never(refs, timeout=None):
        assert timeout == 2.5
        raise ray.exceptions.GetTimeoutError("Get timed out: some object(s) not ready.")

    monkeypatch.setattr(ray, "get", never)
    with pytest.raises(ActorTimeout) as err:
        wait_all(["ref"], 2.5, "2 learner rank(s): train")
    assert str(err.value) == "2 learner rank(s): train: no answer within 2.5 s (see the actor logs)"
