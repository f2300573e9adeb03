"""End to end: RL samples per second of `r1reward train` vs TRL's `GRPOTrainer`, on the same work.

Same model (the `small` tiny Qwen2.5-VL, SFT-primed), same pairs and images, same prompt layout (the
paper's Table-1 text, then the image), 80 new tokens at temperature 1, 8 prompts x 2 samples per step
(TRL's GRPO needs at least 2 generations per prompt), optimizer batches of 8 samples (two updates per
rollout), one epoch per rollout, no KL, and the project's rule reward (format + result + rule
consistency, `RewardActor`) as TRL's reward function. A step is everything between two generations:
prompt preparation, generation, reward, log-probs, the updates and (r1reward) the weight sync to vLLM.
The first step of each is warm-up and not counted.

r1reward's step time is the sum of its `time/<phase>` metrics, with the update inside `train` split into
the slowest rank's forward, backward and optimizer seconds (`time/update/*`); TRL's is the wall time between
the callbacks that close each generation's updates, split by timing its own methods from outside (prompt
tokenisation, generation, reward, the old log-probs' forward, the loss's forward, backward, optimizer
step; the rest is `other`). Both breakdowns go into the result, with the ratio r1reward's update alone
would allow (`update_bound`). Each side runs in its own process, one after the other.

    python -m benchmarks.end_to_end [--steps 7] [--out benchmarks/results/end_to_end.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.assets import ASSETS, MAX_NEW_TOKENS, MAX_PIXELS, MIN_PIXELS, ROOT, TEMPERATURE, TOP_P, ensure_assets
from benchmarks.report import update_bound

PROMPTS_PER_STEP = 8
SAMPLES_PER_PROMPT = 2
OPTIMIZER_BATCH = 8
LR = 2e-4
PHASES = ("prepare", "generate", "reward", "experience", "train", "sync")
# TRL's step, timed around its own methods: prompt tokenisation, generation, the reward function, the
# old log-probs' forward, and per optimizer step the loss's forward, backward and optimizer step; the
# rest of the wall time between two generations is `other`.
TRL_PHASES = ("prepare", "generate", "reward", "experience", "forward", "backward", "optimizer")
# r1reward variants run in the same invocation: the default, each speed-up that is a setting turned off
# (before) or on (after), so its ratio is read against `default` in the same run.
VARIANTS = {
    "default": [],
    # before: the learner recomputes the old log-probs; this run also measures the sampler/learner gap
    # that lets the default (algo.old_logprobs=auto) take the sampler's
    "learner_logprobs": ["algo.old_logprobs=learner"],
    "micro2": ["learner.micro_batch_size=2"],  # before: tiny-cpu.yaml's two micro-batches per rank and update
    # after: the rollout worker asks for both cores (in the synchronous loop generation and training alternate)
    "rollout_two_cores": ["resources.cpus_per_rollout_worker=2"],
    # after: one learner rank on both cores (no gradient exchange between ranks), one micro-batch of 8
    "one_rank": ["learner.num_ranks=1", "resources.cpus_per_learner_rank=2", "learner.micro_batch_size=8"],
}


def r1reward_overrides(model_dir: Path, data_dir: Path, steps: int, out_dir: Path) -> list[str]:
    """configs/tiny-cpu.yaml (1 vLLM worker, 2 DeepSpeed ZeRO-2 learner ranks, gloo sync) on the bench work.
    Each rank takes its share of an optimizer batch in one micro-batch (4 of 8), as TRL takes the whole
    batch in one forward."""
    return [
        f"model.path={model_dir}",
        f"data.train_path={data_dir / 'train.parquet'}",
        f"data.min_pixels={MIN_PIXELS}",
        f"data.max_pixels={MAX_PIXELS}",
        f"rollout.n_samples_per_prompt={SAMPLES_PER_PROMPT}",
        f"rollout.max_new_tokens={MAX_NEW_TOKENS}",
        f"rollout.temperature={TEMPERATURE}",
        f"rollout.top_p={TOP_P}",
        f"learner.train_batch_size={OPTIMIZER_BATCH}",
        f"learner.micro_batch_size={OPTIMIZER_BATCH // 2}",
        f"learner.lr={LR}",
        "algo.kl_coef=0.0",
        f"trainer.rollout_batch_size={PROMPTS_PER_STEP}",
        f"trainer.num_steps={steps}",
        f"trainer.save_every={steps + 1000}",  # only the final save, after the last timed step
        f"trainer.output_dir={out_dir}",
        "trainer.overwrite=true",  # the bench's own folder: the last bench's run goes
    ]


def run_r1reward(steps: int, variant: str) -> dict[str, Any]:
    extra = VARIANTS[variant]
    model_dir, data_dir = ensure_assets()
    out_dir = ASSETS / f"e2e-r1reward-{variant}"
    metrics_path = out_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    command = [sys.executable, "-m", "r1reward", "train", "--config", "configs/tiny-cpu.yaml"]
    command += r1reward_overrides(model_dir, data_dir, steps, out_dir) + extra
    load_before, start = os.getloadavg()[0], time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    timed = rows[1:]  # the first step is warm-up (first vLLM batch, DeepSpeed's first backward)
    steps_s = [sum(row[f"time/{p}"] for p in PHASES if f"time/{p}" in row) for row in timed]
    phases = {p: statistics.median(row[f"time/{p}"] for row in timed) for p in PHASES if f"time/{p}" in timed[0]}
    # Inside `train`: the slowest rank's seconds in each part of the update; the rest of the phase is the
    # call around it (Ray, the samples' serialisation, the collation and the ranks' votes).
    update = {
        key.removeprefix("time/update/").removesuffix("_max"): statistics.median(row[key] for row in timed)
        for key in timed[0]
        if key.startswith("time/update/")
    }
    samples = PROMPTS_PER_STEP * SAMPLES_PER_PROMPT
    return {
        "framework": "r1reward",
        "variant": variant,
        "overrides": extra,
        "step_s": statistics.median(steps_s),
        "step_s_all": steps_s,
        "samples_per_s": samples / statistics.median(steps_s),
        "phases_s": phases,
        "update_s": update,
        "response_length_mean": statistics.mean(row["response_length/mean"] for row in timed),
        # The largest gap between the sampler's and the learner's log-probs (0 when the sampler's are used).
        "logprob_gap_max": max(row.get("logprob_gap/max", 0.0) for row in rows),
        "reward_mean": statistics.mean(row["reward/mean"] for row in timed),
        "wall_s_including_startup": wall,
        "load_average": [load_before, os.getloadavg()[0]],  # before and after: others' work shares the cores
    }


def run_trl(steps: int, use_vllm: bool = False) -> dict[str, Any]:
    """TRL's GRPOTrainer in this process, generating with Hugging Face `generate` (TRL's default) or, with
    `use_vllm`, with TRL's colocated vLLM engine (vllm_mode="colocate")."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from r1reward.data.dataset import PreferenceDataset
    from r1reward.data.images import load_image
    from r1reward.data.render import build_messages, resize_for_model
    from r1reward.reward.actor import RewardActor

    model_dir, data_dir = ensure_assets()
    records = list(PreferenceDataset.from_file(str(data_dir / "train.parquet"), "r1reward-rl"))
    rows = [
        {
            "prompt": build_messages(r),  # text first, then the image: the layout r1reward trains on
            "images": [resize_for_model(load_image(s), MIN_PIXELS, MAX_PIXELS) for s in r.images],
            "label": r.label,
        }
        for r in records
    ]
    scorer = RewardActor({"judge": "rule"})  # the project's reward, in-process, as r1reward's reward actor runs it

    def r1reward_rule_reward(completions: list[Any], label: list[int], **_: Any) -> list[float]:
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return scorer.score(texts, list(label))["reward"]

    class StepClock(TrainerCallback):
        """Wall time at the end of each optimizer step (a generation feeds `steps_per_generation` of them),
        and the seconds of each phase of the step (`TRL_PHASES`) between two such ends."""

        def __init__(self) -> None:
            self.times = [time.perf_counter()]
            self.lengths: list[float] = []
            self.phases: list[dict[str, float]] = [dict.fromkeys(TRL_PHASES, 0.0)]  # one per optimizer step
            self._scoring = False  # inside _generate_and_score_completions: a forward there is the old log-probs
            self._optimizer_start = 0.0

        def add(self, phase: str | None, seconds: float) -> None:
            if phase is not None:
                self.phases[-1][phase] += seconds

        def time_method(self, owner: Any, name: str, phase: Any) -> None:
            """Replace `owner.name` by a wrapper that adds its seconds to `phase` (a name, or a function
            that returns one or None: not counted here, inside a method already timed)."""
            original = getattr(owner, name)

            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    self.add(phase() if callable(phase) else phase, time.perf_counter() - start)

            setattr(owner, name, timed)

        def scoring(self, owner: Any) -> None:
            original = owner._generate_and_score_completions

            def flagged(*args: Any, **kwargs: Any) -> Any:
                self._scoring = True
                try:
                    return original(*args, **kwargs)
                finally:
                    self._scoring = False

            owner._generate_and_score_completions = flagged

        def on_pre_optimizer_step(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
            self._optimizer_start = time.perf_counter()

        def on_optimizer_step(self, args, state, control, **kwargs):  # noqa: ANN001
            self.add("optimizer", time.perf_counter() - self._optimizer_start)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.times.append(time.perf_counter())
            self.phases.append(dict.fromkeys(TRL_PHASES, 0.0))

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    updates = PROMPTS_PER_STEP * SAMPLES_PER_PROMPT // OPTIMIZER_BATCH
    config = GRPOConfig(
        output_dir=str(ASSETS / "e2e-trl"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=OPTIMIZER_BATCH,
        gradient_accumulation_steps=1,
        steps_per_generation=updates,
        num_generations=SAMPLES_PER_PROMPT,
        num_iterations=1,
        max_completion_length=MAX_NEW_TOKENS,
        temperature=TEMPERATURE,
        top_p=TOP_P,
        top_k=0,
        beta=0.0,
        learning_rate=LR,
        max_steps=steps * updates,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        seed=0,
        **({"use_vllm": True, "vllm_mode": "colocate", "vllm_max_model_length": 4096} if use_vllm else {}),
    )
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    clock = StepClock()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=r1reward_rule_reward,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
        callbacks=[clock],
    )
    # TRL's phases, timed from outside by wrapping the methods that run them.
    clock.time_method(trainer, "_tokenize_prompts", "prepare")
    clock.time_method(trainer, "_generate_single_turn", "generate")
    clock.time_method(trainer, "_calculate_rewards", "reward")
    clock.time_method(
        trainer, "_get_per_token_logps_and_entropies", lambda: "experience" if clock._scoring else None
    )  # outside scoring it is the loss's forward, which compute_loss times
    clock.scoring(trainer)
    clock.time_method(trainer, "compute_loss", "forward")
    clock.time_method(trainer.accelerator, "backward", "backward")
    load_before, start = os.getloadavg()[0], time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    ends = clock.times[::updates]  # the clock after each generation's last update
    steps_s = [b - a for a, b in zip(ends, ends[1:])][1:]  # the first step is warm-up
    per_step = [_sum_phases(clock.phases[i : i + updates]) for i in range(0, updates * steps, updates)][1:]
    for phases, step in zip(per_step, steps_s):
        phases["other"] = step - sum(phases.values())
    return {
        "framework": "trl",
        "variant": "vllm_colocate" if use_vllm else "hf_generate",
        "trl_version": __import__("trl").__version__,
        "step_s": statistics.median(steps_s),
        "step_s_all": steps_s,
        "samples_per_s": PROMPTS_PER_STEP * SAMPLES_PER_PROMPT / statistics.median(steps_s),
        "phases_s": {p: statistics.median(row[p] for row in per_step) for p in (*TRL_PHASES, "other")},
        "response_length_mean": statistics.mean(clock.lengths) if clock.lengths else None,
        "torch_threads": torch.get_num_threads(),
        "wall_s_including_startup": wall,
        "load_average": [load_before, os.getloadavg()[0]],  # before and after: others' work shares the cores
    }


def _sum_phases(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) for key in rows[0]}


