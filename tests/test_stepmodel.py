"""The step-time model's pure maths (r1reward/placement/stepmodel.py) and the split enumeration behind
`r1reward-launch --ratio auto`: no Ray, milliseconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from r1reward.config import load_config
from r1reward.errors import UserError
from r1reward.placement.remote import split, split_even
from r1reward.placement.stepmodel import (
    PHASES,
    Measurement,
    PhaseCost,
    Prediction,
    Split,
    StepModel,
    Workload,
    calibrate,
    candidate_splits,
    fastest,
    fit_affine,
    load_step_model,
    predict_splits,
    prompts_per_worker,
    samples_per_rank,
    useful_workers,
)

PAPER = "configs/paper-qwen2.5-vl-7b.yaml"
FOUR_BY_EIGHT = [{"GPU": 8.0, "CPU": 32.0}] * 4


def _model(latency: float = 0.0, per_unit: float = 1.0, tokens: float = 10.0) -> StepModel:
    return StepModel({p: PhaseCost(latency, per_unit) for p in PHASES}, tokens, sync_bytes=100.0)


@pytest.mark.parametrize("items,parts", [(8, 3), (16, 16), (5, 8), (256, 15), (7, 2)])
def test_the_work_splits_as_the_role_groups_split_it(items, parts):
    assert prompts_per_worker(items, parts) == [len(c) for c in split_even(list(range(items)), parts)]
    assert samples_per_rank(items, parts) == [len(c) for c in split(list(range(items)), parts)]


def test_a_prediction_is_the_sum_of_the_busiest_actors_phases_with_idle_fractions():
    model = StepModel(
        {
            "prepare": PhaseCost(0.0, 0.5),  # per prompt
            "generate": PhaseCost(1.0, 0.01),  # per generated token on the busiest worker
            "reward": PhaseCost(0.0, 0.1),  # per sample
            "logprobs": PhaseCost(0.0, 0.2),  # per sample on the busiest rank
            "train": PhaseCost(0.5, 0.4),  # per sample-epoch on the busiest rank
            "sync": PhaseCost(2.0, 0.0),
        },
        response_tokens=100.0,
    )
    # 5 prompts x 2 samples = 10 samples; 2 workers get 3 and 2 prompts; 4 ranks get 3, 3, 3, 1 samples.
    p = model.predict(Workload(5, 2, 100.0, epochs_per_rollout=2), Split(2, 4))
    assert p.phases == pytest.approx(
        {
            "prepare": 2.5,
            "generate": 1 + 0.01 * 600,
            "reward": 1.0,
            "logprobs": 0.6,
            "train": 0.5 + 0.4 * 6,
            "sync": 2.0,
        }
    )
    assert p.step_s == pytest.approx(2.5 + 7 + 1 + 0.6 + 2.9 + 2)
    rollout_busy = (7 + (1 + 0.01 * 400)) / 2  # the worker with 2 prompts is busy for less
    learner_busy = (3 * (0.6 + 2.9) + (0.2 + 0.5 + 0.8)) / 4
    assert p.idle_rollout == pytest.approx(1 - rollout_busy / p.step_s)
    assert p.idle_learner == pytest.approx(1 - learner_busy / p.step_s)


def test_the_scaling_law_more_ranks_shrink_only_the_learner_phases_more_workers_only_generate():
    model, work = _model(latency=0.0), Workload(16, 1, 10.0)
    one = model.predict(work, Split(1, 1))
    ranks = model.predict(work, Split(1, 4))
    workers = model.predict(work, Split(4, 1))
    assert ranks.phases["logprobs"] == pytest.approx(one.phases["logprobs"] / 4)
    assert ranks.phases["train"] == pytest.approx(one.phases["train"] / 4)
    assert workers.phases["generate"] == pytest.approx(one.phases["generate"] / 4)
    for name in ("prepare", "reward", "sync"):
        assert ranks.phases[name] == workers.phases[name] == one.phases[name]
    # The latency does not shrink: with it the gain of 4x the ranks is less than 4x.
    slow = _model(latency=5.0)
    assert slow.predict(work, Split(1, 4)).phases["train"] > slow.predict(work, Split(1, 1)).phases["train"] / 4


def test_an_actor_without_work_is_idle_and_costs_nothing():
    p = _model(latency=1.0).predict(Workload(2, 1, 10.0), Split(4, 1))  # two of four workers get no prompt
    assert p.phases["generate"] == pytest.approx(1 + 10)
    assert p.idle_rollout == pytest.approx(1 - (2 * 11 / 4) / p.step_s)


def test_fit_affine_recovers_a_line_and_falls_back_without_two_sizes():
    assert fit_affine([(4, 3.0), (8, 5.0), (16, 9.0)]) == PhaseCost(pytest.approx(1.0), pytest.approx(0.5))
    assert fit_affine([(4, 2.0), (4, 2.2)]) == PhaseCost(0.0, pytest.approx(0.525))  # one size: throughput only
    assert fit_affine([(4, 2.0), (8, 1.9)]) == PhaseCost(pytest.approx(1.95), 0.0)  # no growth: latency only
    fitted = fit_affine([(4, 1.0), (8, 3.0)])  # a negative intercept: through the origin instead
    assert fitted.latency_s == 0.0 and fitted.seconds_per_unit == pytest.approx((4 + 24) / (16 + 64))
    assert fit_affine([]) == PhaseCost()


def test_calibrate_recovers_the_model_that_made_the_measurements():
    truth = StepModel(
        {p: PhaseCost(0.1 * (i + 1), 0.01 * (i + 1)) for i, p in enumerate(PHASES)}, 20.0, sync_bytes=1000.0
    )
    measurements = []
    for prompts in (8, 16):
        work = Workload(prompts, 1, 20.0, 1, 1000.0)
        p = truth.predict(work, Split(1, 2))
        measurements.append(Measurement(work, Split(1, 2), p.phases, p.step_s))
    model = calibrate(measurements)
    for name in PHASES:
        if name == "sync":  # one size of bytes: the sync is all throughput
            assert model.costs[name].seconds_per_unit == pytest.approx(truth.costs[name].time(1000.0) / 1000.0)
        else:
            assert model.costs[name] == PhaseCost(
                pytest.approx(truth.costs[name].latency_s), pytest.approx(truth.costs[name].seconds_per_unit)
            )
    other = Workload(12, 2, 20.0, 2, 1000.0)  # another workload and split: predicted as the truth
    assert model.predict(other, Split(3, 4)).step_s == pytest.approx(truth.predict(other, Split(3, 4)).step_s)


def test_a_target_config_caps_the_profiled_response_length():
    model = _model(tokens=300.0)
    assert model.workload(8, 2, 1, max_new_tokens=128).response_tokens == 128
    assert model.workload(8, 2, 1, max_new_tokens=1024).response_tokens == 300


def test_the_profile_round_trips_and_bad_files_are_one_line(tmp_path):
    model = _model(latency=0.25, per_unit=0.5)
    model.model_path = "some/model"
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(model.to_dict()))
    assert load_step_model(path) == model
    with pytest.raises(UserError, match="profile file not found"):
        load_step_model(tmp_path / "missing.json")
    for bad in ("{not json", json.dumps({"phases": {}}), json.dumps([1, 2])):
        path.write_text(bad)
        with pytest.raises(UserError, match="not a profile") as info:
            load_step_model(path)
        assert "\n" not in str(info.value)


def test_useful_workers_drops_workers_that_would_not_shorten_generation():
    assert useful_workers(16, 12) == 8  # 12 workers: 2 prompts on the busiest, as with 8
    assert useful_workers(256, 30) == 29
    assert useful_workers(8, 8) == 8 and useful_workers(3, 8) == 3 and useful_workers(5, 1) == 1


def test_candidate_splits_of_the_paper_config_on_four_nodes_of_eight():
    config = load_config(PAPER)  # 256 prompts; train batch 128 in micro-batches of 2; one judge GPU
    splits = candidate_splits(config, FOUR_BY_EIGHT)
    # A learner count must divide 128 / 2 (config validation); the rollout takes the other GPUs (31 less
    # the learners), cut to the workers that get prompts (256 over 30 workers: 9 each, as over 29).
    assert splits == [Split(29, 1), Split(29, 2), Split(26, 4), Split(22, 8), Split(15, 16)]
    assert all(s.learner_ranks in (1, 2, 4, 8, 16) for s in splits)


def test_the_fastest_split_and_its_tie_rule():
    config = load_config(PAPER)
    # Learner-heavy work (train costs 100x generation): more learner GPUs win.
    model = StepModel({p: PhaseCost(0.0, 1.0 if p in ("train", "logprobs") else 0.01) for p in PHASES}, 100.0)
    predictions, best = predict_splits(config, FOUR_BY_EIGHT, model)
    assert best.split == Split(15, 16) and best.step_s == min(p.step_s for p in predictions)
    # Ties (within 1%) go to fewer devices, then to fewer learner devices.
    tied = [Prediction(Split(w, r), {}, 10.0 + 0.05 * i, 0.0, 0.0) for i, (w, r) in enumerate([(4, 4), (5, 2), (3, 4)])]
    assert fastest(tied, lambda s: (s.rollout_workers + s.learner_ranks, s.learner_ranks)).split == Split(5, 2)
    tied.append(Prediction(Split(9, 9), {}, 9.0, 0.0, 0.0))  # clearly faster, though larger
    assert fastest(tied, lambda s: (s.rollout_workers + s.learner_ranks, s.learner_ranks)).split == Split(9, 9)


def test_predictions_for_a_cpu_config_divide_its_cpus():
    config = load_config("configs/tiny-cpu.yaml")  # no GPUs: the split is of CPUs (8 prompts, train batch 8 by 2)
    splits = candidate_splits(config, [{"GPU": 0.0, "CPU": 8.0}])
    # 8 CPUs less 1 for the reward actor; learner counts 1, 2, 4 divide 8 / 2; 8 prompts over 5 workers
    # load the busiest with 2, as over 4.
    assert splits == [Split(4, 1), Split(4, 2), Split(3, 4)]


def _launch(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from r1reward.launch.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, env=env)


def test_launch_ratio_auto_prints_the_splits_and_uses_the_fastest(tmp_path):
    model = StepModel({p: PhaseCost(0.1, 1.0 if p in ("train", "logprobs") else 0.01) for p in PHASES}, 100.0)
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps(model.to_dict()))
    proc = _launch("--nodes", "4", "--ratio", "auto", "--profile", str(profile), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rollout", "learner"])
    rows = [line.split() for line in lines[header + 1 : header + 6]]
    assert [(r[-12], r[-11]) for r in rows] == [("29", "1"), ("29", "2"), ("26", "4"), ("22", "8"), ("15", "16")]
    chosen = [r for r in rows if r[0] == "*"]
    assert len(chosen) == 1 and chosen[0][1:3] == ["15", "16"]
    assert all(0 <= float(x) <= 1 for r in rows for x in r[-2:])  # idle fractions
    assert "rollout.num_workers=15 learner.num_ranks=16" in proc.stdout  # the command trains the chosen split


@pytest.mark.parametrize(
    "args,message",
    [
        (("--ratio", "auto"), "--ratio auto needs --profile FILE"),
        (("--ratio", "auto", "--profile", "/nonexistent/profile.json"), "profile file not found"),
        (("--ratio", "1:1", "--profile", "x.json"), "--profile is read with --ratio auto only"),
    ],
)
def test_launch_ratio_auto_errors_are_one_line(args, message):
    proc = _launch("--nodes", "4", "--dry-run", *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr


def test_profile_reads_each_shape_of_a_run_from_its_metrics_leaving_out_each_warm_up(tmp_path):
    from r1reward.trainer.profile import BATCH_KEY, SAMPLES_KEY, measurements_of

    config = load_config("configs/tiny-cpu.yaml")  # 1 rollout worker, 2 learner ranks
    rows = []
    for step in range(1, 9):  # cycling 8x1, 16x1; step 1 and 2 are the warm-ups, 10x slower
        prompts = 8 if step % 2 else 16
        slow = 10.0 if step <= 2 else 1.0
        times = {
            f"time/{k}": slow * v
            for k, v in dict(
                prepare=0.01, generate=0.3, reward=0.002, experience=0.05, train=0.02 * prompts, sync=0.03
            ).items()
        }
        rows.append({"step": step, BATCH_KEY: prompts, SAMPLES_KEY: 1, "response_length/mean": 60.0 + step, **times})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    small, large = measurements_of(tmp_path, config, sync_bytes=1e6)
    assert small.steps == [3, 5, 7] and large.steps == [4, 6, 8]
    assert (small.workload.prompts, large.workload.prompts) == (8, 16) and small.split == Split(1, 2)
    assert small.workload.response_tokens == pytest.approx(65.0) and small.workload.sync_bytes == 1e6
    assert small.phases["logprobs"] == pytest.approx(0.05) and large.phases["train"] == pytest.approx(0.32)
    assert small.step_s == pytest.approx(0.01 + 0.3 + 0.002 + 0.05 + 0.16 + 0.03)
    model = calibrate([small, large])  # train: 0.16 s for 4 samples per rank, 0.32 s for 8: no latency
    assert model.costs["train"] == PhaseCost(pytest.approx(0.0, abs=1e-9), pytest.approx(0.04))


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "3"], "--steps must be at least 4"),
        (["--batch-multipliers", "1", "1"], "--batch-multipliers must be distinct"),
        (["--batch-multipliers", "0", "2"], "--batch-multipliers must be distinct positive"),
    ],
)
def test_profile_arguments_that_cannot_profile_stop_in_one_line_before_anything_starts(args, message, capsys):
    from r1reward.cli import main

    assert main(["profile", "--config", "configs/tiny-cpu.yaml", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
