"""End to end on the CPU: real Ray, vLLM, DeepSpeed and the tiny Qwen2.5-VL; no mocks.

One short run (one rollout worker, two learner ranks, two steps) is shared by the tests; a second
trainer resumes from its checkpoint. A third runs asynchronously (trainer.max_staleness=1) in the same
Ray session and is compared with the first.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest

pytestmark = pytest.mark.slow


def _config(tiny_model_dir, synthetic_dir, output_dir, steps: int, resume: bool = False, extra: tuple = ()):
    from r1reward.config import load_config

    return load_config(
        "configs/tiny-cpu.yaml",
        [
            f"model.path={tiny_model_dir}",
            f"data.train_path={synthetic_dir / 'train.parquet'}",
            f"trainer.output_dir={output_dir}",
            f"trainer.num_steps={steps}",
            "trainer.save_every=1",
            "trainer.rollout_batch_size=4",
            "learner.train_batch_size=4",
            "learner.micro_batch_size=2",
            "rollout.max_new_tokens=64",
            f"trainer.resume={str(resume).lower()}",
            *extra,
        ],
    )


def _probe(trainer, prompts):
    import ray

    return ray.get(trainer.rollout.workers[0].generate.remote(prompts, seeds=[11, 12]))


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=8, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def trained(ray_session, sft_model_dir, synthetic_dir, tmp_path_factory):
    from r1reward.trainer.driver import Trainer
    from r1reward.trainer.experience import prepare_prompt

    output_dir = tmp_path_factory.mktemp("run")
    trainer = Trainer(_config(sft_model_dir, synthetic_dir, output_dir, steps=2))
    trainer.setup()
    cfg = trainer.config
    prompts = [
        {"prompt": p["prompt"], "images": p["images"]}
        for p in (
            prepare_prompt(trainer.processor, trainer.dataset[i], cfg.data.min_pixels, cfg.data.max_pixels)
            for i in range(2)
        )
    ]
    before = _probe(trainer, prompts)
    result = trainer.fit()
    after = _probe(trainer, prompts)
    trainer.shutdown()
    yield {
        "trainer": trainer,
        "result": result,
        "before": before,
        "after": after,
        "prompts": prompts,
        "output_dir": output_dir,
    }


def _tokens_and_logprobs(results):
    return [(g["token_ids"], g["logprobs"]) for r in results for g in r["generations"]]


def test_every_logged_metric_is_finite(trained):
    from r1reward.trainer.metrics import read_metrics

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
    assert (trained["output_dir"] / "tensorboard").is_dir()
    # The SFT-primed model earns rewards, so the update has a signal to follow.
    assert max(r["reward/mean"] for r in rows) > 0 and max(r["reward/format_rate"] for r in rows) > 0


def test_synced_worker_equals_fresh_engine_from_checkpoint_and_not_the_base(trained):
    import ray

    from r1reward.rollout.worker import RolloutWorker

    trainer, output_dir = trained["trainer"], trained["output_dir"]
    checkpoint = output_dir / "checkpoints" / "step_2" / "hf"
    cfg = trainer.config
    fresh = ray.remote(num_cpus=1)(RolloutWorker).remote(
        str(checkpoint), asdict(cfg.rollout), (cfg.data.min_pixels, cfg.data.max_pixels)
    )
    from_checkpoint = ray.get(fresh.generate.remote(trained["prompts"], seeds=[11, 12]))
    ray.kill(fresh)
    assert _tokens_and_logprobs(trained["after"]) == _tokens_and_logprobs(from_checkpoint)
    assert _tokens_and_logprobs(trained["before"]) != _tokens_and_logprobs(trained["after"])


def test_checkpoint_loads_in_transformers(trained):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    hf = trained["output_dir"] / "checkpoints" / "step_2" / "hf"
    model = AutoModelForImageTextToText.from_pretrained(hf)
    AutoProcessor.from_pretrained(hf)
    state = json.loads((hf.parent / "trainer_state.json").read_text())
    assert state["step"] == 2 and type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"


def test_resume_continues_at_the_saved_step_and_a_dead_actor_ends_the_run(
    trained, sft_model_dir, synthetic_dir, capsys
):
    import ray

    from r1reward.errors import UserError
    from r1reward.trainer.driver import Trainer
    from r1reward.trainer.metrics import read_metrics

    output_dir = trained["output_dir"]
    trainer = Trainer(_config(sft_model_dir, synthetic_dir, output_dir, steps=3, resume=True))
    try:
        trainer.setup()
        result = trainer.fit()
        assert result["step"] == 3
        assert [r["step"] for r in read_metrics(output_dir / "metrics.jsonl")] == [1, 2, 3]
        out = capsys.readouterr().out
        assert "resumed from" in out and "step_2" in out
        assert "per-phase time of the last step" in out
        assert (output_dir / "checkpoints" / "step_3" / "trainer_state.json").is_file()

        # An actor that dies ends the run with its error and the checkpoint to resume from; no hang.
        ray.kill(trainer.rollout.workers[0])
        trainer.config.trainer.num_steps = 4
        with pytest.raises(
            UserError, match=r"training stopped at step 4: .*resume from .*step_3 with trainer.resume=true"
        ):
            trainer.fit()
    finally:
        trainer.shutdown()


@pytest.fixture(scope="module")
def trained_async(trained, sft_model_dir, synthetic_dir, tmp_path_factory):
    """Three steps with eta = 1, after the synchronous run (its Ray session, its config otherwise)."""
    from r1reward.trainer.driver import Trainer

    output_dir = tmp_path_factory.mktemp("run-async")
    trainer = Trainer(_config(sft_model_dir, synthetic_dir, output_dir, steps=3, extra=("trainer.max_staleness=1",)))
    try:
        trainer.setup()
        trainer.fit()
    finally:
        trainer.shutdown()
    return output_dir


def test_async_rollout_trains_on_samples_one_version_behind(trained, trained_async):
    from r1reward.trainer.metrics import read_metrics

    sync_first = read_metrics(trained["output_dir"] / "metrics.jsonl")[0]
    rows = read_metrics(trained_async / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    for row in rows:
        bad = {k: v for k, v in row.items() if not math.isfinite(v)}
        assert not bad, bad
        assert 0 <= row["idle/rollout"] <= 1 and 0 <= row["idle/learner"] <= 1
    # Step 1 has nothing generated ahead: the same samples, log-probs and update as the synchronous run,
    # to the bit, although the workers generate step 2 while the learners train on it.
    same = {k: v for k, v in sync_first.items() if not k.startswith(("time/", "idle/"))}
    assert {k: rows[0][k] for k in same} == same
    # Then every sample comes from the weights one update behind the learner (4 samples a step)...
    assert (rows[0]["staleness/0"], rows[0]["staleness/1"]) == (4, 0)
    for row in rows[1:]:
        assert (row["staleness/0"], row["staleness/1"], row["staleness/dropped"]) == (0, 4, 0)
    # ...which the log-probs show: the learner, one update ahead, no longer agrees with the sampler.
    assert rows[0]["logprob_gap/max"] < 1e-3
    assert all(r["logprob_gap/max"] > 10 * rows[0]["logprob_gap/max"] for r in rows[1:])
