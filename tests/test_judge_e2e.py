"""A judge that dies mid-run stops the run, end to end: real Ray, vLLM, DeepSpeed and the tiny model, and
an OpenAI-compatible judge that is a real HTTP server on 127.0.0.1. It answers the start-up request and
every request of step 1, then fails every request: the run stops at step 2 with one line naming the
judge, its failure rate and the step_1 checkpoint, and does not train on step 2's batch. (A judge that
never answers at start-up: tests/test_reward_actor.py, through the same reward group and actor.)"""

from __future__ import annotations

import re

import pytest

from helpers import JudgeServer

pytestmark = pytest.mark.slow


@pytest.fixture
def judge():
    """Answers "1" (a consistent verdict) while `healthy`, HTTP 500 after."""
    state = {"healthy": True}
    server = JudgeServer(lambda n: 200 if state["healthy"] else 500)
    server.state = state
    yield server
    server.close()


@pytest.fixture
def ray_session():
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_judge_that_dies_mid_run_stops_it_naming_the_judge_its_rate_and_the_checkpoint(
    ray_session, judge, sft_model_dir, synthetic_dir, tmp_path
):
    from r1reward.config import load_config
    from r1reward.trainer.checkpoint import complete_checkpoints
    from r1reward.trainer.driver import RunStopped, Trainer
    from r1reward.trainer.metrics import read_metrics

    out = tmp_path / "run"
    config = load_config(
        "configs/tiny-cpu.yaml",
        [
            f"model.path={sft_model_dir}",
            f"data.train_path={synthetic_dir / 'train.parquet'}",
            f"trainer.output_dir={out}",
            "trainer.num_steps=1",
            "trainer.save_every=1",
            "trainer.rollout_batch_size=4",
            "learner.train_batch_size=4",
            "learner.micro_batch_size=2",
            "reward.judge=openai",
            f"reward.judge_url={judge.url}",
            "reward.judge_model=judge-x",
            "reward.judge_retries=0",
            "reward.judge_failure_window=2",
            "timeouts.judge_request_s=5",
        ],
    )
    assert config.reward.max_judge_failure_rate == 0.1  # the default
    trainer = Trainer(config)
    try:
        trainer.setup()
        assert [b["max_tokens"] for b in judge.bodies] == [1]  # start-up waited for the judge's answer
        trainer.fit()  # step 1: the judge answers every request
        step_1 = len(judge.bodies) - 1
        assert step_1 > 0, "no generation of step 1 reached the judge: the test would prove nothing"
        judge.state["healthy"] = False
        trainer.config.trainer.num_steps = 3
        with pytest.raises(RunStopped) as err:
            trainer.fit()
    finally:
        trainer.shutdown()
    message = str(err.value)
    step_2 = len(judge.bodies) - 1 - step_1
    assert "\n" not in message and step_2 > 0, message
    # Of the generations judged in the window (steps 1 and 2), step 2's all failed: above 0.1.
    prefix = f"training stopped at step 2: the openai judge 'judge-x' at {judge.url}/chat/completions"
    assert message.startswith(prefix), message
    found = re.search(r"gave no verdict for (\d+) of (\d+) generations \((\d+)%\) in the last 2 steps", message)
    assert found and (int(found[1]), int(found[2])) == (step_2, step_1 + step_2), message
    assert f"({step_2} failed call" in message and "above reward.max_judge_failure_rate=0.1" in message
    assert message.endswith(f"resume from {out / 'checkpoints' / 'step_1'} with trainer.resume=true"), message
    # Step 2 was not trained on: nothing logged or saved after step 1.
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1] and rows[0]["reward/judge_failure_rate"] == 0.0
    assert [p.name for p in complete_checkpoints(out)] == ["step_1"]