def _in_subprocess(
    which: str, steps: int, variant: str = "default", timeout_s: float | None = None, log: Path | None = None
) -> dict[str, Any]:
    out = ASSETS / f"e2e-{which}-{variant}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.end_to_end", "--side", which, "--steps", str(steps)]
    with open(log, "w") if log else open(os.devnull) as sink:
        subprocess.run(
            command + ["--variant", variant, "--out", str(out)],
            cwd=ROOT,
            check=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
            timeout=timeout_s,
            **({"stdout": sink, "stderr": subprocess.STDOUT} if log else {}),
        )
    return json.loads(out.read_text())


def _trl_vllm(steps: int, timeout_s: float) -> dict[str, Any]:
    """TRL with its colocated vLLM, if it runs on this machine within `timeout_s`; else why not."""
    log = ASSETS / "e2e-trl-vllm_colocate.log"
    try:
        return _in_subprocess("trl", steps, "vllm_colocate", timeout_s, log)
    except subprocess.TimeoutExpired:
        error = f"no result within {timeout_s:.0f} s"
    except subprocess.CalledProcessError as failed:
        errors = [
            line for line in log.read_text(errors="replace").splitlines() if re.search(r"\w+(Error|Exception): ", line)
        ]
        error = f"exit {failed.returncode}: {errors[-1].strip()[:300] if errors else 'no error line'}"
    print(f"TRL with colocated vLLM: {error} (log: {log})", flush=True)
    return {"framework": "trl", "variant": "vllm_colocate", "error": error, "log": str(log.relative_to(ROOT))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7, help="RL steps per run; the first is warm-up")
    parser.add_argument("--side", choices=["both", "r1reward", "trl"], default="both")
    parser.add_argument("--variant", choices=[*VARIANTS, "vllm_colocate"], default="default")
    parser.add_argument("--trl-vllm-timeout", type=float, default=600.0, help="0: do not try TRL with vLLM")
    parser.add_argument("--out", default="benchmarks/results/end_to_end.json")
    args = parser.parse_args()
    if args.side == "r1reward":
        result: dict[str, Any] = run_r1reward(args.steps, args.variant)
    elif args.side == "trl":
        result = run_trl(args.steps, use_vllm=args.variant == "vllm_colocate")
    else:
        runs = [_in_subprocess("r1reward", args.steps, v) for v in VARIANTS] + [_in_subprocess("trl", args.steps)]
        if args.trl_vllm_timeout > 0:
            runs.append(_trl_vllm(args.steps, args.trl_vllm_timeout))
        result = {
            "name": "end_to_end",
            # What r1reward's update alone allows against TRL's step (report.update_bound).
            "update_bound": update_bound({"runs": runs}),
            "work": {
                "prompts_per_step": PROMPTS_PER_STEP,
                "samples_per_prompt": SAMPLES_PER_PROMPT,
                "optimizer_batch": OPTIMIZER_BATCH,
                "max_new_tokens": MAX_NEW_TOKENS,
                "temperature": TEMPERATURE,
                "steps": args.steps,
                "timed_steps": args.steps - 1,
            },
            "runs": runs,
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
