"""The reward actor and its consistency judges: rule, an OpenAI-compatible endpoint (a local mock
server stands in for it), and a judge behind a Ray actor (a fake engine; the real vLLM one is slow)."""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import JudgeServer
from r1reward.algo.judges import (
    JUDGE_PROMPT,
    OpenAIJudge,
    VLLMJudge,
    build_judge_prompt,
    make_judge,
    parse_judge_output,
)
from r1reward.config.schema import RewardConfig
from r1reward.errors import UserError
from r1reward.reward import actor as actor_mod
from r1reward.reward.actor import RayJudgeClient, RewardActor

GOOD = "<think>Response 1 misreads the chart.\nOverall, Response 2 is better.</think><answer>2</answer>"
INCONSISTENT = "<think>Response 2 misreads the chart.\nOverall, Response 1 is better.</think><answer>2</answer>"
NO_VERDICT = "<think>Both look plausible.</think><answer>2</answer>"
TRAILING = GOOD + " and more"  # right and consistent, but not the exact format
WRONG = "<think>Overall, Response 1 is better.</think><answer>1</answer>"
GARBAGE = "I like turtles"

# (text, label, reward, format, result, consistency, parse_failed)
TABLE = [
    (GOOD, 2, 2.0, 1.0, 1.0, 1, False),
    (INCONSISTENT, 2, 1.0, 1.0, 1.0, -1, False),
    (NO_VERDICT, 2, 1.5, 1.0, 1.0, 0, False),
    (TRAILING, 2, 1.5, 0.0, 1.0, 1, False),
    (WRONG, 2, 0.5, 1.0, 0.0, 1, False),
    (GOOD, "<answer>2</answer>", 2.0, 1.0, 1.0, 1, False),  # released-data label string
    (GARBAGE, 1, 0.0, 0.0, 0.0, 0, True),
    (GOOD, 3, 0.0, 0.0, 0.0, 0, True),  # a bad label is an error: reward 0, counted
]


def rule_cfg(**kw) -> dict:
    return asdict(RewardConfig(judge="rule", **kw))


def check_table(out: dict) -> None:
    for k, (_, _, reward, fmt, result, cons, failed) in enumerate(TABLE):
        got = (out["reward"][k], out["format"][k], out["result"][k], out["consistency"][k], out["parse_failed"][k])
        assert got == (reward, fmt, result, cons, failed), f"row {k}"
    assert out["score_errors"] == 1 and out["parse_failures"] == 2 and out["judge_failures"] == 0
    assert out["reward_mean"] == pytest.approx(sum(r[2] for r in TABLE) / len(TABLE))
    assert out["result_rate"] == pytest.approx(5 / 8) and out["format_rate"] == pytest.approx(5 / 8)


def test_rule_judge_table() -> None:
    out = RewardActor(rule_cfg()).score([r[0] for r in TABLE], [r[1] for r in TABLE])
    check_table(out)
    assert out["consistency_mean"] == pytest.approx(3 / 8)


def test_weights_come_from_config() -> None:
    out = RewardActor(rule_cfg(w_consistency=1.0, w_format=0.0)).score([GOOD, INCONSISTENT], [2, 2])
    assert out["reward"] == [2.0, 0.0]


def test_empty_batch_and_length_mismatch() -> None:
    out = RewardActor(rule_cfg()).score([], [])
    assert out["n"] == 0 and out["reward"] == [] and out["reward_mean"] == 0.0
    with pytest.raises(ValueError):
        RewardActor(rule_cfg()).score([GOOD], [])


def test_scoring_exceptions_never_reward(monkeypatch) -> None:
    real = actor_mod.score_generation

    def flaky(text, *args, **kwargs):
        if text == GOOD:
            raise RuntimeError("boom")
        return real(text, *args, **kwargs)

    monkeypatch.setattr(actor_mod, "score_generation", flaky)
    out = RewardActor(rule_cfg()).score([GOOD, NO_VERDICT], [2, 2])
    assert out["reward"] == [0.0, 1.5] and out["score_errors"] == 1


class _BrokenJudge:
    def __init__(self, values):
        self.values = values

    def judge(self, texts):
        if self.values is None:
            raise RuntimeError("judge down")
        from r1reward.algo.judges import JudgeResult

        return JudgeResult(list(self.values))


