"""ZeRO stage 3 end to end on the CPU: real Ray, vLLM, DeepSpeed (its CPU accelerator, gloo) and the
SFT-primed tiny Qwen2.5-VL; no mocks.

The paper trains with ZeRO-3, where every learner rank holds a shard of each parameter, so the
log-prob forward, the frozen KL reference, the weight sync (one gather per parameter), the checkpoint
and the HF export all go through DeepSpeed's gathers. One run of three steps with a KL penalty is
shared by the tests; a second run resumes from its step_2 checkpoint and must repeat its step 3.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict

import pytest

from helpers import fixed_sample, probe_prompts, weights_sha

pytestmark = pytest.mark.slow

STEPS, RESUME_FROM = 3, 2


def _config(model_dir, synthetic_dir, output_dir, *extra):
    from r1reward.config import load_config

    return load_config(
        "configs/tiny-cpu.yaml",
        [
            f"model.path={model_dir}",
            f"data.train_path={synthetic_dir / 'train.parquet'}",
            f"trainer.output_dir={output_dir}",
            "learner.zero_stage=3",
            f"trainer.num_steps={STEPS}",
            f"trainer.save_every={RESUME_FROM}",  # step_2, and step_3 as the last step
            # 8 prompts of up to 64 tokens: the SFT-primed model earns varied rewards, so updates move it.
            "trainer.rollout_batch_size=8",
            "learner.train_batch_size=4",
            "learner.micro_batch_size=2",
            "rollout.max_new_tokens=64",
            "algo.kl_coef=0.001",
            "algo.kl_estimator=k1",
            "rollout.temperature=0.7",
            "algo.old_logprobs=learner",  # the gap checks below need the learner's recomputed log-probs
            *extra,
        ],
    )


def _partitioning(rank) -> dict:
    """What DeepSpeed made of the rank's model: its ZeRO stage and how much of the policy it holds."""

    def probe(learner):
        params = list(learner.engine.module.parameters())
        return {
            "stage": learner.engine.zero_optimization_stage(),
            "full": sum(p.ds_numel for p in params),
            "local": sum(p.ds_tensor.numel() for p in params),
            "reference_stage": learner.reference.zero_optimization_stage(),
        }

    import ray

    return ray.get(rank.__ray_call__.remote(probe), timeout=120)


def _generate(worker, prompts):
    import ray

    return ray.get(worker.generate.remote(prompts, seeds=[11, 12]), timeout=600)


def _tokens_and_logprobs(results):
    return [(g["token_ids"], g["logprobs"]) for r in results for g in r["generations"]]


