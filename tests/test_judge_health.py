"""The judge cannot vanish silently: it must answer at start-up within timeouts.startup_s, and a run
stops once it fails on more than reward.max_judge_failure_rate of the generations over the last
reward.judge_failure_window steps. Real HTTP servers on 127.0.0.1 stand in for the endpoint; the
Ray-backed judges are tested in test_reward_actor.py, a whole run in test_judge_e2e.py."""

from __future__ import annotations

import socket
import time

import pytest

from helpers import JudgeServer
from r1reward.algo.judges import JudgeNotReady, OpenAIJudge, describe_judge
from r1reward.config import ConfigError, load_config
from r1reward.config.schema import RewardConfig
from r1reward.reward.group import JudgeFailing, JudgeFailureWindow
from r1reward.waits import WaitError

NAME = "the openai judge 'judge-x' at http://h/v1/chat/completions"


# --- the window ------------------------------------------------------------------------------------
def test_the_rate_is_over_the_generations_asked_in_the_last_steps():
    window = JudgeFailureWindow(max_rate=0.1, steps=3)
    for failed in (1, 0, 0):
        window.add(asked=10, failed=failed)
        window.check(NAME)  # at most 1 of 10 so far: not above 0.1
    window.add(asked=10, failed=3)  # the first step left the window: 3 of the last 30
    assert window.rate == pytest.approx(0.1)
    window.check(NAME)
    window.add(asked=10, failed=1, invalid=1)  # 4 of the last 30
    with pytest.raises(JudgeFailing) as err:
        window.check(NAME)
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, WaitError)  # stops the run like a failed call
    for part in (NAME, "4 of 30", "13%", "last 3 steps", "3 failed calls, 1 reply without a 0/1",
                 "reward.max_judge_failure_rate=0.1"):  # fmt: skip
        assert part in message, (part, message)


def test_no_judged_generation_is_no_evidence_and_the_bounds_mean_never_and_always():
    window = JudgeFailureWindow(max_rate=0.1, steps=2)
    window.add(asked=0, failed=0)  # nothing reached the judge (no parseable answer): no rate
    assert window.rate == 0.0
    window.check(NAME)
    never = JudgeFailureWindow(max_rate=1.0, steps=2)
    never.add(asked=8, failed=8)
    never.check(NAME)  # 1 keeps training whatever the judge does
    strict = JudgeFailureWindow(max_rate=0.0, steps=2)
    strict.add(asked=100, failed=1)
    with pytest.raises(JudgeFailing, match="1 of 100"):
        strict.check(NAME)


def test_the_rule_judge_is_named_and_config_bounds_are_checked():
    assert describe_judge(RewardConfig()) == "the rule judge"
    cfg = RewardConfig(judge="openai", judge_model="judge-x", judge_url="http://h/v1")
    assert describe_judge(cfg) == NAME
    assert describe_judge(RewardConfig(judge="vllm", judge_model="Qwen/J")) == "the vllm judge 'Qwen/J'"
    assert load_config().reward.max_judge_failure_rate == 0.1
    with pytest.raises(ConfigError, match="'reward.max_judge_failure_rate' must be in \\[0, 1\\]"):
        load_config(None, ["reward.max_judge_failure_rate=1.5"])
    with pytest.raises(ConfigError, match="'reward.judge_failure_window' must be > 0"):
        load_config(None, ["reward.judge_failure_window=0"])
    with pytest.raises(ConfigError, match="reward.judge=openai needs 'reward.judge_model'"):
        load_config(None, ["reward.judge=openai", "reward.judge_url=http://127.0.0.1:1/v1"])


# --- the start-up probe of an OpenAI-compatible endpoint --------------------------------------------
@pytest.fixture
def endpoint():
    """endpoint(statuses): a JudgeServer that serves `statuses` first (None: no answer), then 200s."""
    made = []

    def make(statuses=()):
        statuses = list(statuses)
        made.append(JudgeServer(lambda n: statuses[n] if n < len(statuses) else 200))
        return made[-1]

    yield make
    for server in made:
        server.close()


