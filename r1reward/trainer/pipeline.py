"""`r1reward pipeline`: the paper's pipeline as recorded stages, on real data or on the synthetic demo.

One command and one set of stages (r1reward/trainer/stages.py: each records its outputs; a rerun skips
what is done and resumes what was interrupted), shaped by the config's `pipeline:` section:

    [annotate] -> per seed: [source] -> cold-start SFT -> [hard examples] -> RL -> evaluation

- pipeline.source=data (configs/paper-qwen2.5-vl-7b.yaml): SFT from model.path on sft.data_path (with
  pipeline.annotate.data: on what a teacher annotated, whose RL set RL then trains on); RL from the SFT
  checkpoint's export on data.train_path, its KL reference (algo.kl_coef > 0) that same checkpoint; then
  the configured benchmarks under the released evaluation protocol.
- pipeline.source=synthetic (configs/pipeline-tiny.yaml, `make demo`): per seed a tiny model with a
  caption warm-up (the stand-in for a pretrained VLM) and synthetic data; the same SFT, hard-example and
  RL stages; then every stage's model scored on a held-out set, one table over the seeds (mean and 95%
  interval per stage, and the paired RL - SFT gain), one plot.

Everything is written under pipeline.output_dir (docs/pipeline.md).
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from r1reward.config import Config, override
from r1reward.errors import UserError
from r1reward.trainer.stages import DONE, RESUME, RUN, From, Stage, StageRun, plan, run_stages

STAGES = ("base", "SFT", "SFT + RL")
# Two-sided 95% Student t quantiles by degrees of freedom (n - 1): an interval over a few seeds.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def machine() -> dict[str, Any]:
    """The machine a result ran on: torch picks its CPU kernels by capability, so results name it."""
    import torch

    env = {
        k: os.environ[k]
        for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
        if k in os.environ
    }
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "kernel_env": env,
    }


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's model name: two CPUs of the same capability can still run different MKL and oneDNN
    code, and a tiny model's training can land elsewhere on each."""
    import platform

    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    found = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.MULTILINE)
    name = found.group(1) if found else platform.processor()
    return " ".join("".join(c for c in name if c.isprintable()).split())[:80] or "unknown"


def heldout_data_seed(seed: int) -> int:
    """The synthetic generator's seed for a pipeline seed's held-out pairs (its training pairs: seed * 1000).
    A set drawn larger from it begins with the smaller one's pairs."""
    return seed * 1000 + 1


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


# --- the stages ---------------------------------------------------------------------------------
# What the synthetic source stage makes its model and data from.
_SYNTHETIC = ("model_size", "warmup_steps", "num_train", "num_heldout", "teacher_bias")
# Left out of every stage's settings: inputs (fingerprinted by their files), where a run writes and
# whether it resumes (the pipeline decides), and how often it saves.
_RUN_KEYS = (
    "model.path",
    "data.train_path",
    "sft.data_path",
    "sft.output_dir",
    "sft.resume",
    "sft.overwrite",
    "trainer.output_dir",
    "trainer.resume",
    "trainer.overwrite",
    "trainer.keep_checkpoints",
    "trainer.max_restarts",
)


def own_dir(section: str, directory: Path, resume: bool = False) -> dict[str, Any]:
    """Overrides for a stage that writes into a directory of the pipeline's own (`section`: "sft" or
    "trainer"). A stage that starts afresh deletes what an earlier run of it left there (checkpoints and
    metrics); one that resumes continues from its last checkpoint there, if it saved one."""
    from r1reward.trainer.checkpoint import latest_checkpoint

    resume = resume and latest_checkpoint(directory) is not None
    return {f"{section}__output_dir": directory, f"{section}__overwrite": not resume, f"{section}__resume": resume}


