"""The synthetic set's cold-start teacher: unbiased it writes a trace for every pair; with a position
bias it keeps only its right traces (as the paper's SFT set keeps GPT-4o's right ones), which then lean
towards answer 1, while the RL and pair files stay the same examples."""

from __future__ import annotations

import pytest

from r1reward.config import load_config
from r1reward.config.load import ConfigError
from r1reward.data.jsonl import read_jsonl
from r1reward.data.synthetic import make_synthetic_data


def _labels(path) -> list[int]:
    return [row["label"] for row in read_jsonl(path)]


def test_a_biased_teacher_keeps_only_its_right_traces_and_leaves_the_pairs_alone(tmp_path):
    fair = make_synthetic_data(tmp_path / "fair", num=200, seed=3)
    biased = make_synthetic_data(tmp_path / "biased", num=200, seed=3, teacher_bias=0.6)

    assert _labels(fair["pairs"]) == _labels(biased["pairs"])  # same examples, same order
    assert (tmp_path / "fair" / "train.parquet").read_bytes() == (tmp_path / "biased" / "train.parquet").read_bytes()
    assert len(list(read_jsonl(fair["sft"]))) == 200

    pairs = {row["id"]: row for row in read_jsonl(biased["pairs"])}
    traces = list(read_jsonl(biased["sft"]))
    dropped = 200 - len(traces)
    twos = sum(label == 2 for label in _labels(biased["pairs"]))
    assert 0.4 * twos < dropped < 0.8 * twos  # about 60% of the pairs whose better response is 2
    assert all(pairs[t["id"]]["label"] == t["label"] for t in traces)  # every kept trace is right
    ones = sum(t["label"] == 1 for t in traces) / len(traces)
    assert ones > 0.6  # the kept traces lean towards answer 1


def test_teacher_bias_out_of_range_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"pipeline.teacher_bias' must be in \[0, 1\), got 1.0"):
        load_config("configs/pipeline-tiny.yaml", ["pipeline.teacher_bias=1.0"])


def test_a_larger_held_out_set_begins_with_the_smaller_ones_pairs(tmp_path):
    # benchmarks/rl_variants.py --heldout relies on it: a folder's own held-out pairs come first.
    from r1reward.trainer.pipeline import heldout_data_seed

    small = make_synthetic_data(tmp_path / "small", num=6, seed=heldout_data_seed(2))
    large = make_synthetic_data(tmp_path / "large", num=20, seed=heldout_data_seed(2))
    first = list(read_jsonl(large["pairs"]))[:6]
    assert first == list(read_jsonl(small["pairs"]))
    for row in first:
        image = row["images"][0]
        assert (tmp_path / "small" / image).read_bytes() == (tmp_path / "large" / image).read_bytes()
    assert heldout_data_seed(2) != 2 * 1000  # not the training pairs' stream
