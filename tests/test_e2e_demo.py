"""The README's first command as a user types it: `r1reward pipeline --config configs/pipeline-tiny.yaml`
from a checkout, with the config's relative output directory (the first-run bug hid behind absolute
temporary paths). Sized down with overrides so that CI can afford it; paths are untouched.

It runs under AVX2 kernels (`AVX2`) whatever this CPU offers: torch picks its kernels by CPU capability,
so the learning outcomes it bounds are those of the commonest machine, not only of the one it was
tuned on. An AVX2-only machine runs the same kernels natively.

It is also the suite's one end-to-end run of cold-start SFT on the DeepSpeed learner ranks followed by
vLLM sampling from the SFT checkpoint: the loss falls, checkpoints are written, and the format rate goes
from 0 to at least 0.9."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from r1reward.trainer.metrics import read_metrics

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
# `default` is no option: vLLM's inductor compile fails under it.
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
SMALLER = [
    "pipeline.seeds=[0]",
    "pipeline.num_train=96",
    "pipeline.num_heldout=16",
    "pipeline.warmup_steps=50",
    "pipeline.select_k=2",
    "sft.num_epochs=12",
    "sft.lr=3e-3",  # 144 steps: the faster rate learns the format (the demo's 1e-3 needs its 1024 steps)
    "trainer.num_steps=2",
    "trainer.rollout_batch_size=8",
    "learner.micro_batch_size=2",
    "learner.train_batch_size=16",  # the demo's two updates per rollout batch: 8 prompts x 4 samples
    "trainer.save_every=2",
    "algo.old_logprobs=learner",  # the sampler/learner gap below is measured by the learner's recomputation
]


def terminal_lines(text: str) -> list[str]:
    """Lines a person sees: a progress bar redraws itself with carriage returns, so keep the last frame."""
    return [line.split("\r")[-1] for line in text.split("\n") if line.split("\r")[-1].strip()]


def test_pipeline_as_typed_from_a_checkout(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "configs", checkout / "configs")
    command = [
        str(Path(sys.executable).with_name("r1reward")),
        "pipeline",
        "--config",
        "configs/pipeline-tiny.yaml",
        *SMALLER,
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "R1REWARD_VERBOSE")} | AVX2
    # Bytes, not text=True: universal newlines would turn each progress-bar redraw ("\r") into a line.
    run = subprocess.run(command, cwd=checkout, env=env, capture_output=True, timeout=1200)
    output = (run.stdout + run.stderr).decode(errors="replace")
    assert run.returncode == 0, output[-3000:]

    out = checkout / "runs" / "pipeline"  # the config's relative output directory, under the checkout
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["runs"][0]["stages"]
    assert list(stages) == ["base", "SFT", "SFT + RL"]
    assert stages["SFT"]["format_rate"] >= 0.9
    assert stages["base"]["format_rate"] == 0.0  # the format comes from SFT, not from the warm-up
    assert (out / "seed-0" / "data" / "hard.parquet").is_file()
    assert (out / "summary.md").read_text().count("| SFT + RL |") == 1
    assert (out / "training_curves.png").stat().st_size > 10_000
    assert (out / "logs" / "ray").is_dir()  # actor logs are kept, off the terminal

    sft_losses = [row["sft_loss"] for row in read_metrics(out / "seed-0" / "sft" / "metrics.jsonl")]
    assert sum(sft_losses[-5:]) / 5 < 0.5 * sum(sft_losses[:5]) / 5, sft_losses
    assert any((out / "seed-0" / "sft" / "checkpoints").glob("step_*/trainer_state.json"))
    rl_rows = read_metrics(out / "seed-0" / "rl" / "metrics.jsonl")
    assert [row["step"] for row in rl_rows] == [1, 2]
    for row in rl_rows:  # the sampler and the learner agree on the sampled tokens' log-probs
        assert row["logprob_gap/max"] < 1e-3 and abs(row["mismatch/kl_k3"]) < 1e-4, row
    # StableReinforce with two updates per rollout batch: the second is off-policy, so ratios leave 1.
    assert max(row["ratio_max"] for row in rl_rows) > 1.0, rl_rows
    stability = summary["runs"][0]["rl_stability"]
    assert stability["ratio_max"] > 1.0 and 0.0 <= stability["pre_clip_frac"] <= 1.0, stability
    assert "largest importance ratio" in (out / "summary.md").read_text()

    lines = terminal_lines(output)
    assert len(lines) < 200, "\n".join(lines[-50:])
    assert not any("loss=nan" in line or "reward=nan" in line for line in lines)
    assert not any("INFO" in line for line in lines), [line for line in lines if "INFO" in line][:5]
