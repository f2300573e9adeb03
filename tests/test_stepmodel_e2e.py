"""The step-time model against measured steps: real Ray, vLLM, DeepSpeed and the tiny Qwen2.5-VL, no mocks.

One profiling run (1 rollout worker, 2 learner ranks; one actor start-up) whose steps cycle through four
workloads: 8 and 16 prompts (the two `r1reward profile` calibrates from, as its default batch multipliers
1 and 2 do), then, held out, 24 prompts (beyond the calibrated sizes) and 8 prompts x 2 samples (vLLM
samples each prompt twice). The model calibrated on the first two predicts all four. Then
`r1reward-launch --ratio auto --dry-run --profile` reads that profile and proposes a split.

The bounds come from measurements on a 2-core machine shared with other jobs (docs/step-time-model.md,
"How well it predicts"): a step is under a second and phases jitter by tens of percent between steps,
so they are loose; the test prints the errors it measured. More samples per prompt get a looser bound:
vLLM prefills a prompt once for its n samples, which the model (generation cost per generated token)
does not see, so it over-predicts generation there (measured 4-26%).
"""

from __future__ import annotations

import json

import pytest

from r1reward.placement.stepmodel import Split, load_step_model, relative_error

pytestmark = pytest.mark.slow

MAX_RELATIVE_ERROR = 0.35  # calibration sizes and a larger batch
MAX_RELATIVE_ERROR_SAMPLES = 0.5  # 2 samples per prompt
SHAPES = [(8, 1), (16, 1), (24, 1), (8, 2)]  # (prompts, samples per prompt); the last two are held out
STEPS = 16  # 4 per shape: a warm-up and 3 measured


def _overrides(model_dir, synthetic_dir) -> list[str]:
    return [
        f"model.path={model_dir}",
        f"data.train_path={synthetic_dir / 'train.parquet'}",
        "trainer.rollout_batch_size=8",
        "learner.train_batch_size=8",
        "rollout.max_new_tokens=64",
    ]


@pytest.fixture(scope="module")
def profiled(tiny_model_dir, synthetic_dir, tmp_path_factory):
    from r1reward.config import load_config
    from r1reward.trainer.profile import profile_dict, profile_run, write_profile

    root = tmp_path_factory.mktemp("stepmodel")
    config = load_config("configs/tiny-cpu.yaml", _overrides(tiny_model_dir, synthetic_dir))
    measurements = profile_run(config, STEPS, root / "run", SHAPES)
    path = write_profile(profile_dict(config, measurements[:2], STEPS, root / "run"), root / "profile.json")
    yield {"profile": path, "measurements": measurements}
    import ray

    ray.shutdown()  # the run started a local Ray in this process


def test_the_profile_predicts_its_calibration_steps_and_a_held_out_workload(profiled):
    data = json.loads(profiled["profile"].read_text())
    model = load_step_model(profiled["profile"])
    for phase, key in (
        ("generate", "rollout_tokens_per_s_per_worker"),
        ("train", "learner_train_samples_per_s_per_rank"),
    ):
        rate = data["throughput"][key]
        # None: more work was not slower at the two calibrated sizes (a tiny model's vLLM decode step can
        # be latency-bound on one machine and not on another); the phase is then its latency alone.
        assert (rate is None and data["phases"][phase]["latency_s"] > 0) or rate > 0, (phase, data["phases"][phase])
    assert data["sync_bytes"] > 0 and data["calibrated_at"]["rollout_batch_sizes"] == [8, 16]
    errors, lines = {}, []
    for m, (prompts, n) in zip(profiled["measurements"], SHAPES):
        assert (m.workload.prompts, m.workload.samples_per_prompt) == (prompts, n) and len(m.steps) == 3
        predicted = model.predict(model.workload(prompts, n, 1, 64), Split(1, 2))
        errors[f"{prompts}x{n}"] = relative_error(predicted.step_s, m.step_s)
        lines.append(f"{prompts} prompts x {n}: predicted {predicted.step_s:.3f} s, measured {m.step_s:.3f} s")
    print("step-time model (calibrated on 8x1 and 16x1): " + "; ".join(lines))
    print(
        f"relative errors (bounds {MAX_RELATIVE_ERROR}, {MAX_RELATIVE_ERROR_SAMPLES} with 2 samples): "
        + ", ".join(f"{k} {v:.3f}" for k, v in errors.items())
    )
    bounds = {k: MAX_RELATIVE_ERROR_SAMPLES if k.endswith("x2") else MAX_RELATIVE_ERROR for k in errors}
    assert all(errors[k] <= bounds[k] for k in errors), (errors, bounds)
    # The model scales the held-out workload: twice the samples, a longer learner phase than 8x1's.
    base, held_out = (model.predict(model.workload(8, n, 1, 64), Split(1, 2)) for n in (1, 2))
    assert held_out.phases["train"] > base.phases["train"] and held_out.step_s > base.step_s


def test_launch_ratio_auto_proposes_a_split_from_the_profile(profiled, tiny_model_dir, synthetic_dir, capsys):
    from r1reward.launch.cli import main

    code = main(
        ["--nodes", "1", "--gpus-per-node", "0", "--cpus-per-node", "8", "--ratio", "auto"]
        + ["--profile", str(profiled["profile"]), "--dry-run", "--config", "configs/tiny-cpu.yaml"]
        + _overrides(tiny_model_dir, synthetic_dir)
    )
    out = capsys.readouterr().out
    assert code == 0, out
    chosen = next(line for line in out.splitlines() if line.startswith("chosen:")).split()
    workers, ranks = int(chosen[1]), int(chosen[4])
    assert f"rollout.num_workers={workers} learner.num_ranks={ranks}" in out
    assert sum(line.startswith("*") for line in out.splitlines()) == 1
