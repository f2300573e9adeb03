"""`r1reward pipeline`: the paper's two stages on a laptop-sized task, with a report.

synthetic data -> tiny model -> cold-start SFT (learner ranks) -> hard examples -> StableReinforce
(Ray: vLLM, reward actor, DeepSpeed) -> held-out evaluation of every stage, one table and one plot.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from r1reward.config import Config, override


def plot_curves(rl_metrics: Path, sft_metrics: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from r1reward.trainer.metrics import read_metrics

    rl, sft = read_metrics(rl_metrics), read_metrics(sft_metrics)
    panels = [("SFT loss", sft, "sft_loss"), ("RL reward (mean)", rl, "reward/mean"),
              ("RL response length", rl, "response_length/mean"), ("RL policy loss", rl, "loss")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    for ax, (title, rows, key) in zip(axes, panels):
        ax.plot([r["step"] for r in rows], [r[key] for r in rows], marker="o", markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def stage_table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| stage | held-out accuracy | format rate |", "|---|---|---|"]
    lines += [f"| {stage} | {r['accuracy']:.3f} | {r['format_rate']:.3f} |" for stage, r in rows.items()]
    return "\n".join(lines)


def run_pipeline(config: Config) -> dict[str, Any]:
    from r1reward.data.synthetic import make_synthetic_data
    from r1reward.models.tiny import make_tiny_model
    from r1reward.trainer.actors import ensure_ray
    from r1reward.trainer.driver import Trainer
    from r1reward.trainer.hard_examples import records_of, sample_choices, select_hard, summarise, write_hard
    from r1reward.trainer.sft import SFTTrainer

    p = config.pipeline
    out = Path(p.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print("[1/6] tiny model and synthetic data")
    base = make_tiny_model(out / "base-model", seed=p.seed)
    train = make_synthetic_data(out / "data" / "train", num=p.num_train, seed=p.seed)
    heldout = make_synthetic_data(out / "data" / "heldout", num=p.num_heldout, seed=p.seed + 1)
    ensure_ray(config)

    print("[2/6] cold-start SFT on the learner ranks")
    sft = SFTTrainer(override(config, model__path=base, sft__data_path=train["sft"],
                              sft__output_dir=out / "sft")).run()

    print("[3/6] hard examples: pairs the SFT model does not solve in all samples")
    train_records = records_of(train["rl"], "r1reward-rl", config)
    choices = sample_choices(sft["hf"], train_records, config, k=p.select_k, seed=p.seed)
    hard = select_hard(train_records, choices) or train_records  # all solved: keep training on everything
    write_hard(hard, out / "data" / "hard.parquet")
    selection = summarise(choices, train_records, len(hard))

    print(f"[4/6] StableReinforce on {len(hard)} hard examples")
    rl = Trainer(override(config, model__path=sft["hf"], data__train_path=out / "data" / "hard.parquet",
                          data__schema="r1reward-rl", trainer__output_dir=out / "rl")).run()
    rl_model = str(Path(rl["checkpoint"]) / "hf")

    print("[5/6] held-out evaluation of each stage")
    heldout_records = records_of(heldout["pairs"], "canonical", config)
    stages = {}
    for stage, model in (("base (random)", str(base)), ("SFT", sft["hf"]), ("SFT + RL", rl_model)):
        stages[stage] = sample_choices(model, heldout_records, config, k=1, temperature=p.eval_temperature,
                                       seed=p.seed + 7).scores([r.label for r in heldout_records])

    print("[6/6] report")
    table = stage_table(stages)
    plot = plot_curves(out / "rl" / "metrics.jsonl", out / "sft" / "metrics.jsonl", out / "training_curves.png")
    summary = {"stages": stages, "hard_example_selection": selection, "rl_timings": rl["timings"],
               "models": {"base": str(base), "sft": sft["hf"], "rl": rl_model}, "plot": str(plot)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(table + "\n")
    print(table)
    print(f"SFT model solved {selection['accuracy']:.3f} of its {p.select_k} samples per training pair; "
          f"{selection['kept_hard']} of {selection['examples']} pairs kept for RL")
    print(f"curves: {plot}; summary: {out / 'summary.json'}")
    return summary