def values(config: Config, *keys: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """The config values a stage's result depends on: sections ("learner", "pipeline.annotate") or single
    keys ("pipeline.select_k"), less `drop` (keys of those sections)."""
    out: dict[str, Any] = {}
    for key in keys:
        value: Any = config
        for name in key.split("."):
            value = getattr(value, name)
        if is_dataclass(value):
            value = {k: v for k, v in asdict(value).items() if f"{key}.{k}" not in drop}
        out[key] = value
    return out


def read_rl_set(path: str, made: bool) -> dict[str, Any]:
    """Overrides that read the RL set at `path`: as the data section says, or, for a set an earlier stage
    wrote (the R1-Reward RL layout, images named relative to its folder), from that folder."""
    if not made:
        return {"data__train_path": path}
    return {"data__train_path": path, "data__schema": "r1reward-rl", "data__image_root": str(Path(path).parent)}


def annotate_stage(config: Config, out: Path) -> Stage:
    a = config.pipeline.annotate
    directory = out / "annotate"

    def api_key() -> str | None:
        if a.api_key_env and not os.environ.get(a.api_key_env):
            raise UserError(f"pipeline.annotate.api_key_env: the environment variable {a.api_key_env} is not set")
        return os.environ.get(a.api_key_env) if a.api_key_env else None

    def run(ctx: StageRun) -> dict[str, Any]:
        from r1reward.trainer.annotate import annotate
        from r1reward.trainer.teacher import TeacherClient

        print(f"annotate: {a.teacher_model} at {a.teacher_url}, up to {a.tries} tries per pair", flush=True)
        client = TeacherClient(a.teacher_url, a.teacher_model, api_key())
        data = ctx.inputs["pipeline.annotate.data"]
        report = annotate(data, a.schema, directory, client, a.tries, a.concurrency, a.image_root)
        if report["errors"]:
            raise UserError(
                f"annotate: {report['errors']} pairs got no answer (first: {report['first_error']}); "
                "run the pipeline again to ask for them (the answered pairs are kept)"
            )
        keep = ("pairs", "difficulty", "sft_pairs", "rl_pairs", "tokens")
        return {"results": {key: report[key] for key in keep if key in report}}

    return Stage(
        "annotate",
        f"teacher annotation (r1reward annotate, {a.teacher_model}): the SFT and RL sets",
        inputs={"pipeline.annotate.data": a.data},
        outputs={
            "sft": str(directory / "sft.jsonl"),
            "rl": str(directory / "rl.parquet"),
            "report": str(directory / "annotate_report.json"),
        },
        # Never deleted on a change: annotations cost money, and annotate asks only for the pairs it lacks.
        settings=values(
            config, "pipeline.annotate", drop=("pipeline.annotate.concurrency", "pipeline.annotate.api_key_env")
        ),
        run=run,
        check=api_key,
    )


class SeedStages:
    """The stages of one seed's run, under OUT/seed-N/, built in order; each says its step as it starts."""

    def __init__(self, config: Config, seed: int, out: Path, number: int, count: int, annotated: bool) -> None:
        self.config = override(config, data__seed=seed, trainer__seed=seed)
        self.seed, self.dir, self.annotated = seed, out / f"seed-{seed}", annotated
        self.prefix = f"seed {seed} ({number}/{count})"
        p = config.pipeline
        kinds = ["source"] * (p.source == "synthetic") + ["sft"] + ["hard"] * (p.hard_examples != "none")
        self.steps = [*kinds, "rl", "eval"]

    def say(self, kind: str, text: str) -> None:
        print(f"{self.prefix} [{self.steps.index(kind) + 1}/{len(self.steps)}] {text}", flush=True)

    def id(self, kind: str) -> str:
        return f"seed-{self.seed}/{kind}"

    def build(self) -> list[Stage]:
        cfg, p = self.config, self.config.pipeline
        stages = []
        if p.source == "synthetic":
            stages.append(self.source())
            model: str | From = From(self.id("source"), "base")
            sft_data: str | From = From(self.id("source"), "sft")
            rl_data: str | From = From(self.id("source"), "rl")
        else:
            model = cfg.model.path
            sft_data = From("annotate", "sft") if self.annotated else cfg.sft.data_path
            rl_data = From("annotate", "rl") if self.annotated else cfg.data.train_path
        stages.append(self.sft(model, sft_data))
        if p.hard_examples == "model-samples":
            stages.append(self.hard(rl_data))
            rl_data = From(self.id("hard"), "hard")
        stages.append(self.rl(rl_data))
        stages.append(self.heldout() if p.source == "synthetic" else self.benchmarks())
        return stages

    def source(self) -> Stage:
        """A tiny model whose caption warm-up stands in for a pretrained VLM, and synthetic data."""
        p, seed, directory = self.config.pipeline, self.seed, self.dir

        def run(ctx: StageRun) -> dict[str, Any]:
            from r1reward.data.synthetic import make_synthetic_data
            from r1reward.learner.sft_local import caption_warmup
            from r1reward.models.tiny import make_tiny_model

            pixels = dict(min_pixels=self.config.data.min_pixels, max_pixels=self.config.data.max_pixels)
            self.say(
                "source", f"base model: a random {p.model_size} Qwen2.5-VL, {p.warmup_steps} caption warm-up steps"
            )
            fresh = make_tiny_model(directory / "random-model", seed=seed, size=p.model_size)
            caption_warmup(
                fresh, directory / "base-model", steps=p.warmup_steps, seed=seed, progress="warm-up", **pixels
            )
            train = make_synthetic_data(
                directory / "data" / "train", num=p.num_train, seed=seed * 1000, teacher_bias=p.teacher_bias
            )
            heldout = make_synthetic_data(
                directory / "data" / "heldout", num=p.num_heldout, seed=heldout_data_seed(seed)
            )
            return {"outputs": {"sft": train["sft"], "rl": train["rl"], "heldout": heldout["pairs"]}}

        data = directory / "data"
        return Stage(
            self.id("source"),
            f"a {p.model_size} base model ({p.warmup_steps} caption warm-up steps) and synthetic data",
            inputs={},
            outputs={
                "base": str(directory / "base-model"),
                "train": str(data / "train"),  # the folder: the images the sets name
                "sft": str(data / "train" / "sft.jsonl"),
                "rl": str(data / "train" / "train.parquet"),
                "heldout_dir": str(data / "heldout"),
                "heldout": str(data / "heldout" / "pairs.jsonl"),
            },
            settings={
                "seed": seed,
                **values(self.config, "data.min_pixels", "data.max_pixels", *(f"pipeline.{k}" for k in _SYNTHETIC)),
            },
            run=run,
        )

    def sft(self, model: str | From, data: str | From) -> Stage:
        directory = self.dir / "sft"
        cfg = self.config

        def run(ctx: StageRun) -> dict[str, Any]:
            from r1reward.data.jsonl import read_jsonl
            from r1reward.trainer.sft import SFTTrainer

            traces = len(read_jsonl(ctx.inputs["sft.data_path"]))  # fewer than num_train with a biased teacher
            self.say("sft", f"cold-start SFT on the learner ranks: {traces} pairs x {cfg.sft.num_epochs} epochs")
            sft = SFTTrainer(
                override(
                    cfg,
                    model__path=ctx.inputs["model.path"],
                    sft__data_path=ctx.inputs["sft.data_path"],
                    **own_dir("sft", directory, ctx.resume),
                )
            ).run()
            return {"outputs": {"checkpoint": sft["checkpoint"], "hf": sft["hf"]}, "results": {"step": sft["step"]}}

        last = directory / "checkpoints" / "step_<last>"
        return Stage(
            self.id("sft"),
            "cold-start SFT on the learner ranks (r1reward sft)",
            inputs={"model.path": model, "sft.data_path": data},
            outputs={"checkpoint": str(last), "hf": str(last / "hf")},
            settings={
                "seed": self.seed,
                **values(cfg, "model", "sft", "learner", "data.min_pixels", "data.max_pixels", drop=_RUN_KEYS),
            },
            run=run,
        )

    def hard(self, data: str | From) -> Stage:
        """The project's model-samples rule (r1reward/trainer/hard_examples.py)."""
        cfg, p, seed = self.config, self.config.pipeline, self.seed
        path = self.dir / "data" / "hard.parquet"

        def run(ctx: StageRun) -> dict[str, Any]:
            from r1reward.trainer.hard_examples import Sampler, records_of, select_hard, summarise, write_hard

            self.say("hard", f"hard examples: pairs the SFT model does not solve in all {p.select_k} samples")
            reading = override(cfg, **read_rl_set(ctx.inputs["data.train_path"], isinstance(data, From)))
            records = records_of(ctx.inputs["data.train_path"], reading.data.schema, reading)
            with Sampler(ctx.inputs["model"], self.config) as sampler:
                choices = sampler.choices(records, k=p.select_k, seed=seed)
            hard = select_hard(records, choices) or records  # all solved: keep training on everything
            write_hard(hard, path)
            return {"outputs": {"hard": path}, "results": {"selection": summarise(choices, records, len(hard))}}

        return Stage(
            self.id("hard"),
            f"hard examples: the pairs the SFT model does not solve in all {p.select_k} samples",
            inputs={"model": From(self.id("sft"), "hf"), "data.train_path": data},
            outputs={"hard": str(path)},
            settings={"seed": seed, **values(cfg, "pipeline.select_k", "rollout", "data", drop=_RUN_KEYS)},
            run=run,
        )

    def rl(self, data: str | From) -> Stage:
        cfg = self.config
        directory = self.dir / "rl"
        kl = cfg.algo.kl_coef

        def run(ctx: StageRun) -> dict[str, Any]:
            from r1reward.trainer.driver import train

            hard = ctx.records.get(self.id("hard"))
            what = (
                f"{hard['results']['selection']['kept_hard']} hard examples" if hard else ctx.inputs["data.train_path"]
            )
            self.say("rl", f"StableReinforce on {what}")
            rl = train(
                override(
                    cfg,
                    model__path=ctx.inputs["model.path"],
                    **read_rl_set(ctx.inputs["data.train_path"], isinstance(data, From)),
                    **own_dir("trainer", directory, ctx.resume),
                )
            )
            outputs = {"checkpoint": rl["checkpoint"], "hf": str(Path(rl["checkpoint"]) / "hf")}
            keep = ("step", "timings", "restarts")
            return {"outputs": outputs, "results": {key: rl[key] for key in keep}}

        def notes(inputs: dict[str, str]) -> list[str]:
            if kl > 0:  # the learners load it from model.path: the model RL starts from
                return [
                    f"KL reference: {inputs['model.path']} (the SFT checkpoint RL starts from; algo.kl_coef={kl:g})"
                ]
            return ["KL reference: none (algo.kl_coef=0: no reference model is loaded)"]

        last = directory / "checkpoints" / "step_<last>"
        return Stage(
            self.id("rl"),
            "StableReinforce from the SFT checkpoint (r1reward train)",
            inputs={"model.path": From(self.id("sft"), "hf"), "data.train_path": data},
            outputs={"checkpoint": str(last), "hf": str(last / "hf")},
            settings={
                "seed": self.seed,
                **values(cfg, "model", "data", "rollout", "reward", "algo", "learner", "trainer", drop=_RUN_KEYS),
            },
            run=run,
            notes=notes,
        )

    def heldout(self) -> Stage:
        """Each stage's model on the held-out pairs, greedy (pipeline.eval_temperature), one engine."""
        p, seed = self.config.pipeline, self.seed
        path = self.dir / "eval" / "heldout.json"

        def run(ctx: StageRun) -> dict[str, Any]:
            from r1reward.trainer.hard_examples import Sampler, records_of

            self.say("eval", f"held-out evaluation of each stage on {p.num_heldout} pairs")
            records = records_of(ctx.inputs["heldout"], "canonical", self.config)
            labels = [r.label for r in records]
            scores = {}
            with Sampler(ctx.inputs["SFT + RL"], self.config) as sampler:
                for n, stage in enumerate(("SFT + RL", "SFT", "base")):
                    if n:
                        sampler.load(ctx.inputs[stage])
                    choices = sampler.choices(records, k=1, temperature=p.eval_temperature, seed=seed + 7)
                    scores[stage] = choices.scores(labels)
            scores = {stage: scores[stage] for stage in STAGES}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(scores, indent=1) + "\n")
            if len(p.seeds) > 1:  # one seed: the final table says it
                print(stage_table([scores], p.num_heldout).split("\n\n")[0], flush=True)
            return {"outputs": {"scores": path}, "results": {"stages": scores}}

        return Stage(
            self.id("eval"),
            f"held-out accuracy of the base, SFT and RL models ({p.num_heldout} pairs)",
            inputs={
                "base": From(self.id("source"), "base"),
                "SFT": From(self.id("sft"), "hf"),
                "SFT + RL": From(self.id("rl"), "hf"),
                "heldout": From(self.id("source"), "heldout"),
            },
            outputs={"scores": str(path)},
            settings={
                "seed": seed,
                **values(self.config, "pipeline.eval_temperature", "rollout", "data.min_pixels", "data.max_pixels"),
            },
            run=run,
        )

    def benchmarks(self) -> Stage:
        """The RL model on the configured benchmarks, released protocol, one engine for all of them."""
        cfg, seed = self.config, self.seed
        chosen, skipped = configured_benchmarks(cfg)
        directory = self.dir / "eval"

        def options(name: str, model: str | None) -> Any:
            from r1reward.eval.runner import EvalOptions

            bench = chosen[name]
            return EvalOptions(
                benchmark=name,
                data=bench.data,
                out_dir=str(directory / name),
                model=model,
                image_root=bench.image_root,
                schema=bench.schema,
                protocol="released",
                skip_missing_images=cfg.pipeline.skip_missing_images,
                seed=seed,
            )

        def check() -> None:  # rows and images, so that a bad file stops the run before SFT, not after RL
            from r1reward.eval.runner import prepare_rows

            for name in chosen:
                prepare_rows(options(name, None))

        def run(ctx: StageRun) -> dict[str, Any]:
            from transformers import AutoProcessor

            from r1reward.eval.runner import run_eval

            model = ctx.inputs["model"]
            results: dict[str, Any] = {}
            if chosen:
                self.say(
                    "eval", f"{', '.join(chosen)} with the released protocol on {cfg.rollout.num_workers} engine(s)"
                )
                processor = AutoProcessor.from_pretrained(model)
                # Video input only when a benchmark has video rows: it makes vLLM reserve memory for a video.
                videos = any(has_video_rows(options(name, model)) for name in chosen)
                engine = benchmark_engine(model, cfg, options(next(iter(chosen)), model), max_videos=int(videos))
                try:
                    for name in chosen:
                        metrics = run_eval(options(name, model), engine, processor)
                        keep = ("overall", "macro", "acc_plus", "correct", "evaluated", "skipped")
                        results[name] = {key: metrics[key] for key in keep if key in metrics}
                finally:
                    engine.close()
            for name, reason in skipped.items():
                self.say("eval", f"{name}: skipped ({reason})")
            outputs = {name: str(directory / name) for name in chosen}
            return {"outputs": outputs, "results": {"benchmarks": results, "skipped": skipped}}

        return Stage(
            self.id("eval"),
            "the benchmarks under the released evaluation protocol (r1reward eval --protocol released)",
            inputs={
                "model": From(self.id("rl"), "hf"),
                **{f"pipeline.benchmarks.{key_of(name)}.data": bench.data for name, bench in chosen.items()},
            },
            outputs={name: str(directory / name) for name in chosen},
            settings={
                "seed": seed,
                **values(cfg, "pipeline.benchmarks", "pipeline.skip_missing_images", "rollout.num_workers"),
            },
            run=run,
            notes=lambda inputs: [f"skipped: {name} ({reason})" for name, reason in skipped.items()],
            check=check,
        )


