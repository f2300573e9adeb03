"""End to end on the CPU: real Ray, vLLM, DeepSpeed and the tiny Qwen2.5-VL; no mocks.

One short run is shared by the tests: one rollout worker, two learner ranks, two steps, with a KL
penalty to a frozen reference (algo.kl_coef=0.001, the released script's value). Resuming from a
checkpoint is tested against an uninterrupted run in tests/test_faults.py.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest

from helpers import fixed_sample, probe_prompts

pytestmark = pytest.mark.slow


def _config(model_dir, synthetic_dir, output_dir):
    from r1reward.config import load_config

    return load_config(
        "configs/tiny-cpu.yaml",
        [
            f"model.path={model_dir}",
            f"data.train_path={synthetic_dir / 'train.parquet'}",
            f"trainer.output_dir={output_dir}",
            "trainer.num_steps=2",
            "trainer.save_every=1",
            # 8 prompts of up to 64 tokens: room for the SFT-primed format, and rewards that vary, so the
            # first update moves the policy away from the reference.
            "trainer.rollout_batch_size=8",
            "learner.train_batch_size=4",
            "learner.micro_batch_size=2",
            "rollout.max_new_tokens=64",
            "algo.kl_coef=0.001",
            "algo.kl_estimator=k1",
            # Not 1: the learner must score the tempered distribution the sampler drew from.
            "rollout.temperature=0.7",
            # The learner recomputes the old log-probs, so that the sampler/learner gap below is measured.
            "algo.old_logprobs=learner",
        ],
    )


def _probe(trainer, prompts):
    import ray

    return ray.get(trainer.rollout.workers[0].generate.remote(prompts, seeds=[11, 12]), timeout=600)


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(ray_session, sft_model_dir, synthetic_dir, tmp_path_factory):
    import ray

    from r1reward.trainer.driver import Trainer

    output_dir = tmp_path_factory.mktemp("run")
    trainer = Trainer(_config(sft_model_dir, synthetic_dir, output_dir))
    try:
        trainer.setup()
        prompts = probe_prompts(trainer)
        sample = fixed_sample(trainer)
        before = _probe(trainer, prompts)
        logprobs_before = ray.get([rank.compute_logprobs.remote([sample]) for rank in trainer.learners.ranks])
        result = trainer.fit()
        after = _probe(trainer, prompts)
        logprobs_after = ray.get([rank.compute_logprobs.remote([sample]) for rank in trainer.learners.ranks])
        yield {
            "trainer": trainer,
            "result": result,
            "before": before,
            "after": after,
            "logprobs_before": logprobs_before,
            "logprobs_after": logprobs_after,
            "prompts": prompts,
            "output_dir": output_dir,
        }
    finally:
        trainer.shutdown()


def _tokens_and_logprobs(results):
    return [(g["token_ids"], g["logprobs"]) for r in results for g in r["generations"]]


def _max_gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) > 0
    return max(abs(x - y) for x, y in zip(a, b))


def test_every_logged_metric_is_finite(trained):
    from r1reward.trainer.metrics import read_metrics

    assert trained["result"]["step"] == 2
    rows = read_metrics(trained["output_dir"] / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        bad = {k: v for k, v in row.items() if not math.isfinite(v)}
        assert not bad, bad
        for key in (
            "reward/mean",
            "reward/format_rate",
            "loss",
            "clip_frac",
            "filter/filtered_frac",
            "logprob_gap/max",
            "kl/mean",
            "time/generate",
            "time/train",
            "time/sync",
            "response_length/mean",
        ):
            assert key in row
        # fp32 on both sides and the same M-RoPE positions (the learner passes mm_token_type_ids), so
        # the sampler's and the learner's log-probs agree on every token, image-dependent ones included.
        # Without the token types the gap reached several nats on tokens after the image.
        assert row["logprob_gap/max"] < 1e-3, row["logprob_gap/max"]
        # Each part of the update (the slowest rank's) fits in the rank's call, which fits in the train phase.
        parts = [row[f"time/update/{part}_max"] for part in ("forward", "backward", "optimizer")]
        assert 0 < min(parts) and max(parts) <= row["time/update/total_max"] <= row["time/train"], row
    assert (trained["output_dir"] / "tensorboard").is_dir()
    # The SFT-primed model earns rewards, so the update has a signal to follow.
    assert max(r["reward/mean"] for r in rows) > 0 and max(r["reward/format_rate"] for r in rows) > 0


def test_the_gap_bound_fails_when_the_learner_ignores_the_temperature(trained):
    """The sampler's log-probs of the final weights' samples (temperature 0.7), scored again in this process
    from the final checkpoint: with the rollout's temperature and banned tokens they agree, at temperature 1
    (the learner's old behaviour) they do not."""
    import torch
    from transformers import AutoModelForImageTextToText

    from r1reward.data.collate import collate_for_learner
    from r1reward.learner.loss import SamplingParams, token_logprobs
    from r1reward.trainer.experience import prepare_prompt

    trainer = trained["trainer"]
    cfg = trainer.config
    model = AutoModelForImageTextToText.from_pretrained(trained["output_dir"] / "checkpoints" / "step_2" / "hf")
    samples, sampler = [], []
    for i, result in enumerate(trained["after"]):
        prompt = prepare_prompt(trainer.processor, trainer.dataset[i], cfg.data.min_pixels, cfg.data.max_pixels)
        for generation in result["generations"]:
            samples.append(
                {
                    **{k: prompt[k] for k in ("prompt_ids", "pixel_values", "image_grid_thw")},
                    "completion_ids": generation["token_ids"],
                }
            )
            sampler.append(generation["logprobs"])
    batch = collate_for_learner(samples, model.config.text_config.pad_token_id or 0)
    mm = (model.config.image_token_id, model.config.video_token_id)
    banned = tuple(getattr(model.config, f"{n}_token_id") for n in ("vision_start", "vision_end", "image", "video"))

    def gap(sampling: SamplingParams) -> float:
        with torch.no_grad():
            logp = token_logprobs(model, batch, mm, "cpu", sampling=sampling)
        rows = [logp[i][batch.action_mask[i]].tolist() for i in range(len(samples))]
        return max(_max_gap(row, want) for row, want in zip(rows, sampler))

    assert cfg.rollout.temperature == 0.7
    assert gap(SamplingParams(0.7, banned)) < 1e-3
    assert gap(SamplingParams(1.0, ())) > 1e-2


def test_kl_to_the_reference_is_zero_at_step_1_and_grows_after_an_update(trained):
    from r1reward.trainer.metrics import read_metrics

    rows = read_metrics(trained["output_dir"] / "metrics.jsonl")
    # Step 1 samples from the initial weights, which are the reference: KL 0 up to float noise.
    # By step 2 the policy has had an update, so its log-probs differ from the reference's.
    assert abs(rows[0]["kl/mean"]) < 1e-5, rows
    assert rows[0]["filter/std"] > 0, rows  # the rewards varied: the first update had a signal
    assert abs(rows[1]["kl/mean"]) > 1e-6, rows


def test_reference_stays_fixed_while_the_policy_moves(trained):
    for before, after in zip(trained["logprobs_before"], trained["logprobs_after"]):  # every rank holds one
        assert set(before) == {"old_logprobs", "ref_logprobs"}
        (ref_before,), (ref_after,) = before["ref_logprobs"], after["ref_logprobs"]
        (policy_before,), (policy_after,) = before["old_logprobs"], after["old_logprobs"]
        assert _max_gap(policy_before, ref_before) < 1e-5  # the reference is the initial model
        assert _max_gap(ref_before, ref_after) < 1e-6  # frozen: two optimizer steps did not touch it
        assert _max_gap(policy_before, policy_after) > 1e-4  # the policy did move
        assert _max_gap(policy_after, ref_after) > 1e-4


def test_synced_worker_equals_fresh_engine_from_checkpoint_and_not_the_base(trained):
    import ray

    from r1reward.rollout.worker import RolloutWorker

    trainer, output_dir = trained["trainer"], trained["output_dir"]
    checkpoint = output_dir / "checkpoints" / "step_2" / "hf"
    cfg = trainer.config
    fresh = ray.remote(num_cpus=0)(RolloutWorker).remote(
        str(checkpoint), asdict(cfg.rollout), (cfg.data.min_pixels, cfg.data.max_pixels)
    )
    try:
        from_checkpoint = ray.get(fresh.generate.remote(trained["prompts"], seeds=[11, 12]), timeout=600)
    finally:
        ray.kill(fresh)
    assert _tokens_and_logprobs(trained["after"]) == _tokens_and_logprobs(from_checkpoint)
    assert _tokens_and_logprobs(trained["before"]) != _tokens_and_logprobs(trained["after"])


def test_a_checkpoint_loaded_into_the_running_worker_generates_as_that_checkpoint(trained, sft_model_dir):
    """RolloutGroup.load_checkpoint (the pipeline scores several stages on one engine): the base model
    loaded in place gives the samples from before training, the step_2 checkpoint those from after."""
    trainer = trained["trainer"]
    trainer.rollout.load_checkpoint(str(sft_model_dir))
    assert _tokens_and_logprobs(_probe(trainer, trained["prompts"])) == _tokens_and_logprobs(trained["before"])
    trainer.rollout.load_checkpoint(str(trained["output_dir"] / "checkpoints" / "step_2" / "hf"))
    assert _tokens_and_logprobs(_probe(trainer, trained["prompts"])) == _tokens_and_logprobs(trained["after"])


def test_a_corrupted_sync_is_refused_whole_and_the_worker_keeps_its_weights(trained):
    """A sync whose first bucket arrives overwritten fails with one line, nothing of it reaches the
    engine (which samples exactly as before), and the next sync goes through."""
    import ray

    trainer = trained["trainer"]
    worker = trainer.rollout.workers[0]
    ray.get(worker.__ray_call__.remote(lambda w: w.llm.collective_rpc("r1reward_debug_corrupt_next_update")))
    with pytest.raises(Exception, match="weight sync corrupted") as refused:
        trainer.learners.push_weights()
    assert _tokens_and_logprobs(_probe(trainer, trained["prompts"])) == _tokens_and_logprobs(trained["after"])
    assert "bucket 1 of" in str(refused.value) and "nothing was loaded" in str(refused.value)
    trainer.learners.push_weights()
    assert _tokens_and_logprobs(_probe(trainer, trained["prompts"])) == _tokens_and_logprobs(trained["after"])


def test_checkpoint_loads_in_transformers(trained):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    hf = trained["output_dir"] / "checkpoints" / "step_2" / "hf"
    model = AutoModelForImageTextToText.from_pretrained(hf)
    AutoProcessor.from_pretrained(hf)
    state = json.loads((hf.parent / "trainer_state.json").read_text())
    assert state["step"] == 2 and type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_without_kl_no_reference_model_is_loaded(ray_session, sft_model_dir):
    import ray
    from vllm.utils.network_utils import get_open_port

    from r1reward.config import load_config
    from r1reward.learner.worker import LearnerRank

    cfg = load_config(
        "configs/tiny-cpu.yaml",
        [
            "learner.num_ranks=1",
            "learner.train_batch_size=2",
            "learner.micro_batch_size=2",
            "algo.old_logprobs=learner",
        ],
    )
    assert cfg.algo.kl_coef == 0
    learner = ray.remote(num_cpus=0)(LearnerRank).remote(
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


def test_a_dead_actor_ends_the_run_naming_the_checkpoint(trained):
    """Last in the module: it kills the shared run's rollout worker."""
    import ray

    from r1reward.errors import UserError

    trainer = trained["trainer"]
    ray.kill(trainer.rollout.workers[0])
    trainer.config.trainer.num_steps = 3
    with pytest.raises(UserError, match=r"training stopped at step 3: .*resume from .*step_2 with trainer.resume=true"):
        trainer.fit()
