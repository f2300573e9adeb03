"""`r1reward pipeline` on real-layout files, end to end with real Ray, DeepSpeed, vLLM and the tiny model:
cold-start SFT on a canonical SFT file (what `r1reward annotate` writes), RL from the SFT checkpoint's
export on an R1-Reward RL parquet with a KL penalty (so a reference model is loaded), then a benchmark
in MM-RLHF-RewardBench's released layout (an image row per pair and a video row) under the released
protocol.

The first run is killed right after RL's first checkpoint, as a lost node would kill it; the second
resumes RL from that checkpoint without redoing SFT; the third finds everything done and changes no
file; a changed benchmark file then reruns only the evaluation. Nothing is written outside the
pipeline's folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import weights_sha, write_video
from r1reward.trainer.metrics import read_metrics

pytestmark = pytest.mark.slow
# Kills the pipeline's own process (SIGKILL: nothing to clean up after itself) once RL has saved step 1.
KILLED_AFTER_RL_STEP_1 = """
import os, signal, sys
from r1reward.cli import main
from r1reward.trainer import driver

save = driver.Trainer.save_checkpoint

def save_then_die(self, step):
    path = save(self, step)
    if step == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

driver.Trainer.save_checkpoint = save_then_die
sys.exit(main(sys.argv[1:]))
"""
CLI = "import sys; from r1reward.cli import main; sys.exit(main(sys.argv[1:]))"


def benchmark_file(pairs: Path, out: Path, rows: int) -> Path:
    """MM-RLHF-RewardBench's released JSONL layout (`id`, `image` or `video`, `prompt`, `chosen`,
    `rejected`), with the media under category folders as the released file has them: `rows` image rows
    and one video row."""
    (out / "video").mkdir(parents=True)
    write_video(out / "video" / "clip.mp4", seconds=2.0, fps=8, size=(56, 56))
    video = {"id": "clip", "video": "video/clip.mp4", "prompt": "What happens?", "chosen": "Colours change."}
    lines = [{**video, "rejected": "A dog runs."}]
    for row in [json.loads(line) for line in pairs.read_text().splitlines()][:rows]:
        image = Path("mcq") / Path(row["images"][0]).name
        (out / image).parent.mkdir(parents=True, exist_ok=True)
        (out / image).write_bytes((pairs.parent / row["images"][0]).read_bytes())
        chosen, rejected = (row["response_1"], row["response_2"])[:: 1 if row["label"] == 1 else -1]
        lines.append(
            {"id": row["id"], "image": str(image), "prompt": row["question"], "chosen": chosen, "rejected": rejected}
        )
    path = out / "mm_rlhf_rewardbench.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def run(config: Path, cwd: Path, script: str = CLI) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "R1REWARD_VERBOSE")}
    return subprocess.run(
        [sys.executable, "-c", script, "pipeline", "--config", str(config)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def record(out: Path, stage: str) -> dict:
    return json.loads((out / "stages" / f"{stage}.json").read_text())


def test_sft_rl_eval_on_real_layout_files_resumes_after_a_kill_and_skips_when_done(tmp_path, tiny_model_dir):
    from r1reward.data.synthetic import make_synthetic_data

    inputs, out = tmp_path / "inputs", tmp_path / "pipeline"
    train = make_synthetic_data(inputs / "train", num=48, seed=3)  # sft.jsonl (with targets), train.parquet
    heldout = make_synthetic_data(inputs / "heldout", num=12, seed=4)
    bench = benchmark_file(heldout["pairs"], inputs / "bench", rows=12)
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""
model: {{path: {tiny_model_dir}, dtype: float32}}
data: {{train_path: {train["rl"]}, schema: r1reward-rl, max_prompt_tokens: 2048}}
sft: {{data_path: {train["sft"]}, num_epochs: 10, lr: 3.0e-3, train_batch_size: 8}}
rollout: {{num_workers: 1, n_samples_per_prompt: 1, temperature: 0.7, max_new_tokens: 64}}
reward: {{judge: rule}}
algo: {{kl_coef: 0.001, kl_estimator: k1}}
learner: {{num_ranks: 2, zero_stage: 2, lr: 1.0e-4, micro_batch_size: 2, train_batch_size: 4}}
trainer: {{num_steps: 2, rollout_batch_size: 8, save_every: 1}}
pipeline:
  output_dir: {out}
  source: data
  hard_examples: none
  benchmarks: {{mm_rlhf_rewardbench: {{data: {bench}}}}}
"""
    )
    given = mtimes(inputs)

    # 1. Killed right after RL saved step 1: SFT is recorded done, RL running.
    killed = run(config, tmp_path, KILLED_AFTER_RL_STEP_1)
    assert killed.returncode == -9, killed.stdout[-3000:] + killed.stderr[-3000:]
    assert record(out, "seed-0/sft")["status"] == "done" and record(out, "seed-0/rl")["status"] == "running"
    sft = record(out, "seed-0/sft")["outputs"]
    assert sft["hf"] == str(out / "seed-0" / "sft" / "checkpoints" / "step_60" / "hf")  # 48 x 10 / 8 steps
    rl_dir = out / "seed-0" / "rl"
    assert [p.name for p in (rl_dir / "checkpoints").iterdir()] == ["step_1"]
    sft_files, step_1_files = mtimes(Path(sft["checkpoint"])), mtimes(rl_dir / "checkpoints" / "step_1")

    # 2. The rerun skips SFT and resumes RL from step 1, then evaluates.
    resumed = run(config, tmp_path)
    text = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, text[-4000:]
    assert "seed-0/sft: done, skipped" in text and "seed-0/rl: interrupted in an earlier run; resuming it" in text
    assert f"resumed from {rl_dir / 'checkpoints' / 'step_1'} at step 1" in text
    assert mtimes(Path(sft["checkpoint"])) == sft_files  # SFT not redone
    assert mtimes(rl_dir / "checkpoints" / "step_1") == step_1_files  # step 1 not redone
    rl = record(out, "seed-0/rl")
    assert rl["status"] == "done" and rl["outputs"]["hf"] == str(rl_dir / "checkpoints" / "step_2" / "hf")

    # RL started from the SFT export: the run's model.path is it, byte for byte the SFT checkpoint's weights.
    started = json.loads((rl_dir / "config.json").read_text())["model"]["path"]
    assert started == sft["hf"] and rl["inputs"]["model.path"] == sft["hf"]
    assert weights_sha(Path(started).parent) == weights_sha(Path(sft["checkpoint"]))
    # Its KL reference is that same model: zero KL before the first update, then the policy moves away
    # from it (step 2 ran in the resumed process, which loaded the reference again).
    rows = read_metrics(rl_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == [1, 2]
    assert abs(rows[0]["kl/mean"]) < 1e-5 and abs(rows[1]["kl/mean"]) > 1e-6, rows

    # The benchmark under the released protocol, on the RL model; the unconfigured ones listed as skipped.
    metrics = json.loads((out / "seed-0" / "eval" / "mm-rlhf-rewardbench" / "metrics.json").read_text())
    assert metrics["evaluated"] == 13 and metrics["category_counts"]["video"]["total"] == 1  # the video row too
    assert metrics["run"]["protocol"] == "released"
    assert metrics["run"]["model"] == rl["outputs"]["hf"] and metrics["run"]["settings"]["chosen_first"]
    summary = json.loads((out / "summary.json").read_text())["runs"][0]
    assert summary["benchmarks"]["mm-rlhf-rewardbench"]["evaluated"] == 13
    assert summary["skipped"] == {
        "vl-rewardbench": "pipeline.benchmarks.vl_rewardbench.data is not set",
        "multimodal-rewardbench": "pipeline.benchmarks.multimodal_rewardbench.data is not set",
    }

    # 3. Everything done: every stage skipped, no file of any stage rewritten.
    done = mtimes(out / "seed-0") | {f"stages/{k}": v for k, v in mtimes(out / "stages").items()}
    again = run(config, tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert [line.split(":")[0] for line in again.stdout.splitlines() if ": done, skipped" in line] == [
        "seed-0/sft",
        "seed-0/rl",
        "seed-0/eval",
    ]
    assert mtimes(out / "seed-0") | {f"stages/{k}": v for k, v in mtimes(out / "stages").items()} == done

    # 4. A changed benchmark file reruns the evaluation only.
    bench.write_text(bench.read_text())
    changed = run(config, tmp_path)
    assert changed.returncode == 0, (changed.stdout + changed.stderr)[-3000:]
    skipped = [line.split(":")[0] for line in changed.stdout.splitlines() if ": done, skipped" in line]
    assert skipped == ["seed-0/sft", "seed-0/rl"]
    assert mtimes(rl_dir) == {k.removeprefix("rl/"): v for k, v in done.items() if k.startswith("rl/")}

    given[str(bench.relative_to(inputs))] = bench.stat().st_mtime_ns  # the one input this test changed
    assert mtimes(inputs) == given  # the pipeline wrote nothing outside its folder