def key_of(benchmark: str) -> str:
    """pipeline.benchmarks' field for a benchmark of r1reward eval ("vl-rewardbench" -> "vl_rewardbench")."""
    return benchmark.replace("-", "_")


def configured_benchmarks(config: Config) -> tuple[dict[str, Any], dict[str, str]]:
    """({benchmark: its pipeline.benchmarks entry} for those with data, {benchmark: why it is skipped})."""
    from r1reward.eval.benchmarks import BENCHMARKS

    chosen, skipped = {}, {}
    for name in BENCHMARKS:
        entry = getattr(config.pipeline.benchmarks, key_of(name))
        if entry.data:
            chosen[name] = entry
        else:
            skipped[name] = f"pipeline.benchmarks.{key_of(name)}.data is not set"
    return chosen, skipped


def has_video_rows(options: Any) -> bool:
    from r1reward.eval.benchmarks import read_benchmark

    rows = read_benchmark(options.data, options.benchmark, options.schema, options.limit)
    return any(row.record is not None and row.record.is_video for row in rows)


def benchmark_engine(model: str, config: Config, options: Any, max_videos: int = 0) -> Any:
    """rollout.num_workers vLLM engines as Ray actors (the RL stage's rollout resources, free by now),
    sampling as the released protocol reads the checkpoint's generation config."""
    from r1reward.eval.generation import eval_plan, eval_rollout_config
    from r1reward.eval.protocol import resolve_protocol
    from r1reward.rollout.group import RolloutGroup

    settings = resolve_protocol(options.protocol, model)
    engine = eval_rollout_config(
        settings.max_tokens, settings.temperature, seed=options.seed, top_p=settings.top_p, top_k=settings.top_k
    )
    plan_ = eval_plan(config.rollout.num_workers, config.resources.gpus_per_rollout_worker)
    return RolloutGroup.start_alone(
        model, engine, (options.min_pixels, options.max_pixels), plan_, timeouts=config.timeouts, max_videos=max_videos
    )