def _judge(url: str, timeout_s: float = 0.5) -> OpenAIJudge:
    cfg = RewardConfig(judge="openai", judge_url=url, judge_model="judge-x", judge_timeout_s=timeout_s)
    return OpenAIJudge(cfg, backoff_s=0.01)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fails_at_startup(judge: OpenAIJudge, timeout_s: float) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(JudgeNotReady) as err:
        judge.ready(timeout_s)
    return str(err.value), time.monotonic() - start


def test_a_judge_nobody_serves_fails_start_up_at_the_deadline_naming_it():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    message, took = _fails_at_startup(_judge(url), 2.0)
    assert 2.0 <= took < 6.0  # tried until the deadline, not once
    assert "\n" not in message and f"the openai judge 'judge-x' at {url}/chat/completions" in message
    assert "did not answer within 2 s" in message and "Connection" in message  # the last try's error


def test_a_judge_that_accepts_but_never_answers_fails_start_up_at_the_deadline(endpoint):
    server = endpoint([None] * 100)
    message, took = _fails_at_startup(_judge(server.url, timeout_s=0.5), 2.0)
    assert 2.0 <= took < 6.0 and len(server.bodies) >= 2  # each try cut at the request timeout
    assert "\n" not in message and "'judge-x'" in message and "did not answer within 2 s" in message


def test_a_judge_that_comes_up_late_is_waited_for_with_a_one_token_request(endpoint):
    server = endpoint([503, 503])
    _judge(server.url).ready(30.0)
    assert len(server.bodies) == 3
    assert server.bodies[-1]["model"] == "judge-x" and server.bodies[-1]["max_tokens"] == 1


def test_a_judge_that_refuses_the_request_fails_at_once(endpoint):
    server = endpoint([404] * 10)  # a wrong model name or path: waiting would not help
    message, took = _fails_at_startup(_judge(server.url), 30.0)
    assert took < 5.0 and len(server.bodies) == 1
    assert "HTTP 404" in message and "'judge-x'" in message and "\n" not in message


# --- the driver's start-up ------------------------------------------------------------------------
def test_the_driver_waits_for_the_judge_before_it_syncs_or_trains(monkeypatch):
    """_start_actors with recording groups: a judge that never answers ends start-up with its one line,
    after the other roles were started (they load meanwhile) and before the first weight sync."""
    from types import SimpleNamespace

    import r1reward.placement.groups as groups
    import r1reward.placement.plan as plan
    from r1reward.config.schema import Config
    from r1reward.learner.group import LearnerGroup
    from r1reward.reward.group import RewardGroup
    from r1reward.rollout.group import RolloutGroup
    from r1reward.trainer.driver import Trainer

    log = []

    def not_ready():
        log.append("reward wait")
        raise WaitError("reward start-up: the reward actor failed: JudgeNotReady: the openai judge ...")

    rollout = SimpleNamespace(wait_ready=lambda: log.append("rollout wait"), sync_client=lambda: None)
    learners = SimpleNamespace(init_weight_sync=lambda client: log.append("sync"))
    reward = SimpleNamespace(wait_ready=not_ready)
    monkeypatch.setattr(plan, "make_plan", lambda config: SimpleNamespace(role_slots=lambda role: []))
    monkeypatch.setattr(groups, "validate_cluster", lambda p: None)
    monkeypatch.setattr(groups, "create_placement_group", lambda p: (None, None))
    monkeypatch.setattr(RolloutGroup, "start", classmethod(lambda cls, *a, **k: log.append("rollout") or rollout))
    monkeypatch.setattr(RewardGroup, "start", classmethod(lambda cls, *a, **k: log.append("reward") or reward))
    monkeypatch.setattr(LearnerGroup, "start", classmethod(lambda cls, *a, **k: log.append("learners") or learners))
    with pytest.raises(WaitError, match="JudgeNotReady: the openai judge"):
        Trainer(Config())._start_actors()
    assert log == ["rollout", "reward", "learners", "rollout wait", "reward wait"]
