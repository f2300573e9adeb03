"""Cold-start SFT on the DeepSpeed learner ranks (real Ray and DeepSpeed), then vLLM samples from it:
the loss falls and the format rate rises over the untrained model."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=6, include_dashboard=False)
    yield
    ray.shutdown()


def test_sft_on_learner_ranks_teaches_the_format(ray_session, tiny_model_dir, tmp_path):
    from r1reward.config import load_config
    from r1reward.data.synthetic import make_synthetic_data
    from r1reward.trainer.hard_examples import records_of, sample_choices
    from r1reward.trainer.metrics import read_metrics
    from r1reward.trainer.sft import SFTTrainer

    train = make_synthetic_data(tmp_path / "train", num=64, seed=3)
    heldout = make_synthetic_data(tmp_path / "heldout", num=8, seed=4)
    config = load_config(
        "configs/tiny-cpu.yaml",
        [
            f"model.path={tiny_model_dir}",
            f"sft.data_path={train['sft']}",
            f"sft.output_dir={tmp_path / 'sft'}",
            "sft.num_epochs=10",
            "sft.save_every=40",
            "rollout.max_new_tokens=64",
        ],
    )
    result = SFTTrainer(config).run()

    losses = [row["sft_loss"] for row in read_metrics(tmp_path / "sft" / "metrics.jsonl")]
    assert len(losses) == 80  # 64 examples x 10 epochs / 8 per step
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert (tmp_path / "sft" / "checkpoints" / "step_40" / "trainer_state.json").is_file()

    records = records_of(heldout["pairs"], "canonical", config)
    labels = [r.label for r in records]
    before = sample_choices(str(tiny_model_dir), records, config, k=2).scores(labels)
    after = sample_choices(result["hf"], records, config, k=2).scores(labels)
    assert before["format_rate"] == 0.0
    assert after["format_rate"] >= 0.5