def build_stages(config: Config) -> list[Stage]:
    p = config.pipeline
    out = Path(p.output_dir)
    stages = [annotate_stage(config, out)] if p.annotate.data else []
    for number, seed in enumerate(p.seeds, 1):
        stages += SeedStages(config, seed, out, number, len(p.seeds), bool(p.annotate.data)).build()
    return stages


# --- running, dry run, reports --------------------------------------------------------------------
_WHAT_A_RUN_DOES = {DONE: "done: skipped", RESUME: "interrupted: resumes", RUN: "runs"}


def describe(rows: list[tuple[Stage, str, dict[str, str]]], out: Path) -> str:
    """The dry run: every stage with its inputs, outputs and what a run would do with it now."""
    lines = [f"{len(rows)} stages under {out} (dry run: nothing is loaded or started)"]
    for n, (stage, state, inputs) in enumerate(rows, 1):
        lines.append(f"[{n}/{len(rows)}] {stage.id}: {stage.title} -> {_WHAT_A_RUN_DOES[state]}")
        for label, value in inputs.items():
            origin = stage.inputs[label]
            if isinstance(origin, From):
                where = f"{origin.stage}'s {origin.output}"
            else:
                where = "found" if Path(value).exists() else ("a hub id" if _hub_id(label, value) else "not found")
            lines.append(f"    in   {label} = {value} ({where})")
        lines += [f"    {note}" for note in stage.notes(inputs)]
        lines += [f"    out  {label} = {value}" for label, value in stage.outputs.items()]
    return "\n".join(lines)


