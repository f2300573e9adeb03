"""Checks only a GPU can make: learner log-probs in bf16, DeepSpeed ZeRO 2 and 3 over NCCL, NCCL weight sync.

Skipped (with the reason) where torch sees no CUDA; run them with `pytest -m gpu` on a GPU machine.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

pytestmark = pytest.mark.gpu


def _batch(processor, synthetic_dir, n: int = 4):
    from r1reward.data.collate import collate_for_learner
    from r1reward.learner.sft_local import sft_examples

    return collate_for_learner(sft_examples(processor, synthetic_dir / "sft.jsonl", 56 * 56, 28 * 28 * 64)[:n], 0)


def test_learner_logprobs_in_bf16_stay_close_to_fp32(sft_model_dir, synthetic_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    batch = {
        k: v.cuda() if torch.is_tensor(v) else v
        for k, v in _batch(AutoProcessor.from_pretrained(sft_model_dir), synthetic_dir).items()
    }
    logps = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForImageTextToText.from_pretrained(sft_model_dir, dtype=dtype).cuda().eval()
        with torch.no_grad():
            logits = model(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                pixel_values=batch.pixel_values.to(dtype),
                image_grid_thw=batch.image_grid_thw,
            ).logits
        logp = (
            torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch.input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        )
        logps[dtype] = logp[batch.action_mask]
    gap = (logps[torch.float32] - logps[torch.bfloat16]).abs()
    print(f"bf16 vs fp32 learner log-prob gap: mean {gap.mean():.4f}, max {gap.max():.4f} nats")
    assert torch.isfinite(gap).all() and gap.mean() < 0.1


@pytest.mark.parametrize("zero_stage", [2, 3], ids=["zero2", "zero3"])
def test_deepspeed_learner_trains_over_nccl(sft_model_dir, synthetic_dir, zero_stage):
    from transformers import AutoProcessor

    from r1reward.config import load_config
    from r1reward.learner.sft_local import sft_examples
    from r1reward.learner.worker import LearnerRank

    config = load_config(
        "configs/tiny-cpu.yaml",
        [
            f"model.path={sft_model_dir}",
            "learner.num_ranks=1",
            "learner.backend=nccl",
            "model.dtype=bfloat16",
            f"learner.zero_stage={zero_stage}",
        ],
    )
    learner = LearnerRank(
        0,
        1,
        "127.0.0.1",
        29533,
        str(sft_model_dir),
        asdict(config.model),
        asdict(config.learner),
        asdict(config.algo),
        4,
    )
    examples = sft_examples(
        AutoProcessor.from_pretrained(sft_model_dir), synthetic_dir / "sft.jsonl", 56 * 56, 28 * 28 * 64
    )
    first = learner.sft_train(examples[:8])["sft_loss"]
    for _ in range(3):
        last = learner.sft_train(examples[:8])["sft_loss"]
    assert torch.distributed.get_backend() == "nccl" and last < first


def test_nccl_weight_sync_matches_a_fresh_engine(sft_model_dir, synthetic_dir, tmp_path):
    vllm = pytest.importorskip("vllm")
    if "cpu" in getattr(vllm, "__file__", "") or not torch.cuda.is_available():
        pytest.skip("needs vLLM's CUDA build")
    import ray
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from vllm.utils.network_utils import get_open_port

    from r1reward.config.schema import RolloutConfig
    from r1reward.rollout.worker import RolloutWorker
    from r1reward.sync.backend import NCCL_BACKEND
    from r1reward.sync.transfer import RayRolloutClient, TrainableSource, connect_trainer

    ray.init(address="local", num_gpus=2, include_dashboard=False, ignore_reinit_error=True)
    cfg, pixels = asdict(RolloutConfig(kv_cache_memory_bytes=0, gpu_memory_utilization=0.2)), (56 * 56, 28 * 28 * 64)
    worker = ray.remote(num_gpus=0.4)(RolloutWorker).remote(str(sft_model_dir), cfg, pixels)
    model = AutoModelForImageTextToText.from_pretrained(sft_model_dir).cuda()
    with torch.no_grad():
        for p in model.model.language_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine = connect_trainer(
        RayRolloutClient([worker]), TrainableSource(model), 0, "127.0.0.1", get_open_port(), NCCL_BACKEND
    )
    engine.send_weights()
    model.save_pretrained(tmp_path)
    AutoProcessor.from_pretrained(sft_model_dir).save_pretrained(tmp_path)
    fresh = ray.remote(num_gpus=0.4)(RolloutWorker).remote(str(tmp_path), cfg, pixels)
    prompt = [
        {"prompt": "<|im_start|>user\nWhich response is better?<|im_end|>\n<|im_start|>assistant\n", "images": []}
    ]
    synced_out, fresh_out = ray.get(
        [worker.generate.remote(prompt, seeds=[3]), fresh.generate.remote(prompt, seeds=[3])]
    )
    assert synced_out[0]["generations"][0]["token_ids"] == fresh_out[0]["generations"][0]["token_ids"]
