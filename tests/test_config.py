"""Typed config: defaults run, files and overrides merge, bad keys and types fail with their name."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1reward.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_and_shipped_configs_validate():
    assert load_config().algo.policy_loss == "stable_reinforce"
    tiny = load_config(CONFIGS / "tiny-cpu.yaml")
    assert tiny.learner.num_ranks == 2 and tiny.reward.judge == "rule"
    paper = load_config(CONFIGS / "paper-qwen2.5-vl-7b.yaml")
    assert paper.model.path == "Qwen/Qwen2.5-VL-7B-Instruct" and paper.learner.zero_stage == 3


def test_overrides_win_over_the_file():
    cfg = load_config(CONFIGS / "tiny-cpu.yaml", ["trainer.num_steps=7", "algo.advantage_filter=none"])
    assert cfg.trainer.num_steps == 7 and cfg.algo.advantage_filter == "none"


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("rollout:\n  temprature: 1.0\n", "unknown key 'rollout.temprature'"),
        ("nonsense: 1\n", "unknown key 'nonsense'"),
        ("rollout:\n  temperature: hot\n", "bad value for 'rollout.temperature'"),
        ("algo:\n  advantage_filter: sometimes\n", "'algo.advantage_filter' is 'sometimes'"),
        (
            "algo:\n  old_logprobs: cached\n",
            "'algo.old_logprobs' is 'cached', expected one of ['auto', 'learner', 'sampler']",
        ),
        ("learner:\n  num_ranks: 0\n", "'learner.num_ranks' must be > 0"),
        ("reward:\n  judge: openai\n", "needs 'reward.judge_url'"),
        ("algo:\n  rollout_correction: clip\n", "'algo.rollout_correction' is 'clip', expected one of the registered"),
        ("algo:\n  rollout_correction_cap: 0.5\n", "'algo.rollout_correction_cap' must be >= 1"),
        ("trainer:\n  max_staleness: -1\n", "'trainer.max_staleness' must be >= 0"),
    ],
)
def test_bad_file_names_key_and_file(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_bad_override_names_the_command_line():
    with pytest.raises(ConfigError, match=r"command line: unknown key 'trainer\.stepz'"):
        load_config(None, ["trainer.stepz=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["trainer.num_steps"])


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("no/such/config.yaml")


@pytest.mark.parametrize("key", ["data.eval_path", "data.eval_schema", "trainer.log_every"])
def test_keys_that_nothing_reads_do_not_exist(key):
    # A knob that does nothing would be taken for one that works: such keys are unknown.
    with pytest.raises(ConfigError, match=rf"unknown key '{key}'"):
        load_config(None, [f"{key}=1"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["algo.old_logprobs=sampler", "algo.rollout_correction=tis"],
            "algo.rollout_correction=tis with algo.old_logprobs=sampler",
        ),
        (
            ["algo.old_logprobs=sampler", "algo.rollout_correction=mask_sequence"],
            "importance weight pi_prox / pi_behav is 1",
        ),
        (
            ["reward.judge=vllm", "reward.judge_model=m", "reward.w_consistency=0"],
            "reward.w_consistency=0 gives the vllm judge's verdict no weight",
        ),
    ],
)
def test_combinations_that_silently_cancel_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value) and "\n" not in str(err.value)
    # Each setting alone is fine.
    for setting in overrides:
        load_config(None, [setting, *(["reward.judge_model=m"] if setting == "reward.judge=vllm" else [])])


@pytest.mark.parametrize(
    "overrides, resolved",
    [
        ([], "sampler"),  # float32 on both sides, synchronous: the measured gap is a rounding error
        (["trainer.max_staleness=1"], "learner"),  # the proximal policy of samples generated ahead
        (["model.dtype=bfloat16"], "learner"),  # no gap measured for other dtypes
        (["rollout.dtype=bfloat16"], "learner"),
        (["algo.rollout_correction=tis"], "learner"),  # the correction needs the learner's own log-probs
        (["algo.old_logprobs=learner"], "learner"),  # a setting given is kept
        (["algo.old_logprobs=sampler", "trainer.max_staleness=1"], "sampler"),
    ],
)
def test_the_ratio_takes_the_samplers_logprobs_by_default_only_where_the_two_agree(overrides, resolved):
    assert load_config(CONFIGS / "tiny-cpu.yaml", overrides).algo.old_logprobs == resolved
    # What ran is what config.json records: the resolved setting, which validates again as it is.
    from r1reward.config import validate

    config = load_config(CONFIGS / "tiny-cpu.yaml", overrides)
    validate(config)
    assert config.algo.old_logprobs == resolved


def test_the_7b_configs_recompute_the_old_logprobs_on_the_learner():
    for name in ("paper-qwen2.5-vl-7b.yaml", "released-qwen2.5-vl-7b.yaml"):
        assert load_config(CONFIGS / name).algo.old_logprobs == "learner", name


def test_colocate_is_refused_at_start_up_in_one_line():
    # No colocated weight path exists (no CUDA IPC, no vLLM sleep/wake): refuse before any actor starts.
    with pytest.raises(ConfigError) as err:
        load_config(None, ["resources.colocate=true"])
    assert str(err.value).startswith("defaults: resources.colocate=true is not supported yet")
    assert "\n" not in str(err.value) and "resources.colocate=false" in str(err.value)
    assert not load_config(None, ["resources.colocate=false"]).resources.colocate
