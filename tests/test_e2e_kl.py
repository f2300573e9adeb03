"""KL to a reference model, end to end on the CPU: real Ray, vLLM, DeepSpeed and the tiny Qwen2.5-VL.

A short run with algo.kl_coef=0.001 (the released script's value) trains, logs a finite `kl/mean`, and
its learners' frozen reference gives the same log-probs for a fixed sample before and after training
while the policy's move. A learner with kl_coef=0 loads no reference.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest

pytestmark = pytest.mark.slow


def _config(model_dir, synthetic_dir, output_dir, *extra: str):
    from r1reward.config import load_config

    return load_config(
        "configs/tiny-cpu.yaml",
        [
            f"model.path={model_dir}",
            f"data.train_path={synthetic_dir / 'train.parquet'}",
            f"trainer.output_dir={output_dir}",
            "trainer.num_steps=2",
            "trainer.save_every=2",
            # 8 prompts of up to 64 tokens: room for the SFT-primed format, and rewards that vary, so the
            # first update moves the policy away from the reference.
            "trainer.rollout_batch_size=8",
            "learner.train_batch_size=4",
            "learner.micro_batch_size=2",
            "rollout.max_new_tokens=64",
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=8, include_dashboard=False)
    yield
    ray.shutdown()


def _fixed_sample(trainer) -> dict:
    """A prompt from the data and a fixed completion: the same tokens are scored before and after."""
    from r1reward.trainer.experience import prepare_prompt

    cfg = trainer.config
    prompt = prepare_prompt(trainer.processor, trainer.dataset[0], cfg.data.min_pixels, cfg.data.max_pixels)
    completion = trainer.processor.tokenizer(
        "<think>The first response is right.</think><answer>1</answer>", add_special_tokens=False
    ).input_ids
    return {
        "prompt_ids": prompt["prompt_ids"],
        "completion_ids": completion,
        "pixel_values": prompt["pixel_values"],
        "image_grid_thw": prompt["image_grid_thw"],
    }


@pytest.fixture(scope="module")
def kl_run(ray_session, sft_model_dir, synthetic_dir, tmp_path_factory):
    import ray

    from r1reward.trainer.driver import Trainer

    output_dir = tmp_path_factory.mktemp("kl-run")
    trainer = Trainer(_config(sft_model_dir, synthetic_dir, output_dir, "algo.kl_coef=0.001", "algo.kl_estimator=k1"))
    try:
        trainer.setup()
        sample = _fixed_sample(trainer)
        before = ray.get([rank.compute_logprobs.remote([sample]) for rank in trainer.learners.ranks])
        result = trainer.fit()
        after = ray.get([rank.compute_logprobs.remote([sample]) for rank in trainer.learners.ranks])
    finally:
        trainer.shutdown()
    yield {"result": result, "before": before, "after": after, "output_dir": output_dir}


def _max_gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) > 0
    return max(abs(x - y) for x, y in zip(a, b))


def test_kl_run_trains_and_logs_a_finite_kl(kl_run):
    from r1reward.trainer.metrics import read_metrics

    assert kl_run["result"]["step"] == 2
    rows = read_metrics(kl_run["output_dir"] / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert "kl/mean" in row and math.isfinite(row["kl/mean"]) and math.isfinite(row["loss"])
    # Step 1 samples from the initial weights, which are the reference: KL 0 up to float noise.
    # By step 2 the policy has had an update, so its log-probs differ from the reference's.
    assert abs(rows[0]["kl/mean"]) < 1e-5, rows
    assert rows[0]["filter/std"] > 0, rows  # the rewards varied: the first update had a signal
    assert abs(rows[1]["kl/mean"]) > 1e-6, rows


def test_reference_stays_fixed_while_the_policy_moves(kl_run):
    for before, after in zip(kl_run["before"], kl_run["after"]):  # every learner rank holds a reference
        assert set(before) == {"old_logprobs", "ref_logprobs"}
        (ref_before,), (ref_after,) = before["ref_logprobs"], after["ref_logprobs"]
        (policy_before,), (policy_after,) = before["old_logprobs"], after["old_logprobs"]
        assert _max_gap(policy_before, ref_before) < 1e-5  # the reference is the initial model
        assert _max_gap(ref_before, ref_after) < 1e-6  # frozen: two optimizer steps did not touch it
        assert _max_gap(policy_before, policy_after) > 1e-4  # the policy did move
        assert _max_gap(policy_after, ref_after) > 1e-4


def test_without_kl_no_reference_model_is_loaded(ray_session, sft_model_dir):
    import ray
    from vllm.utils.network_utils import get_open_port

    from r1reward.config import load_config
    from r1reward.learner.worker import LearnerRank

    cfg = load_config(
        "configs/tiny-cpu.yaml", ["learner.num_ranks=1", "learner.train_batch_size=2", "learner.micro_batch_size=2"]
    )
    assert cfg.algo.kl_coef == 0
    learner = ray.remote(num_cpus=1)(LearnerRank).remote(
        0,
        1,
        "127.0.0.1",
        get_open_port(),
        str(sft_model_dir),
        asdict(cfg.model),
        asdict(cfg.learner),
        asdict(cfg.algo),
        1,
    )
    try:
        sample = {"prompt_ids": [1, 2, 3], "completion_ids": [4, 5]}
        out = ray.get(learner.compute_logprobs.remote([sample]), timeout=600)
        assert set(out) == {"old_logprobs"} and len(out["old_logprobs"][0]) == 2
    finally:
        ray.kill(learner)