def _hub_id(label: str, value: str) -> bool:
    """model.path may name a hub model (e.g. Qwen/Qwen2.5-VL-7B-Instruct) rather than a folder."""
    return label == "model.path" and not value.startswith(("/", ".", "runs/"))


def check_inputs(rows: list[tuple[Stage, str, dict[str, str]]]) -> None:
    """Before anything runs: every file a stage that will run reads, and its own checks."""
    for stage, state, inputs in rows:
        if state == DONE:
            continue
        for label, value in inputs.items():
            if not isinstance(stage.inputs[label], From) and not Path(value).exists() and not _hub_id(label, value):
                raise UserError(f"{label} not found: {value} (read by stage {stage.id})")
        if stage.check is not None:
            stage.check()


def run_pipeline(config: Config, dry_run: bool = False) -> dict[str, Any]:
    from r1reward.config.load import validate_pipeline

    validate_pipeline(config, "pipeline")  # the SFT stage's batch layout, not minutes in
    out = Path(config.pipeline.output_dir)
    stages = build_stages(config)
    rows = plan(stages, out)
    if dry_run:
        print(describe(rows, out))
        return {"stages": {stage.id: state for stage, state, _ in rows}}
    check_inputs(rows)
    from r1reward.paths import prepare_output_dir

    prepare_output_dir(out)

    def start() -> None:
        from r1reward.lifetime import start_guard
        from r1reward.placement.ray_init import ensure_ray

        start_guard()  # every stage's actors and vLLM engines end with this process, however it ends
        ensure_ray(config, out / "logs")  # sized for the RL plan, the largest

    records = run_stages(stages, out, before_first=start)
    if config.pipeline.source == "synthetic":
        return synthetic_report(config, out, records)
    return benchmark_report(config, out, records)