def _max_gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) > 0
    return max(abs(x - y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def runs(sft_model_dir, synthetic_dir, tmp_path_factory):
    """Run A (three steps, uninterrupted) probed before and after training; then run B, a copy of A's
    directory cut back to its step_2 checkpoint and resumed with trainer.resume=true."""
    import ray

    from r1reward.rollout.worker import RolloutWorker
    from r1reward.trainer.driver import Trainer

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    out: dict = {}
    try:
        a_dir = tmp_path_factory.mktemp("zero3-a")
        trainer = Trainer(_config(sft_model_dir, synthetic_dir, a_dir))
        try:
            trainer.setup()
            cfg = trainer.config
            out["partitioning"] = [_partitioning(rank) for rank in trainer.learners.ranks]
            prompts = probe_prompts(trainer)
            sample = fixed_sample(trainer)
            score = lambda: ray.get([r.compute_logprobs.remote([sample]) for r in trainer.learners.ranks])  # noqa: E731
            out["before"], out["logprobs_before"] = _generate(trainer.rollout.workers[0], prompts), score()
            out["result"] = trainer.fit()
            out["after"], out["logprobs_after"] = _generate(trainer.rollout.workers[0], prompts), score()
        finally:
            trainer.shutdown()
        # The exported step_3 model in a fresh vLLM engine: what the synced worker should equal.
        fresh = ray.remote(num_cpus=0)(RolloutWorker).remote(
            str(a_dir / "checkpoints" / f"step_{STEPS}" / "hf"),
            asdict(cfg.rollout),
            (cfg.data.min_pixels, cfg.data.max_pixels),
        )
        try:
            out["from_checkpoint"] = _generate(fresh, prompts)
        finally:
            ray.kill(fresh)

        b_dir = tmp_path_factory.mktemp("zero3-b")
        shutil.copytree(a_dir / "checkpoints" / f"step_{RESUME_FROM}", b_dir / "checkpoints" / f"step_{RESUME_FROM}")
        shutil.copy(a_dir / "metrics.jsonl", b_dir / "metrics.jsonl")  # B drops the rows after step_2
        resumed = Trainer(_config(sft_model_dir, synthetic_dir, b_dir, "trainer.resume=true"))
        out["resumed_result"] = resumed.run()
        out.update(a_dir=a_dir, b_dir=b_dir)
        yield out
    finally:
        ray.shutdown()


def _rows(directory):
    from r1reward.trainer.metrics import read_metrics

    return read_metrics(directory / "metrics.jsonl")


def test_the_learners_run_zero_stage_3_with_sharded_policy_and_reference(runs):
    for part in runs["partitioning"]:
        assert part["stage"] == 3 and part["reference_stage"] == 3, part
        assert part["local"] < part["full"], part  # each rank holds a shard, not the whole model


def test_rewards_vary_and_the_policy_moves_while_the_reference_stays(runs):
    rows = _rows(runs["a_dir"])
    assert runs["result"]["step"] == STEPS and [r["step"] for r in rows] == list(range(1, STEPS + 1))
    assert max(r["reward/mean"] for r in rows) > 0 and rows[0]["filter/std"] > 0, rows  # a signal to follow
    for before, after in zip(runs["logprobs_before"], runs["logprobs_after"]):  # every rank scores it
        (ref_before,), (ref_after,) = before["ref_logprobs"], after["ref_logprobs"]
        (policy_before,), (policy_after,) = before["old_logprobs"], after["old_logprobs"]
        assert _max_gap(policy_before, ref_before) < 1e-5  # the reference is the initial model
        assert _max_gap(ref_before, ref_after) < 1e-6  # frozen through the updates
        assert _max_gap(policy_before, policy_after) > 1e-4  # the updates changed the sharded weights
    # KL 0 while the policy is the reference, then not: the recomputed log-probs follow the updates.
    assert abs(rows[0]["kl/mean"]) < 1e-5 and abs(rows[-1]["kl/mean"]) > 1e-6, rows


def test_the_gathered_weights_reach_vllm_exactly(runs):
    """After each update the sampler's log-probs agree with the learner's recomputed ones, and the
    synced worker samples exactly as a fresh engine loading the exported step_3 checkpoint."""
    rows = _rows(runs["a_dir"])
    for row in rows[1:]:  # steps sampled from synced, updated weights
        assert row["logprob_gap/max"] < 1e-3, row["logprob_gap/max"]
    assert _tokens_and_logprobs(runs["after"]) == _tokens_and_logprobs(runs["from_checkpoint"])
    assert _tokens_and_logprobs(runs["before"]) != _tokens_and_logprobs(runs["after"])


def test_the_export_loads_in_transformers_with_the_trained_weights(runs, sft_model_dir):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    hf = runs["a_dir"] / "checkpoints" / f"step_{STEPS}" / "hf"
    model = AutoModelForImageTextToText.from_pretrained(hf)
    AutoProcessor.from_pretrained(hf)
    base = AutoModelForImageTextToText.from_pretrained(sft_model_dir)
    trained, initial = model.state_dict(), base.state_dict()
    assert trained.keys() == initial.keys()
    assert all(trained[k].shape == initial[k].shape for k in trained)  # whole tensors, not ZeRO-3 shards
    changed = [k for k in trained if not torch.equal(trained[k], initial[k])]
    assert changed and all(".visual." not in k for k in changed), changed  # the frozen tower stays


def test_a_resumed_run_repeats_the_uninterrupted_runs_next_step(runs):
    resumed, uninterrupted = _rows(runs["b_dir"]), _rows(runs["a_dir"])
    assert runs["resumed_result"]["step"] == STEPS
    assert [r["step"] for r in resumed] == list(range(1, STEPS + 1))
    # Exact, not within a tolerance: the same shards, optimizer state, seeds and order of operations.
    for key in ("reward/mean", "loss", "kl/mean", "logprob_gap/max", "response_length/mean", "grad_norm"):
        assert [r[key] for r in resumed] == [r[key] for r in uninterrupted], key
    last = f"step_{STEPS}"
    assert weights_sha(runs["b_dir"] / "checkpoints" / last) == weights_sha(runs["a_dir"] / "checkpoints" / last)
