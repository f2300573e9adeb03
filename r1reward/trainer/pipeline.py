"""`r1reward pipeline`: the paper's two stages on a laptop-sized task, with a report.

Per seed: tiny model + caption warm-up (the stand-in for a pretrained VLM) -> synthetic data ->
cold-start SFT (learner ranks) -> hard examples -> StableReinforce (Ray: vLLM, reward actor,
DeepSpeed) -> held-out evaluation of every stage. Then one table over the seeds (mean and 95% interval
per stage, and the paired RL - SFT gain), one plot, and where the logs are.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from r1reward.config import Config, override

STAGES = ("base", "SFT", "SFT + RL")
# Two-sided 95% Student t quantiles by degrees of freedom (n - 1): an interval over a few seeds.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def machine() -> dict[str, Any]:
    """The machine a result ran on: torch picks its CPU kernels by capability, so results name it."""
    import os

    import torch

    env = {
        k: os.environ[k]
        for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
        if k in os.environ
    }
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count(), "kernel_env": env}


def mean_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% t-interval of the mean over seeds (zero width for one value)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    half = _T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def wilson_interval(correct: int, total: int) -> tuple[float, float]:
    """The 95% Wilson interval of a proportion: for one seed, the noise of the held-out set itself."""
    if total == 0:
        return 0.0, 1.0
    z, p = 1.96, correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return centre - half, centre + half


def stage_table(per_seed: list[dict[str, dict[str, float]]], heldout: int) -> str:
    """Markdown: per stage the mean accuracy with its 95% interval, the format rate, and each seed."""
    seeds = len(per_seed)
    how = f"t-interval over {seeds} seeds" if seeds > 1 else f"Wilson interval over {heldout} pairs"
    lines = [f"| stage | held-out accuracy (95% {how}) | format rate | per seed |", "|---|---|---|---|"]
    for stage in STAGES:
        accs = [run[stage]["accuracy"] for run in per_seed]
        mean, low, high = mean_interval(accs)
        if seeds == 1:
            low, high = wilson_interval(round(mean * heldout), heldout)
        fmt = statistics.fmean(run[stage]["format_rate"] for run in per_seed)
        lines.append(
            f"| {stage} | {mean:.3f} [{low:.3f}, {high:.3f}] | {fmt:.3f} | " + " ".join(f"{a:.3f}" for a in accs) + " |"
        )
    gains = [run["SFT + RL"]["accuracy"] - run["SFT"]["accuracy"] for run in per_seed]
    mean, low, high = mean_interval(gains)
    lines.append(
        f"\nRL gain over SFT (paired by seed): {mean:+.3f}"
        + (f", 95% interval [{low:+.3f}, {high:+.3f}]" if seeds > 1 else "")
    )
    return "\n".join(lines)


def rl_stability(metrics: Path) -> dict[str, float]:
    """What StableReinforce's guards did over an RL run: the shares of completion tokens Pre-CLIPped,
    PPO-clipped and zeroed by the advantage filter (each step weighted by its tokens), and the largest
    importance ratio seen (the learners already reduce it with max over micro-batches and ranks)."""
    from r1reward.trainer.metrics import read_metrics

    rows = read_metrics(metrics)
    weights = [row["response_length/mean"] for row in rows]  # every step has the same number of samples

    def share(key: str) -> float:
        return sum(w * row[key] for w, row in zip(weights, rows)) / max(sum(weights), 1e-12)

    return {
        "pre_clip_frac": share("pre_clip_frac"),
        "clip_frac": share("clip_frac"),
        "filtered_frac": share("filter/filtered_frac"),
        "ratio_max": max(row["ratio_max"] for row in rows),
    }


def stability_line(per_seed: list[dict[str, float]]) -> str:
    mean = {
        key: statistics.fmean(run[key] for run in per_seed) for key in ("pre_clip_frac", "clip_frac", "filtered_frac")
    }
    return (
        f"RL guards (share of completion tokens): Pre-CLIPped {mean['pre_clip_frac']:.2%}, "
        f"PPO-clipped {mean['clip_frac']:.2%}, advantage-filtered {mean['filtered_frac']:.2%}; "
        f"largest importance ratio {max(run['ratio_max'] for run in per_seed):.3f}"
    )


def plot_curves(runs: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from r1reward.trainer.metrics import read_metrics

    panels = [
        ("SFT loss", "sft", "sft_loss"),
        ("RL reward (mean)", "rl", "reward/mean"),
        ("RL accuracy (result reward)", "rl", "reward/result_rate"),
        ("RL policy loss", "rl", "loss"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for run in runs:
        for ax, (_, stage, key) in zip(axes, panels):
            rows = read_metrics(run / stage / "metrics.jsonl")
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", markersize=2, label=run.name)
    for ax, (title, _, _) in zip(axes, panels):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def own_dir(section: str, directory: Path) -> dict[str, Any]:
    """Overrides for a stage that writes into a directory of the pipeline's own (`section`: "sft" or
    "trainer"): a rerun starts it afresh, deleting the earlier pipeline run's checkpoints and metrics
    there, as it makes every earlier stage afresh too."""
    return {f"{section}__output_dir": directory, f"{section}__overwrite": True, f"{section}__resume": False}


def run_seed(config: Config, seed: int, out: Path, say) -> dict[str, Any]:
    """One pass of the two stages from a fresh tiny model; returns the held-out scores of each stage."""
    from r1reward.data.jsonl import read_jsonl
    from r1reward.data.synthetic import make_synthetic_data
    from r1reward.learner.sft_local import caption_warmup
    from r1reward.models.tiny import make_tiny_model
    from r1reward.trainer.driver import Trainer
    from r1reward.trainer.hard_examples import Sampler, records_of, select_hard, summarise, write_hard
    from r1reward.trainer.sft import SFTTrainer

    p = config.pipeline
    pixels = dict(min_pixels=config.data.min_pixels, max_pixels=config.data.max_pixels)
    say(f"[1/5] base model: a random {p.model_size} Qwen2.5-VL, {p.warmup_steps} caption warm-up steps")
    fresh = make_tiny_model(out / "random-model", seed=seed, size=p.model_size)
    base = out / "base-model"
    caption_warmup(fresh, base, steps=p.warmup_steps, seed=seed, progress="warm-up", **pixels)
    train = make_synthetic_data(out / "data" / "train", num=p.num_train, seed=seed * 1000, teacher_bias=p.teacher_bias)
    heldout = make_synthetic_data(out / "data" / "heldout", num=p.num_heldout, seed=seed * 1000 + 1)

    traces = len(read_jsonl(train["sft"]))  # fewer than num_train with a biased teacher
    say(f"[2/5] cold-start SFT on the learner ranks: {traces} pairs x {config.sft.num_epochs} epochs")
    seeded = override(config, data__seed=seed, trainer__seed=seed)
    sft = SFTTrainer(
        override(seeded, model__path=base, sft__data_path=train["sft"], **own_dir("sft", out / "sft"))
    ).run()

    say(f"[3/5] hard examples: pairs the SFT model does not solve in all {p.select_k} samples")
    train_records = records_of(train["rl"], "r1reward-rl", config)
    heldout_records = records_of(heldout["pairs"], "canonical", config)
    labels = [r.label for r in heldout_records]

    def heldout_scores(sampler: Sampler) -> dict[str, float]:
        choices = sampler.choices(heldout_records, k=1, temperature=p.eval_temperature, seed=seed + 7)
        return choices.scores(labels)

    stages: dict[str, dict[str, float]] = {}
    with Sampler(sft["hf"], config) as sampler:  # one engine: the selection, then SFT's held-out score
        choices = sampler.choices(train_records, k=p.select_k, seed=seed)
        stages["SFT"] = heldout_scores(sampler)
    hard = select_hard(train_records, choices) or train_records  # all solved: keep training on everything
    write_hard(hard, out / "data" / "hard.parquet")
    selection = summarise(choices, train_records, len(hard))

    say(f"[4/5] StableReinforce on {len(hard)} hard examples")
    trainer = Trainer(
        override(
            seeded,
            model__path=sft["hf"],
            data__train_path=out / "data" / "hard.parquet",
            data__schema="r1reward-rl",
            **own_dir("trainer", out / "rl"),
        )
    )
    with trainer:
        rl = trainer.fit()
        rl_model = str(Path(rl["checkpoint"]) / "hf")
        say(f"[5/5] held-out evaluation of each stage on {p.num_heldout} pairs")
        # The trainer's rollout workers hold the final weights (synced after the last update, equal to
        # the last checkpoint): score the RL model there, then the base model loaded into the same engine.
        with Sampler(rl_model, config, group=trainer.rollout) as sampler:
            stages["SFT + RL"] = heldout_scores(sampler)
            sampler.load(base)
            stages["base"] = heldout_scores(sampler)
    return {
        "seed": seed,
        "stages": {stage: stages[stage] for stage in STAGES},
        "hard_example_selection": selection,
        "rl_timings": rl["timings"],
        "rl_stability": rl_stability(out / "rl" / "metrics.jsonl"),
        "models": {"base": str(base), "sft": sft["hf"], "rl": rl_model},
    }


def run_pipeline(config: Config) -> dict[str, Any]:
    from r1reward.config.load import validate_sft
    from r1reward.lifetime import start_guard
    from r1reward.placement.ray_init import ensure_ray

    validate_sft(config, "pipeline")  # stage 2 runs SFT: refuse its batch layout now, not minutes in
    p = config.pipeline
    out = Path(p.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start_guard()  # every stage's actors and vLLM engines end with this process, however it ends
    ensure_ray(config, out / "logs")
    runs = []
    for number, seed in enumerate(p.seeds, 1):
        run_dir = out / f"seed-{seed}"

        def say(text, n=number, seed=seed):
            return print(f"seed {seed} ({n}/{len(p.seeds)}) {text}", flush=True)

        runs.append(run_seed(config, seed, run_dir, say))
        if len(p.seeds) > 1:  # one seed: the final table says it
            print(stage_table([runs[-1]["stages"]], p.num_heldout).split("\n\n")[0], flush=True)

    table = stage_table([run["stages"] for run in runs], p.num_heldout)
    table += "\n" + stability_line([run["rl_stability"] for run in runs])
    plot = plot_curves([out / f"seed-{seed}" for seed in p.seeds], out / "training_curves.png")
    summary = {
        "machine": machine(),
        "seeds": list(p.seeds),
        "heldout_pairs": p.num_heldout,
        "runs": runs,
        "plot": str(plot),
        "stages": {
            stage: dict(zip(("mean", "low", "high"), mean_interval([r["stages"][stage]["accuracy"] for r in runs])))
            for stage in STAGES
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(
        f"Held-out accuracy after each stage ({p.num_heldout} pairs, "
        f"one greedy answer each), seeds {list(p.seeds)}, on {summary['machine']['cpu_capability']} kernels "
        f"({summary['machine']['cores']} cores):\n\n{table}\n"
    )
    print("\n" + table)
    print(f"\nsummary: {out / 'summary.md'}; curves: {plot}; actor logs: {out / 'logs'}")
    return summary
