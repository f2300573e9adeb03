"""The output-format helpers that the rule reward, the judges and evaluation share."""

from __future__ import annotations

import pytest

from r1reward.algo.tags import answer_texts, first_answer_text, is_well_formed, text_before_answer, think_text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a</think><answer>1</answer>", True),
        ("  <think>a\nb</think><answer>2</answer>\n", True),  # surrounding whitespace is allowed
        ("<think>a</think> <answer>1</answer>", False),  # nothing between the two parts
        ("<think>a<think>b</think><answer>1</answer>", False),  # one opening tag of each
        ("<think>a</think><answer>1</answer><answer>2</answer>", False),
        ("<answer>1</answer>", False),
    ],
)
def test_is_well_formed(text, expected):
    assert is_well_formed(text) is expected


def test_think_text_is_the_first_block_or_none():
    assert think_text("x<think> one </think><think>two</think>") == " one "
    assert think_text("<think></think><answer>1</answer>") == ""  # empty reasoning is not "absent"
    assert think_text("no tags") is None


def test_answers_in_order_and_the_first():
    text = "<answer> 1 </answer> then <answer>2</answer>"
    assert answer_texts(text) == [" 1 ", "2"]
    assert first_answer_text(text) == " 1 "
    assert answer_texts("none") == [] and first_answer_text("none") is None


def test_text_before_answer_drops_the_tags():
    assert text_before_answer("<think>why\nso</think><answer>1</answer> later") == "why\nso"
    assert text_before_answer("plain reasoning") == "plain reasoning"
