"""The bench report's arithmetic (benchmarks/report.py): ratios, idle shares and the tables, on made-up results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "bench_report", Path(__file__).resolve().parents[1] / "benchmarks" / "report.py"
)
report = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(report)


def _engine(tokens_per_s: float) -> dict:
    return {"tokens_per_s": tokens_per_s, "prompts_per_s": tokens_per_s / 40, "mean_length": 40.0}


ROLLOUT = {
    "settings": {"max_new_tokens": 80, "temperature": 1.0, "top_p": 1.0, "repeats": 3, "step_batch": 16},
    "prompt_tokens_mean": 300.0,
    "engines": {
        "vllm_worker": {"1": _engine(100.0), "16": _engine(900.0)},
        "hf_generate": {"1": _engine(50.0), "16": _engine(300.0)},
    },
}
PHASES = {"prepare": 0.1, "generate": 1.0, "reward": 0.1, "experience": 0.3, "train": 0.4, "sync": 0.1}
END_TO_END = {
    "work": {
        "prompts_per_step": 8,
        "samples_per_prompt": 2,
        "optimizer_batch": 8,
        "max_new_tokens": 80,
        "timed_steps": 4,
    },
    "runs": [
        {
            "framework": "r1reward",
            "variant": "default",
            "samples_per_s": 8.0,
            "step_s": 2.0,
            "phases_s": PHASES,
            "response_length_mean": 40.0,
        },
        {
            "framework": "r1reward",
            "variant": "old_logprobs=sampler",
            "samples_per_s": 10.0,
            "step_s": 1.6,
            "phases_s": PHASES,
            "response_length_mean": 40.0,
        },
        {
            "framework": "trl",
            "variant": "hf_generate",
            "samples_per_s": 2.0,
            "step_s": 8.0,
            "response_length_mean": None,
        },
    ],
}
SYNC = {
    "shapes": {
        "small": {
            "tensors": 75,
            "bytes": 2**20,
            "buckets": 2,
            "seconds": {"raw_flat": 0.05, "r1reward": 0.1},
            "gbit_per_s": {"raw_flat": 0.17, "r1reward": 0.08},
            "fraction_of_raw": {"raw_flat": 1.0, "r1reward": 0.5},
        }
    }
}


def test_ratio_and_idle_shares():
    assert report.ratio(6.0, 2.0) == 3.0 and report.ratio(1.0, 0.0) == 0.0
    idle = report.idle_fractions(PHASES)
    assert idle["rollout workers"] == pytest.approx(1 - 1.0 / 2.0)
    assert idle["learner ranks"] == pytest.approx(1 - 0.8 / 2.0)
    assert idle["reward actor"] == pytest.approx(0.95)


def test_rollout_and_end_to_end_rows_carry_the_ratios():
    rows = report.rollout_rows(ROLLOUT)
    assert [r[0] for r in rows] == ["1", "16 (the step's)"]
    assert rows[1][3] == "3.00x" and rows[0][3] == "2.00x"
    e2e = report.end_to_end_rows(END_TO_END)
    assert e2e[0][0] == "r1reward (default)" and e2e[0][3] == "4.00x" and e2e[0][4] == "1.00x"
    assert e2e[1][3] == "5.00x" and e2e[1][4] == "1.25x"  # a speed-up's before/after
    assert e2e[2][0] == "trl (hf_generate)" and e2e[2][3] == "1.00x" and e2e[2][4] == ""


def test_sync_rows_put_the_trainer_sync_against_the_raw_limit_and_the_step():
    rows = report.sync_rows(SYNC, step_s=2.0, trainer_sync_s=0.1)
    trainer = rows[-1]
    assert trainer[1] == "r1reward train: time/sync"
    assert trainer[4] == "50%" and trainer[5] == "5.0%"


def test_render_writes_every_section_present_and_skips_the_rest():
    text = report.render(
        {"rollout": ROLLOUT, "end_to_end": END_TO_END, "weight_sync": SYNC}, "2 cores, CPU", "make bench"
    )
    for heading in ("## Rollout", "## End to end", "## Step breakdown", "## Weight sync"):
        assert heading in text
    assert "| 16 (the step's) | 900 | 300 | 3.00x |" in text
    assert "Measured by" not in text  # no invocation recorded in these results
    stamped = {**ROLLOUT, "made_by": "python -m benchmarks.run --only rollout (finished 2026-01-01 00:00 UTC)"}
    assert "Measured by `python -m benchmarks.run --only rollout" in report.render({"rollout": stamped}, "m", "c")
    only = report.render({"rollout": ROLLOUT}, "2 cores, CPU", "make bench")
    assert "## End to end" not in only and "## Step breakdown" not in only