def synthetic_report(config: Config, out: Path, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Held-out accuracy per stage over the seeds: table, summary.json, summary.md, training curves."""
    p = config.pipeline
    runs = []
    for seed in p.seeds:
        record = {kind: records.get(f"seed-{seed}/{kind}", {}) for kind in ("source", "sft", "hard", "rl", "eval")}
        runs.append(
            {
                "seed": seed,
                "stages": record["eval"]["results"]["stages"],
                "hard_example_selection": record["hard"].get("results", {}).get("selection"),
                "rl_timings": record["rl"]["results"]["timings"],
                "rl_stability": rl_stability(out / f"seed-{seed}" / "rl" / "metrics.jsonl"),
                "models": {
                    "base": record["source"]["outputs"]["base"],
                    "sft": record["sft"]["outputs"]["hf"],
                    "rl": record["rl"]["outputs"]["hf"],
                },
            }
        )
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
        f"({summary['machine']['cpu_model']}, {summary['machine']['cores']} cores):\n\n{table}\n"
    )
    print("\n" + table)
    print(f"\nsummary: {out / 'summary.md'}; curves: {plot}; actor logs: {out / 'logs'}")
    return summary


def benchmark_report(config: Config, out: Path, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The RL model's benchmark results per seed (released protocol): summary.json and summary.md."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}"

    runs, lines = (
        [],
        ["| seed | benchmark | overall | macro | Acc+ | evaluated | rows skipped |", "|---|---|---|---|---|---|---|"],
    )
    for seed in config.pipeline.seeds:
        ev = records[f"seed-{seed}/eval"]
        runs.append(
            {
                "seed": seed,
                "models": {kind: records[f"seed-{seed}/{kind}"]["outputs"]["hf"] for kind in ("sft", "rl")},
                "benchmarks": ev["results"]["benchmarks"],
                "metrics": ev["outputs"],
                "skipped": ev["results"]["skipped"],
            }
        )
        for name, m in ev["results"]["benchmarks"].items():
            lines.append(
                f"| {seed} | {name} | {pct(m.get('overall'))} | {pct(m.get('macro'))} | {pct(m.get('acc_plus'))} "
                f"| {m.get('evaluated')} | {m.get('skipped')} |"
            )
        lines += [
            f"| {seed} | {name} | skipped: {reason} | | | | |" for name, reason in ev["results"]["skipped"].items()
        ]
    summary = {"machine": machine(), "seeds": list(config.pipeline.seeds), "protocol": "released", "runs": runs}
    table = "\n".join(lines)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(f"The RL model on the benchmarks (released protocol, accuracy in %):\n\n{table}\n")
    print("\n" + table)
    print(f"\nsummary: {out / 'summary.md'}; per benchmark: {out}/seed-*/eval/*/metrics.md; actor logs: {out / 'logs'}")
    return summary
