"""The bench report's arithmetic (benchmarks/report.py): ratios, idle shares and the tables, on made-up results."""

from __future__ import annotations

import importlib
import importlib.util
import json
import statistics
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


# ---- the machine each result ran on, each ratio against its goal, the two steps side by side ----

ROOT = Path(__file__).resolve().parents[1]
MACHINE = {"cpu_capability": "AVX2", "cores": 2, "kernel_env": {}}
STALENESS = {
    "what": "median step time",
    "steps": 12,
    "repeats": 3,
    "pinned": True,
    "cores": {"rollout worker 0": [0], "learner rank 0": [1]},
    "speedup_eta1": 1.25,
    "goal_speedup": 1.1,
    "gain_s": 0.2,
    "spread_s": 0.08,
    "faster_beyond_spread": True,
    **{
        f"eta{eta}": {
            "median_step_s": step,
            "spread_s": 0.08,
            "repeat_median_step_s": [step - 0.04, step, step + 0.04],
            "median_generate_s": 0.3,
            "median_idle_rollout": 0.5,
            "median_idle_learner": 0.4,
        }
        for eta, step in ((0, 1.0), (1, 0.8))
    },
}


def _import_benchmark(name: str):
    """benchmarks.<name> as `make bench` runs it (from the repository root)."""
    import sys

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"benchmarks.{name}")


