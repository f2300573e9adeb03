"""The paper's ablation on the toy task: which parts of StableReinforce matter, from one SFT checkpoint.

Variants (R1-Reward, Section 4 / Figure 3): StableReinforce; without the advantage filter; without
Pre-CLIP; plain Reinforce++ (neither); and SFT only. Two settings: the demo's, and a stressed one
(lr 1e-3, 10x the demo's, with its two updates per rollout batch) where the second update's log-ratios
grow and instability shows, as in the paper's Table 6. Each
variant runs over several seeds from the same SFT model and hard examples (a `make demo` seed folder)
and is scored on the same held-out pairs, one greedy answer each.

    make demo     # writes runs/pipeline/seed-0 (SFT checkpoint, hard examples, held-out pairs)
    .venv/bin/python benchmarks/ablation.py --from runs/pipeline/seed-0 --seeds 0 1 2

Writes benchmarks/results/ablation.json, ablation.md and ablation.png. Not part of CI (tens of minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

VARIANTS = {
    "StableReinforce": [],
    "no advantage filter": ["algo.advantage_filter=none"],
    "no Pre-CLIP": ["algo.policy_loss=ppo"],
    "Reinforce++ (neither)": ["algo.policy_loss=ppo", "algo.advantage_filter=none"],
}
SETTINGS = {
    "stressed": ["learner.lr=1.0e-3"],
    "demo": [],
}


def run_variant(
    config, hard: Path, sft_model: str, out: Path, overrides: list[str], seed: int, score: Callable | None = None
) -> dict:
    """Train one variant; `score(sampler)` (optional) scores the result on the trainer's own rollout
    workers, which hold the final weights, so that no second engine starts."""
    from r1reward.config import load_config, override
    from r1reward.trainer.driver import Trainer
    from r1reward.trainer.hard_examples import Sampler
    from r1reward.trainer.metrics import read_metrics

    cfg = load_config(
        config,
        overrides
        + [
            f"model.path={sft_model}",
            f"data.train_path={hard}",
            "data.schema=r1reward-rl",
            f"trainer.output_dir={out}",
            f"trainer.seed={seed}",
            f"data.seed={seed}",
        ],
    )
    scores: dict = {}
    with Trainer(override(cfg)) as trainer:
        result = trainer.fit()
        model = str(Path(result["checkpoint"]) / "hf")
        if score is not None:
            with Sampler(model, cfg, group=trainer.rollout) as sampler:
                scores = score(sampler)
    rows = read_metrics(out / "metrics.jsonl")

    def mean(key, part=rows):
        return statistics.fmean(r[key] for r in part if key in r) if part else float("nan")

    late = rows[len(rows) // 2 :]
    return {
        **scores,
        "model": model,
        "reward_late": mean("reward/mean", late),
        "pre_clip_frac": mean("pre_clip_frac"),
        "filtered_frac": mean("filter/filtered_frac"),
        "ratio_max": max(r.get("ratio_max", 0.0) for r in rows),
        "loss_abs_max": max(abs(r.get("loss", 0.0)) for r in rows),
        "curve": [r["reward/mean"] for r in rows],
        "result_rate_curve": [r["reward/result_rate"] for r in rows],
    }


def interval(values: list[float]) -> str:
    from r1reward.trainer.pipeline import mean_interval

    mean, low, high = mean_interval(values)
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--from",
        dest="source",
        default="runs/pipeline/seed-0",
        help="a pipeline seed folder: sft/, data/hard.parquet, data/heldout/",
    )
    parser.add_argument("--config", default="configs/pipeline-tiny.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()

    from r1reward.config import load_config
    from r1reward.placement.ray_init import ensure_ray
    from r1reward.trainer.checkpoint import latest_checkpoint
    from r1reward.trainer.hard_examples import Sampler, records_of

    source, out = Path(args.source), Path(args.out)
    sft_checkpoint = latest_checkpoint(source / "sft")
    hard, heldout = source / "data" / "hard.parquet", source / "data" / "heldout" / "pairs.jsonl"
    if sft_checkpoint is None or not hard.is_file() or not heldout.is_file():
        print(
            f"ablation: no SFT checkpoint, hard examples and held-out pairs under {source}; run `make demo` first",
            file=sys.stderr,
        )
        return 2
    config = load_config(args.config)
    ensure_ray(config, out / "ablation-runs" / "logs")
    records = records_of(heldout, "canonical", config)
    labels = [r.label for r in records]

    def score(sampler: Sampler) -> dict:
        return sampler.choices(records, k=1, temperature=0.0, seed=7).scores(labels)

    with Sampler(str(sft_checkpoint / "hf"), config) as sampler:
        sft_scores = score(sampler)
    from r1reward.trainer.pipeline import machine

    fingerprint = sft_fingerprint(sft_checkpoint / "hf")
    results: dict = {
        "machine": machine(),
        "source": str(source),
        "sft_fingerprint": fingerprint,
        "seeds": args.seeds,
        "heldout_pairs": len(records),
        "sft_only": sft_scores,
        "settings": _earlier_settings(out / "ablation.json", fingerprint, args.seeds, keep_out=args.settings),
    }
    for setting in args.settings:
        results["settings"][setting] = {}
        for name in args.variants:
            overrides, runs = VARIANTS[name], []
            for seed in args.seeds:
                run_dir = out / "ablation-runs" / setting / name.split()[0].lower().strip("+") / f"seed-{seed}"
                print(f"{setting} / {name} / seed {seed}", flush=True)
                run = run_variant(
                    args.config, hard, str(sft_checkpoint / "hf"), run_dir, SETTINGS[setting] + overrides, seed, score
                )
                runs.append(run)
            results["settings"][setting][name] = runs
            # After every variant: a stopped study still leaves a table of what it measured.
            (out / "ablation.json").write_text(json.dumps(results, indent=1))
            write_report(results, out)
    return 0


def sft_fingerprint(model_dir: Path) -> str:
    """The SFT model's weights, hashed: a seed folder rebuilt by a later recipe keeps its path, not this."""
    import xxhash

    digest = xxhash.xxh3_128()
    for weights in sorted(model_dir.glob("*.safetensors")):
        with weights.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _earlier_settings(path: Path, fingerprint: str, seeds: list[int], keep_out: list[str]) -> dict:
    """The settings an earlier run measured from the same SFT model and seeds, so that `--settings demo`
    adds the demo's rows to the table instead of replacing the stressed ones."""
    if not path.is_file():
        return {}
    earlier = json.loads(path.read_text())
    if earlier.get("sft_fingerprint") != fingerprint or earlier.get("seeds") != seeds:
        return {}
    return {name: runs for name, runs in earlier.get("settings", {}).items() if name not in keep_out}