@pytest.mark.parametrize("values, failures", [(None, 2), ([1], 2), ([5, 1], 1)])
def test_broken_judge_is_neutral(values, failures) -> None:
    actor = RewardActor(rule_cfg())
    actor.judge = _BrokenJudge(values)
    out = actor.score([GOOD, GOOD], [2, 2])
    # A raising judge, a wrong count, or a value out of range: consistency 0, the rest still scored.
    expected = [1.5, 1.5] if values is None or len(values) != 2 else [1.5, 2.0]
    assert out["reward"] == expected and out["judge_failures"] == failures


def test_unknown_judge_and_missing_endpoint() -> None:
    with pytest.raises(UserError):
        make_judge(RewardConfig(judge="gpt"))
    with pytest.raises(UserError):
        make_judge(RewardConfig(judge="openai", judge_model="m"))  # no judge_url
    with pytest.raises(UserError):
        make_judge(RewardConfig(judge="vllm"))  # no actor


def test_prompt_and_output_parsing() -> None:
    text = "<think>line a\nline b\n\nline c\nline d</think><answer>1</answer>"
    prompt = build_judge_prompt(text, "concise")
    assert "line b\nline c\nline d" in prompt and "line a" not in prompt
    assert "Response 1 is better" in prompt and prompt.startswith(JUDGE_PROMPT.split("{")[0])
    released = build_judge_prompt(text)  # the default: the released rules, lines joined with ';'
    assert "line b;line c;line d" in released and "line a" not in released and "response 1 is better" in released
    for style in ("released", "concise"):
        assert build_judge_prompt(GARBAGE, style) is None
        assert build_judge_prompt("<think></think><answer>2</answer>", style) is None
    assert [parse_judge_output(s) for s in ("1", " 0\n", "'1'.", "<answer>0</answer>", "yes", "10", "")] == [
        1,
        -1,
        1,
        -1,
        None,
        None,
        None,
    ]


# --- the OpenAI-compatible judge against a local mock server ---------------------------------------
class MockServer:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.reply: str = "1"
        self.sleep_s = 0.0
        self.statuses: list[int] = []  # served in order before the normal 200 replies
        self.inflight = self.max_inflight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                    status = server.statuses.pop(0) if server.statuses else 200
                    server.inflight += 1
                    server.max_inflight = max(server.max_inflight, server.inflight)
                try:
                    time.sleep(server.sleep_s)
                    data = json.dumps({"choices": [{"message": {"role": "assistant", "content": server.reply}}]})
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(data.encode())
                except OSError:
                    pass  # the client gave up (timeout test)
                finally:
                    with server.lock:
                        server.inflight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/custom/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    srv = MockServer()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def openai_judge(server: MockServer, **kw) -> OpenAIJudge:
    cfg = RewardConfig(
        judge="openai",
        judge_url=server.url,
        judge_model="judge-x",
        judge_api_key_env="R1R_TEST_KEY",
        **{"judge_timeout_s": 5.0, "judge_retries": 2, **kw},
    )  # generous: the machine may be busy
    return OpenAIJudge(cfg, backoff_s=0.01)


def test_openai_yes_and_request_shape(server, monkeypatch) -> None:
    monkeypatch.setenv("R1R_TEST_KEY", "sekret")
    res = openai_judge(server).judge([GOOD, GARBAGE])
    assert res.values == [1, 0] and res.failures == 0 and res.skipped == 1
    assert len(server.requests) == 1  # no parseable answer: no call
    req = server.requests[0]
    assert req["path"] == "/custom/v1/chat/completions"  # URL and model come from the config
    assert req["body"]["model"] == "judge-x" and req["body"]["temperature"] == 0.1
    assert req["body"]["max_tokens"] == 1024  # the released prompt lets the judge reason
    assert req["headers"]["Authorization"] == "Bearer sekret"
    content = req["body"]["messages"][0]["content"]
    assert "Response 1 misreads the chart.;Overall, Response 2 is better." in content
    assert "response 2 is better" in content.split("Model's answer")[-1]


def test_openai_no(server, monkeypatch) -> None:
    monkeypatch.delenv("R1R_TEST_KEY", raising=False)
    server.reply = "0"
    res = openai_judge(server).judge([GOOD, WRONG])
    assert res.values == [-1, -1] and res.failures == 0
    assert all("Authorization" not in r["headers"] for r in server.requests)


