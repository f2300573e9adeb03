"""The synthetic task's trace judge (`reward.judge: synthetic-trace`): the paper's consistency check made
exact for the toy's checkable chain. It rewards a trace whose claims follow its own caption and whose
conclusion and answer follow the claims, whatever the label; the label is the result reward's business."""

from __future__ import annotations

import random

import pytest

from helpers import synthetic_trace as _trace
from r1reward.algo.judges import SyntheticTraceJudge, make_judge
from r1reward.config import load_config
from r1reward.data.synthetic import make_example, reasoning_target, trace_picks


def test_every_cold_start_trace_is_consistent_whichever_response_is_right():
    rng = random.Random(5)
    texts, labels = [], []
    for i in range(60):
        _, example = make_example(rng, i)
        label = rng.choice([1, 2])
        texts.append(reasoning_target(example, label))
        labels.append(label)
    assert SyntheticTraceJudge().judge(texts).values == [1] * 60
    assert [trace_picks(t) for t in texts] == labels


@pytest.mark.parametrize(
    "text, verdict",
    [
        (_trace("a red circle", "blue", "does not match", "red", "matches", 2), 1),
        # read red, then says blue matches: the answer does not come from what it read
        (_trace("a red circle", "blue", "matches", "red", "does not match", 1), -1),
        # consistent claims, but concludes for the other response
        (_trace("a red circle", "blue", "does not match", "red", "matches", 1), -1),
        # both claimed to match: the claims pick nothing
        (_trace("a red circle", "red", "matches", "red", "matches", 1), -1),
        # a wrong reading, followed faithfully: consistent (the result reward judges the reading)
        (_trace("a blue circle", "blue", "matches", "red", "does not match", 1), 1),
        # the conclusion names 2, the answer 1
        (
            "<think>The image shows a red circle. Response 1 says blue, which does not match the image. "
            "Response 2 says red, which matches the image. Response 2 is better.</think><answer>1</answer>",
            -1,
        ),
        # no caption and no claims: the rule judge's verdict on the conclusion
        ("<think>Response 1 is better.</think><answer>1</answer>", 1),
        ("<think>Response 2 is better.</think><answer>1</answer>", -1),
        ("no tags at all", 0),
        # claims without a caption: nothing they could follow
        ("<think>Response 1 says red, which matches the image. Response 1 is better.</think><answer>1</answer>", -1),
    ],
)
def test_a_trace_is_consistent_only_when_caption_claims_conclusion_and_answer_agree(text, verdict):
    assert SyntheticTraceJudge().judge([text]).values == [verdict]


def test_the_trace_judge_is_a_configurable_judge_that_needs_no_model():
    config = load_config("configs/pipeline-tiny.yaml", ["reward.judge=synthetic-trace"])
    judge = make_judge(config.reward)
    assert isinstance(judge, SyntheticTraceJudge)
    judge.ready(0.0)  # nothing to wait for