def collapsed(run: dict, sft_accuracy: float) -> bool:
    """A collapse: the model stops answering in format, or falls well below its SFT start."""
    return run["format_rate"] < 0.5 or run["accuracy"] < sft_accuracy - 0.15


def table_lines(results: dict) -> list[str]:
    """The ablation's markdown: one row per setting and variant (pure; the docs quote it too)."""
    seeds, sft = len(results["seeds"]), results["sft_only"]["accuracy"]
    lines = [
        f"Held-out accuracy on {results['heldout_pairs']} pairs (one greedy answer), mean and 95% "
        f"t-interval over {seeds} seeds; SFT only: {sft:.3f}.",
        "",
        "| setting | variant | held-out accuracy | format rate | late reward | Pre-CLIPped tokens | "
        "filtered tokens | max ratio (per run) | max abs loss | collapsed runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setting, variants in results["settings"].items():
        for name, runs in variants.items():
            lines.append(
                f"| {setting} | {name} | {interval([r['accuracy'] for r in runs])} | "
                f"{statistics.fmean(r['format_rate'] for r in runs):.3f} | "
                f"{interval([r['reward_late'] for r in runs])} | "
                f"{statistics.fmean(r['pre_clip_frac'] for r in runs):.4f} | "
                f"{statistics.fmean(r['filtered_frac'] for r in runs):.4f} | "
                f"{interval([r['ratio_max'] for r in runs])} | "
                f"{max(r['loss_abs_max'] for r in runs):.3g} | {sum(collapsed(r, sft) for r in runs)}/{len(runs)} |"
            )
    return lines


def write_report(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = len(results["seeds"])
    lines = table_lines(results)
    settings = results["settings"]
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 3.4), squeeze=False)
    for ax, (setting, variants) in zip(axes[0], settings.items()):
        for name, runs in variants.items():
            curve = [statistics.fmean(values) for values in zip(*(r["curve"] for r in runs))]
            ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=2, label=name)
        ax.set_title(f"RL reward, {setting} setting (mean of {seeds} seeds)")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    plt.close(fig)
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