def test_openai_timeout_counts_failure_after_retries(server) -> None:
    server.sleep_s = 1.0
    start = time.monotonic()
    res = openai_judge(server, judge_timeout_s=0.3, judge_retries=2).judge([GOOD])
    assert res.values == [0] and res.failures == 1
    assert len(server.requests) == 3  # 1 try + 2 retries
    assert time.monotonic() - start < 3 * 1.0  # each try was cut at the timeout, not at the server's pace


def test_openai_500_retried_then_zero(server) -> None:
    server.statuses = [500] * 10
    res = openai_judge(server, judge_retries=3).judge([GOOD])
    assert res.values == [0] and res.failures == 1 and len(server.requests) == 4


def test_openai_500_then_recovers(server) -> None:
    server.statuses = [500]
    res = openai_judge(server).judge([GOOD])
    assert res.values == [1] and res.failures == 0 and len(server.requests) == 2


def test_openai_client_error_not_retried(server) -> None:
    server.statuses = [404] * 10
    res = openai_judge(server).judge([GOOD])
    assert res.values == [0] and res.failures == 1 and len(server.requests) == 1


def test_openai_garbage_output_is_asked_again_then_counted(server) -> None:
    server.reply = "The reasoning is sound, I think."
    res = openai_judge(server).judge([GOOD])
    assert res.values == [0] and res.invalid == 1 and res.failures == 0 and len(server.requests) == 3


def test_openai_reasoning_reply_is_read_from_its_end(server) -> None:
    server.reply = "Rule 2 does not apply: the reasoning favours response 2, as the answer does.\nOutput: 1"
    res = openai_judge(server, judge_max_tokens=64).judge([GOOD])
    assert res.values == [1] and res.invalid == 0 and server.requests[0]["body"]["max_tokens"] == 64


def test_openai_concurrency_is_bounded(server) -> None:
    server.sleep_s = 0.2
    res = openai_judge(server, judge_timeout_s=5.0).judge([GOOD] * 12)
    assert res.values == [1] * 12 and 2 <= server.max_inflight <= 8


def test_openai_through_reward_actor(server) -> None:
    server.reply = "0"
    cfg = asdict(
        RewardConfig(judge="openai", judge_url=server.url + "/chat/completions", judge_model="m", judge_timeout_s=2.0)
    )
    out = RewardActor(cfg).score([GOOD, WRONG, GARBAGE], [2, 2, 1])
    assert out["reward"] == [1.0, 0.5, 0.0] and out["consistency"] == [-1, -1, 0]
    assert out["judge_skipped"] == 1 and server.requests[0]["path"] == "/custom/v1/chat/completions"


# --- Ray: the reward actor as an actor, and the vLLM judge's timeouts with a fake engine -------------
@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    # Classes defined in this test module travel by value: Ray workers cannot import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


class FakeEngine:
    def __init__(self, reply: str, sleep_s: float = 0.0) -> None:
        self.reply, self.sleep_s, self.calls = reply, sleep_s, 0

    def generate(self, prompts: list[str], temperature: float, max_tokens: int) -> list[str]:
        self.calls += 1
        time.sleep(self.sleep_s)
        return [self.reply] * len(prompts)

    def num_calls(self) -> int:
        return self.calls


class SlowStartEngine(FakeEngine):
    """An engine whose model takes `load_s` to load (`ready` answers after it), or fails to load."""

    def __init__(self, load_s: float, fail: bool = False) -> None:
        super().__init__("1")
        if fail:
            raise RuntimeError("out of memory loading the judge model")
        self.load_s = load_s

    def ready(self) -> bool:
        time.sleep(self.load_s)
        return True


def test_reward_actor_in_ray(ray_local) -> None:
    handle = ray_local.remote(num_cpus=1)(RewardActor).remote(rule_cfg())
    out = ray_local.get(handle.score.remote([r[0] for r in TABLE], [r[1] for r in TABLE]), timeout=60)
    check_table(out)


def test_vllm_judge_with_fake_engine(ray_local) -> None:
    engine = ray_local.remote(num_cpus=0)(FakeEngine).remote("0")
    cfg = asdict(RewardConfig(judge="vllm", judge_timeout_s=10.0))
    out = RewardActor(cfg, judge_actor=engine).score([GOOD, GARBAGE, WRONG], [2, 1, 2])
    assert out["consistency"] == [-1, 0, -1] and out["reward"] == [1.0, 0.0, 0.5] and out["judge_failures"] == 0


