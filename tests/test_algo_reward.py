"""The R1-Reward rule reward (paper §4.3) and the model-free consistency judge."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1reward.algo.reward import (
    RewardParts,
    combine,
    format_reward,
    parse_answer,
    parse_choice_lenient,
    result_reward,
    rule_consistency,
    score_generation,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a</think><answer>1</answer>", 1.0),
        ("  \n<think>multi\nline</think><answer>2</answer>\n ", 1.0),
        ("<think>a</think> <answer>1</answer>", 0.0),  # nothing may sit between the blocks
        ("<think>a</think><answer>1</answer> trailing", 0.0),
        ("<think>a<think>b</think><answer>1</answer>", 0.0),  # two <think>
        ("<think>a</think><answer>1</answer><answer>2</answer>", 0.0),  # two <answer>
        ("<answer>1</answer>", 0.0),
        ("<think>a</think>", 0.0),
    ],
)
def test_format_reward(text, expected):
    assert format_reward(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>1</answer>", 1),
        ("<answer> 2 \n</answer>", 2),
        ("<answer>1</answer> then <answer>2</answer>", 2),  # the last one counts
        ("<answer>3</answer>", None),
        ("<answer>Response 1</answer>", None),
        ("<answer></answer>", None),
        ("Response 1 is better.", None),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>2</answer>", 2),
        ("<answer>1.0</answer>", 1),  # the released script compares float(answer) == 1
        ("<answer>1</answer> <answer>2</answer>", 1),  # re.search: the first tag
        ("<answer>Response 1</answer>", None),  # released: counted as "2"; the caller decides
        ("I think response 2 is better than 1", 1),  # no tag: the last 1 or 2 in the text
        ("Response 2 wins", 2),
        ("no digits here", None),
    ],
)
def test_parse_choice_lenient(text, expected):
    assert parse_choice_lenient(text) == expected


# (format, result, consistency) -> reward = result * (1 + 0.5 * consistency) + 0.5 * format
REWARD_TABLE = {
    (0, 0, -1): 0.0, (0, 0, 0): 0.0, (0, 0, 1): 0.0,
    (1, 0, -1): 0.5, (1, 0, 0): 0.5, (1, 0, 1): 0.5,
    (0, 1, -1): 0.5, (0, 1, 0): 1.0, (0, 1, 1): 1.5,
    (1, 1, -1): 1.0, (1, 1, 0): 1.5, (1, 1, 1): 2.0,
}  # fmt: skip


@pytest.mark.parametrize("fmt, result, consistency", sorted(REWARD_TABLE))
def test_reward_table(fmt, result, consistency):
    expected = REWARD_TABLE[(fmt, result, consistency)]
    assert combine(result, fmt, consistency) == expected
    # and end to end: a text with that format and result, scored with the judge's verdict
    choice = 1 if result else 2
    text = f"<think>analysis</think><answer>{choice}</answer>" if fmt else f"analysis <answer>{choice}</answer>"
    parts = score_generation(text, 1, consistency)
    assert parts == RewardParts(expected, float(fmt), float(result), consistency, parse_failed=False)


def test_parse_failure_is_zero_result_and_flagged():
    parts = score_generation("<think>a</think><answer>maybe</answer>", 1, 1)
    assert parts.result == 0.0 and parts.parse_failed and parts.error is None
    assert parts.reward == 0.5  # format is still right
    assert result_reward("<think>a</think><answer>maybe</answer>", 1) == 0.0
    assert result_reward("<answer>2</answer>", 2) == 1.0


@pytest.mark.parametrize(
    "text, label, consistency",
    [
        ("<think>a</think><answer>1</answer>", 1, 5),  # bad consistency
        ("<think>a</think><answer>1</answer>", 3, 1),  # bad label
        (None, 1, 1),  # not a string
    ],
)
def test_exceptions_never_give_a_positive_reward(text, label, consistency):
    parts = score_generation(text, label, consistency)
    assert parts.reward == 0.0 and parts.error is not None and parts.parse_failed


def test_labels_from_the_released_data_and_default_rule_judge():
    text = "<think>Overall, Response 2 is better.</think><answer>2</answer>"
    assert score_generation(text, "<answer>2</answer>").reward == 2.0  # consistency from the rule judge
    assert score_generation(text, "2").consistency == 1
    assert score_generation(text, 1).reward == 0.5


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("<>/thinkanswer12 R.\n")), max_size=80), st.sampled_from([1, 2]))
def test_score_is_bounded_and_positive_only_for_format_or_result(text, label):
    parts = score_generation(text, label)
    assert parts.error is None
    assert 0.0 <= parts.reward <= 2.0
    if parts.reward > 0:
        assert parts.format == 1.0 or parts.result == 1.0


def _judge(conclusion: str, answer: str = "1") -> int:
    return rule_consistency(f"<think>The question asks about the image.\n{conclusion}</think><answer>{answer}</answer>")


@pytest.mark.parametrize(
    "conclusion, expected",
    [
        ("Response 1 is better.", 1),
        ("response 2 is more accurate.", -1),
        ("I prefer Response 2.", -1),
        ("The first response is clearly superior.", 1),
        ("The second response wins.", -1),
        ("**Response 1** is the better answer.", 1),
        ("Response 2 is better than Response 1.", -1),
        ("Response 1 is worse than Response 2.", -1),
        ("Compared to Response 2, Response 1 is more accurate.", 1),
        ("Response 1 is less accurate.", -1),
        ("Response 1 is less verbose and therefore preferable.", 1),
        ("The better response is Response 1.", 1),
        ("Response #2 should be chosen.", -1),
        ("I would choose Response 1 over Response 2.", 1),
        ("Response 1's description is more detailed.", 1),
        ("Response 1 is not better.", 0),  # negated: no preference stated
        ("I would not choose Response 1.", 0),
        ("Both responses are good.", 0),
        ("Which is better: Response 1 or Response 2?", 0),  # a question concludes nothing
        ("Response 1 is better and Response 2 is better.", 0),  # contradicts itself
    ],
)
def test_rule_consistency_phrasings(conclusion, expected):
    assert _judge(conclusion) == expected


def test_rule_consistency_follows_the_answer():
    assert _judge("Response 2 is better.", answer="2") == 1
    assert _judge("Response 1 is better.", answer="2") == -1


def test_rule_consistency_needs_think_and_a_parsed_answer():
    assert rule_consistency("Response 1 is better. <answer>1</answer>") == 0
    assert rule_consistency("<think>Response 1 is better.</think><answer>one</answer>") == 0
    assert rule_consistency("<think>Response 1 is better.</think>") == 0


def test_rule_consistency_reads_only_the_conclusion():
    # An early preference outside the last three lines does not count ...
    early = "<think>Response 2 is better at colours.\nx\ny\nz\nBoth are fine.</think><answer>1</answer>"
    assert rule_consistency(early) == 0
    # ... and a sentence with a conclusion marker beats a later aside.
    marked = "<think>Overall, Response 1 is better. Response 2 is more detailed, though.</think><answer>1</answer>"
    assert rule_consistency(marked) == 1
    unmarked = "<think>Response 1 is better. Response 2 is more detailed, though.</think><answer>1</answer>"
    assert rule_consistency(unmarked) == -1