def test_every_result_make_bench_writes_is_stamped_with_the_machine_it_ran_on():
    import os

    import torch

    run = _import_benchmark("run")
    stamped = run.stamp(ROLLOUT, "python -m benchmarks.run --only rollout")
    assert stamped["engines"] == ROLLOUT["engines"]
    assert stamped["made_by"].startswith("python -m benchmarks.run --only rollout (finished ")
    assert stamped["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert stamped["machine"]["cores"] == os.cpu_count()
    section = report.render({"rollout": stamped}, "m", "c")
    assert stamped["machine"]["cpu_model"]
    m = stamped["machine"]
    assert f"Machine: torch CPU capability {m['cpu_capability']} ({m['cpu_model']}), {os.cpu_count()} cores." in section


@pytest.mark.parametrize("name", ["rollout", "weight_sync", "end_to_end", "staleness"])
def test_each_committed_bench_result_names_its_cpu_capability_and_cores(name):
    result = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
    machine = result.get("machine") or {}
    assert machine.get("cpu_capability") and machine.get("cores", 0) >= 1, (
        f"benchmarks/results/{name}.json has no machine: rerun it with python -m benchmarks.run --only {name}"
    )


def test_each_ratio_is_put_against_its_goal():
    e2e = {**END_TO_END, "runs": [*END_TO_END["runs"]]}
    small = {**SYNC["shapes"]["small"], "fraction_of_raw": {"raw_flat": 1.0, "r1reward": 0.4}}
    results = {
        "rollout": ROLLOUT,
        "end_to_end": e2e,
        "weight_sync": {"shapes": {"small": small, "7b": small}},
        "staleness": STALENESS,
    }
    goals = {g["what"].split(":")[0]: g for g in report.goal_rows(results)}
    assert goals["rollout"]["measured"] == pytest.approx(3.0) and goals["rollout"]["met"]  # 900 / 300 at batch 16
    assert goals["end to end"]["measured"] == pytest.approx(4.0) and goals["end to end"]["goal"] == 2.0
    assert goals["weight sync (small)"]["measured"] == 0.4 and not goals["weight sync (small)"]["met"]
    assert "weight sync (7b)" not in goals  # the bandwidth goal is set for the tiny and small models
    step_share = goals["weight sync"]  # at most 5% of the step is the goal
    assert step_share["measured"] == pytest.approx(PHASES["sync"] / sum(PHASES.values()))
    assert step_share["met"] and not step_share["higher_is_better"]
    assert goals["asynchronous rollout"]["goal"] == 1.1 and goals["asynchronous rollout"]["met"]
    text = report.render(results, "m", "c")
    assert "## Against the goals" in text
    assert "| weight sync (small): verified sync / raw broadcast, bandwidth | 40.0% | ≥ 50.0% | **no** |" in text


def test_the_plot_draws_every_panel_with_its_goal(tmp_path):
    results = {"rollout": ROLLOUT, "end_to_end": END_TO_END, "weight_sync": SYNC, "staleness": STALENESS}
    titles = report.plot(results, tmp_path / "bench.png")
    assert titles == [
        "against the goals",
        "rollout",
        "end to end",
        "weight sync (gloo)",
        "asynchronous rollout, pinned cores",
    ]
    assert (tmp_path / "bench.png").stat().st_size > 10_000


def test_the_step_breakdown_puts_both_systems_side_by_side_and_bounds_the_ratio_by_the_update():
    ours = {
        "framework": "r1reward",
        "variant": "default",
        "samples_per_s": 4.0,
        "step_s": 4.0,
        "phases_s": {"prepare": 0.1, "generate": 1.0, "reward": 0.1, "experience": 0.0, "train": 2.6, "sync": 0.2},
        "update_s": {"forward": 0.8, "backward": 1.2, "optimizer": 0.3, "total": 2.4},
    }
    trl = {
        "framework": "trl",
        "variant": "hf_generate",
        "samples_per_s": 1.6,
        "step_s": 10.0,
        "phases_s": {
            "prepare": 0.2,
            "generate": 4.0,
            "reward": 0.1,
            "experience": 1.0,
            "forward": 1.5,
            "backward": 2.5,
            "optimizer": 0.2,
            "other": 0.5,
        },
    }
    e2e = {"work": END_TO_END["work"], "runs": [ours, trl]}
    rows = {row[0]: row[1:] for row in report.breakdown_rows(ours, trl)}
    assert rows["update: backward"] == [1.2, 2.5]
    assert rows["update: rest of the rank's call (collation, votes)"][0] == pytest.approx(0.1)
    assert rows["train call around the update (Ray, serialisation)"] == [pytest.approx(0.2), ""]
    assert rows["weight sync"] == [0.2, ""] and rows["other (data loading, collation, logging)"] == ["", 0.5]
    assert rows["step"] == [pytest.approx(4.0), pytest.approx(10.0)]
    learner = {**ours, "variant": "learner_logprobs", "logprob_gap_max": 1.6e-05}
    section = report.end_to_end_section({**e2e, "runs": [ours, learner, trl]})
    assert "Largest gap between the sampler's and the learner's log-probs" in section and "1.6e-05 nats" in section
    bound = report.update_bound(e2e)
    assert bound["update_s"] == pytest.approx(2.3) and bound["trl_update_s"] == pytest.approx(4.2)
    assert bound["max_ratio"] == pytest.approx(10.0 / 2.3)
    assert "could not pass **4.35x**" in report.breakdown_section(e2e)


def test_staleness_verdict_needs_the_gain_to_beat_the_larger_spread():
    staleness = _import_benchmark("staleness")
    eta0 = staleness.summarise(
        [
            {"median_step_s": s, "median_generate_s": 0.3, "median_idle_rollout": 0.5, "median_idle_learner": 0.4}
            for s in (1.0, 1.1, 0.95)
        ]
    )
    assert eta0["median_step_s"] == 1.0 and eta0["spread_s"] == pytest.approx(0.15)
    fast = staleness.summarise([{**r, "median_step_s": s} for r, s in zip(eta0["runs"], (0.8, 0.82, 0.79))])
    verdict = staleness.verdict(eta0, fast)
    assert verdict["faster_beyond_spread"] and verdict["gain_s"] == pytest.approx(0.2)
    assert verdict["goal_speedup"] == pytest.approx((0.8 + 0.15) / 0.8)
    close = staleness.summarise([{**r, "median_step_s": s} for r, s in zip(eta0["runs"], (0.9, 1.05, 0.92))])
    assert not staleness.verdict(eta0, close)["faster_beyond_spread"]
    text = report.staleness_section({**STALENESS, **staleness.verdict(eta0, close)})
    assert "**not** more than the larger spread" in text and "rollout worker 0: core 0" in text


def test_sync_shares_pair_each_variant_with_the_raw_broadcast_of_its_round():
    weight_sync = _import_benchmark("weight_sync")
    # The last rounds ran at half speed (a neighbour on the shared cores); the variant's slow stretch
    # began one round before the raw broadcast's. In four rounds of five it took 1.6x the raw's time.
    timings = {"raw_flat": [1.0, 1.0, 1.0, 2.0, 2.0], "r1reward": [1.6, 1.6, 3.2, 3.2, 3.2]}
    shares = weight_sync.shares_of_raw(timings)
    assert shares["raw_flat"] == 1.0
    assert shares["r1reward"] == pytest.approx(1 / 1.6)
    # The ratio of the medians would have set the slow stretch's variant against a fast raw broadcast.
    assert statistics.median(timings["raw_flat"]) / statistics.median(timings["r1reward"]) == pytest.approx(1 / 3.2)