def test_vllm_judge_timeout(ray_local) -> None:
    engine = ray_local.remote(num_cpus=0)(FakeEngine).remote("1", sleep_s=0.6)
    assert ray_local.get(engine.num_calls.remote(), timeout=60) == 0  # started, so the first call runs
    judge = VLLMJudge(
        RewardConfig(judge="vllm", judge_timeout_s=0.2, judge_retries=1), RayJudgeClient(engine), backoff_s=0.01
    )
    res = judge.judge([GOOD, GARBAGE, GOOD])
    assert res.values == [0, 0, 0] and res.failures == 2 and res.skipped == 1
    # The first call was running and finishes unread; the queued retry was cancelled or also ran.
    assert 1 <= ray_local.get(engine.num_calls.remote(), timeout=10) <= 2


def test_a_vllm_judge_is_waited_for_at_start_up(ray_local) -> None:
    cfg = asdict(RewardConfig(judge="vllm", judge_model="judge-7b"))
    loaded = ray_local.remote(num_cpus=0)(SlowStartEngine).remote(0.2)
    assert RewardActor(cfg, judge_actor=loaded).ready(30.0)
    slow = ray_local.remote(num_cpus=0)(SlowStartEngine).remote(30.0)
    start = time.monotonic()
    with pytest.raises(UserError) as err:
        RewardActor(cfg, judge_actor=slow).ready(1.0)
    assert time.monotonic() - start < 10 and "\n" not in str(err.value)
    assert "the vllm judge 'judge-7b' did not answer within 1 s" in str(err.value)
    ray_local.kill(slow)
    dead = ray_local.remote(num_cpus=0)(SlowStartEngine).remote(0.0, fail=True)
    with pytest.raises(UserError) as err:
        RewardActor(cfg, judge_actor=dead).ready(30.0)
    message = str(err.value)
    assert "the vllm judge 'judge-7b' failed to start" in message and "out of memory" in message
    assert "\n" not in message


def test_the_reward_group_stops_start_up_naming_a_judge_that_never_answers(ray_local) -> None:
    """The group's wait: a real reward actor in Ray probing an endpoint that accepts and never answers."""
    from r1reward.config.schema import TimeoutsConfig
    from r1reward.reward.group import RewardGroup

    silent = JudgeServer(lambda n: None)
    url = silent.url
    cfg = RewardConfig(judge="openai", judge_url=url, judge_model="judge-x", judge_timeout_s=0.5)
    actor = ray_local.remote(num_cpus=0)(RewardActor).remote(asdict(cfg))
    group = RewardGroup(actor, None, TimeoutsConfig(startup_s=2.0), cfg)
    try:
        start = time.monotonic()
        with pytest.raises(UserError) as err:
            group.wait_ready()
        assert 2.0 <= time.monotonic() - start < 20
        message = str(err.value)
        assert "\n" not in message and message.startswith("reward start-up: ")
        assert f"the openai judge 'judge-x' at {url}/chat/completions did not answer within 2 s" in message
    finally:
        group.close()
        silent.close()


@pytest.mark.slow
def test_vllm_judge_with_tiny_model(ray_local, tiny_model_dir) -> None:
    engine = actor_mod.make_judge_actor_class(num_cpus=1).remote(str(tiny_model_dir), dtype="float32")
    ray_local.get(engine.ready.remote(), timeout=600)
    texts = [GOOD, INCONSISTENT, GARBAGE, WRONG]
    res = VLLMJudge(RewardConfig(judge="vllm", judge_timeout_s=120), RayJudgeClient(engine)).judge(texts)
    assert set(res.values) <= {-1, 0, 1} and res.values[2] == 0 and res.skipped == 1 and res.failures == 0
    assert res.invalid == sum(v == 0 for k, v in enumerate(res.values) if k != 2)  # a random model: 0s are invalid
    res = VLLMJudge(
        RewardConfig(judge="vllm", judge_timeout_s=0.001, judge_retries=1), RayJudgeClient(engine), backoff_s=0.01
    ).judge(texts)
    assert res.values == [0, 0, 0, 0] and res.failures == 3
