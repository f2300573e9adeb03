"""The consistency judge's prompts, verdict parsing and retries on replies without a verdict, with
fake judge callables (no server, no Ray)."""

from __future__ import annotations

import pytest

from r1reward.algo.judges import (
    JUDGE_PROMPTS,
    RELEASED_JUDGE_PROMPT,
    VLLMJudge,
    _ask,
    build_judge_prompt,
    judge_max_tokens,
    judge_view,
    parse_judge_output,
)
from r1reward.config.schema import RewardConfig

CONSISTENT = "<think>R1 misses the dog.\nR2 names both animals.\nSo Response 2 is better.</think><answer>2</answer>"
NO_TAGS = "first\n\nsecond\nthird\nfourth\n<answer>1</answer>"


def test_released_view_is_the_last_three_lines_before_the_answer_joined_with_semicolons():
    assert judge_view(CONSISTENT) == (
        "R1 misses the dog.;R2 names both animals.;So Response 2 is better.",
        "response 2 is better",
    )
    assert judge_view(NO_TAGS) == ("second;third;fourth", "response 1 is better")  # blank lines skipped
    prompt = build_judge_prompt(CONSISTENT)
    assert prompt.startswith(RELEASED_JUDGE_PROMPT.split("{")[0])
    for rule in ("same meaning", "ambiguous conclusion without a clear choice", "opposite", "both responses equally"):
        assert rule in prompt


def test_concise_view_keeps_lines_and_capitalised_answer():
    assert judge_view(CONSISTENT, prompt="concise") == (
        "R1 misses the dog.\nR2 names both animals.\nSo Response 2 is better.",
        "Response 2 is better",
    )


@pytest.mark.parametrize(
    "reply, value",
    [
        ("1", 1),
        ("0", -1),
        ("Output: 0", -1),
        ("'1'.", 1),
        ("<answer>0</answer>", -1),
        ("Rule 1 does not hold here, so: 0", -1),  # the last standalone digit is the verdict
        ("The reasoning picks response 2 and so does the answer.\n\n**1**", 1),
        ("10", None),
        ("0.5", None),
        ("v1", None),
        ("yes", None),
        ("", None),
        ("response 2", None),
    ],
)
def test_verdict_is_the_last_standalone_0_or_1(reply, value):
    assert parse_judge_output(reply) == value


def test_max_tokens_follow_the_prompt_unless_configured():
    assert judge_max_tokens(RewardConfig()) == 1024 == JUDGE_PROMPTS["released"].max_tokens
    assert judge_max_tokens(RewardConfig(judge_prompt="concise")) == 8
    assert judge_max_tokens(RewardConfig(judge_max_tokens=300)) == 300


def test_ask_retries_a_reply_without_a_verdict():
    replies = iter(["hmm, hard to say", "they agree: 1"])
    calls = []

    def judge() -> str:
        calls.append(1)
        return next(replies)

    assert _ask(judge, retries=3, backoff_s=0.0, what="fake") == (1, None) and len(calls) == 2
    assert _ask(lambda: "no idea", retries=2, backoff_s=0.0, what="fake") == (0, "invalid")

    def broken() -> str:
        raise ConnectionError("down")

    assert _ask(broken, retries=1, backoff_s=0.0, what="fake") == (0, "failed")


class ScriptedVLLMJudge(VLLMJudge):
    """The batched judge with its actor call replaced by scripted rounds of replies."""

    def __init__(self, rounds: list, retries: int = 2) -> None:
        super().__init__(
            RewardConfig(judge="vllm", judge_model="m", judge_retries=retries), judge_client=object(), backoff_s=0.0
        )
        self.rounds, self.asked = list(rounds), []

    def _request(self, prompts: list[str]) -> list[str]:
        self.asked.append(len(prompts))
        replies = self.rounds.pop(0)
        if isinstance(replies, Exception):
            raise replies
        return replies


def test_batched_judge_asks_again_only_for_invalid_replies():
    judge = ScriptedVLLMJudge([["I am not sure", "0", "1"], ["after all, 1"]])
    result = judge.judge([CONSISTENT, CONSISTENT, NO_TAGS, "no answer at all"])
    assert result.values == [1, -1, 1, 0] and judge.asked == [3, 1]
    assert (result.invalid, result.failures, result.skipped) == (0, 0, 1)


def test_batched_judge_that_never_answers_gives_zero_and_is_counted():
    judge = ScriptedVLLMJudge([TimeoutError("slow"), ["?", "1"], ["??"]], retries=2)
    result = judge.judge([CONSISTENT, NO_TAGS])
    assert result.values == [0, 1] and judge.asked == [2, 2, 1]
    assert (result.invalid, result.failures) == (1, 0)
    judge = ScriptedVLLMJudge([TimeoutError("slow")] * 2, retries=1)
    result = judge.judge([CONSISTENT])
    assert result.values == [0] and result.failures == 1 and judge.asked == [1, 1]
