"""``r1reward eval``: sample K judgements per benchmark pair, vote, score, and write the reports.

Outputs in ``out_dir``: ``predictions.jsonl`` (one line per benchmark row, in input order),
``generations.jsonl`` (the raw texts), ``metrics.json``, ``metrics.md`` and ``scaling.png``.

Correctness: each generation is parsed with the released lenient rule; the pair's choice is the
majority vote of its K samples (see r1reward.eval.voting for unparsed votes and ties); the pair is
correct when the choice is the label. Unlike the released scripts, which read anything but "1" as
"2", an unparseable generation is never right.

Swap (``swap``): every pair is also judged with the responses in the other order. A pair is correct
only if it is right in both orders (so position bias cannot score); each order is reported too.

Protocol (``protocol``, see r1reward.eval.protocol): ``default`` samples at ``temperature`` (1.0) with
the rows' own order and the prompt text first; ``released`` follows the released scripts (the
checkpoint's generation config, 4096 tokens, chosen response first, image first).

Video rows (MM-RLHF-RewardBench has 25) go to the engine as Qwen2.5-VL video input: frames sampled at
``video_fps`` (at most ``video_max_frames``) from a video file, or spread over a folder of frames (see
r1reward.data.video); they are scored and counted like image rows.

Rows that cannot be evaluated (missing/undecodable images or videos, bad labels, empty or identical
responses) stop the run before anything is generated, with their count and first ids;
``skip_missing_images`` skips them instead: they get a prediction line with ``skipped`` set and are
left out of every denominator (metrics.json counts them).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from r1reward.data.jsonl import read_jsonl, write_jsonl
from r1reward.data.render import MAX_PIXELS, MIN_PIXELS, render_prompt, rollout_prompt
from r1reward.data.video import VIDEO_FPS, VIDEO_MAX_FRAMES, VideoSampling, video_prompt
from r1reward.errors import UserError
from r1reward.eval.benchmarks import BenchmarkRow, check_rows, describe_problems, read_benchmark
from r1reward.eval.generation import Generator, Sampled, close_engine, eval_rollout_config, sample_votes, start_engine
from r1reward.eval.metrics import compute_metrics
from r1reward.eval.protocol import PROTOCOLS, EvalSettings, resolve_protocol
from r1reward.eval.report import write_reports
from r1reward.eval.voting import majority_vote, vote_share
from r1reward.paths import prepare_output_dir


@dataclass
class EvalOptions:
    benchmark: str
    data: str
    out_dir: str
    model: str | None = None  # not needed when an engine and a processor are passed in
    image_root: str | None = None  # default: the data file's folder
    schema: str | None = None  # default: the benchmark's released format
    k: int = 1
    temperature: float | None = None  # None: the protocol's (default 1.0)
    max_tokens: int | None = None  # None: the protocol's (default 1024, released 4096)
    top_p: float | None = None  # None: the protocol's (default 1.0, released the checkpoint's)
    top_k: int | None = None  # None: the protocol's (default 0, no cut; released the checkpoint's)
    swap: bool = False
    workers: int = 1
    limit: int | None = None
    skip_missing_images: bool = False
    seed: int = 0
    min_pixels: int = MIN_PIXELS
    max_pixels: int = MAX_PIXELS
    video_fps: float = VIDEO_FPS  # frames per second taken from a video file
    video_max_frames: int = VIDEO_MAX_FRAMES  # even: Qwen2.5-VL pairs frames in time
    batch_rows: int = 256  # rows per generate call: bounds the decoded images (and frames) held in memory
    dtype: str = "auto"
    max_model_len: int | None = None
    gpus_per_worker: float | None = None
    gpu_memory_utilization: float = 0.85
    protocol: str = "default"

    def check(self) -> None:
        problems = [
            f"{name} must be {rule}, got {value}"
            for name, value, ok, rule in (
                ("--k", self.k, self.k >= 1, "at least 1"),
                ("--temperature", self.temperature, self.temperature is None or self.temperature >= 0, ">= 0"),
                ("--top-p", self.top_p, self.top_p is None or 0 < self.top_p <= 1, "in (0, 1]"),
                ("--top-k", self.top_k, self.top_k is None or self.top_k >= 0, ">= 0 (0: no cut)"),
                ("--max-tokens", self.max_tokens, self.max_tokens is None or self.max_tokens >= 1, "at least 1"),
                ("--protocol", self.protocol, self.protocol in PROTOCOLS, " or ".join(PROTOCOLS)),
                ("--workers", self.workers, self.workers >= 1, "at least 1"),
                ("--limit", self.limit, self.limit is None or self.limit >= 1, "at least 1"),
                ("--batch-rows", self.batch_rows, self.batch_rows >= 1, "at least 1"),
                ("--video-fps", self.video_fps, self.video_fps > 0, "> 0"),
                (
                    "--video-max-frames",
                    self.video_max_frames,
                    self.video_max_frames >= 2 and self.video_max_frames % 2 == 0,
                    "an even number >= 2",
                ),
            )
            if not ok
        ]
        if problems:
            raise UserError("; ".join(problems))


def prepare_rows(options: EvalOptions) -> list[BenchmarkRow]:
    """The rows to evaluate, media checked. Stops with a one-line error if some cannot be evaluated,
    unless ``skip_missing_images``; nothing has been generated at that point."""
    rows = read_benchmark(options.data, options.benchmark, options.schema, options.limit)
    if not rows:
        raise UserError(f"no rows in {options.data}")
    rows = check_rows(rows, options.image_root if options.image_root is not None else Path(options.data).parent)
    if any(row.problem for row in rows):
        if not options.skip_missing_images:
            raise UserError(
                describe_problems(rows) + "; pass --skip-missing-images to evaluate the others "
                "(or --image-root DIR to point at the images and videos)"
            )
        print("skipping " + describe_problems(rows), flush=True)
    if all(row.problem for row in rows):
        raise UserError("no row can be evaluated: " + describe_problems(rows))
    return rows


def chosen_first(rows: list[BenchmarkRow]) -> list[BenchmarkRow]:
    """The rows with every pair reordered so that the chosen response is Response 1 (label 1), as the
    released evaluation shows them; unreadable rows are left as they are."""
    return [
        replace(row, record=row.record.swapped(), label=1) if row.record is not None and row.label == 2 else row
        for row in rows
    ]


def _seed(base: int, index: int, order: int) -> int:
    return (base * 1_000_003 + 2 * index + order) % (2**31)


def _prediction(row: BenchmarkRow, sampled: Sampled | None, swapped: Sampled | None) -> dict[str, Any]:
    line: dict[str, Any] = {"index": row.index, "id": row.id, "category": row.category, "label": row.label}
    if row.category_paper_script:
        line["category_paper_script"] = row.category_paper_script
    if sampled is None:
        return {**line, "skipped": row.problem, "correct": None}
    choice = majority_vote(sampled.votes)
    line.update(
        votes=sampled.votes, choice=choice, vote_share=vote_share(sampled.votes, choice), correct=choice == row.label
    )
    if swapped is not None:  # swapped votes use the swapped numbering: its label is 3 - label
        choice_swapped = majority_vote(swapped.votes)
        line.update(
            votes_swapped=swapped.votes,
            choice_swapped=choice_swapped,
            correct_original=line["correct"],
            correct_swapped=choice_swapped == 3 - row.label,
        )
        line["correct"] = line["correct_original"] and line["correct_swapped"]
    return line


def _generate_all(
    options: EvalOptions, settings: EvalSettings, rows: list[BenchmarkRow], engine: Generator, processor: Any
) -> dict[int, tuple[Sampled, Sampled | None]]:
    """Row index -> (samples in the rows' order, samples in the swapped order or None)."""
    todo = [row for row in rows if not row.problem]
    orders = 2 if settings.swap else 1
    video = VideoSampling(options.video_fps, options.video_max_frames, options.min_pixels, options.max_pixels)
    out: dict[int, tuple[Sampled, Sampled | None]] = {}
    started = time.perf_counter()
    for first in range(0, len(todo), options.batch_rows):
        batch = todo[first : first + options.batch_rows]
        prompts, seeds = [], []
        for row in batch:
            record = row.record
            if record.is_video:
                prompt = video_prompt(processor, record, video, image_first=settings.image_first)
            else:
                prompt = rollout_prompt(
                    processor, record, options.min_pixels, options.max_pixels, image_first=settings.image_first
                )
            prompts.append(prompt)
            if settings.swap:  # the same decoded media, the responses in the other order
                prompts.append({**prompt, "prompt": render_prompt(processor, record.swapped(), settings.image_first)})
            seeds += [_seed(options.seed, row.index, order) for order in range(orders)]
        sampled = sample_votes(
            engine, prompts, options.k, settings.temperature, settings.max_tokens, seeds, top_p=settings.top_p
        )
        for i, row in enumerate(batch):
            pair = sampled[i * orders : (i + 1) * orders]
            out[row.index] = (pair[0], pair[1] if settings.swap else None)
        print(
            f"judged {min(first + len(batch), len(todo))}/{len(todo)} pairs ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return out


def run_eval(options: EvalOptions, engine: Generator | None = None, processor: Any = None) -> dict[str, Any]:
    """Evaluate and write the outputs; returns the metrics. ``engine``/``processor`` reuse what the
    caller already loaded (the engine is then left running); otherwise they load from ``model``."""
    options.check()
    if (engine is None or processor is None) and not options.model:
        raise UserError("--model is required")
    settings = resolve_protocol(
        options.protocol,
        options.model,
        options.temperature,
        options.max_tokens,
        options.swap,
        top_p=options.top_p,
        top_k=options.top_k,
    )
    out_dir = prepare_output_dir(options.out_dir)  # fail on a bad output path before the long part
    rows = prepare_rows(options)
    if settings.chosen_first:
        rows = chosen_first(rows)
    if processor is None:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(options.model)
    owned = engine is None
    if owned:
        config = eval_rollout_config(
            settings.max_tokens,
            settings.temperature,
            options.dtype,
            options.max_model_len,
            options.seed,
            options.gpu_memory_utilization,
            top_p=settings.top_p,
            top_k=settings.top_k,
        )
        # Video input only when there are video rows: enabling it makes vLLM reserve memory for a video.
        videos = any(row.record.is_video for row in rows if not row.problem)
        engine = start_engine(
            options.model,
            config,
            (options.min_pixels, options.max_pixels),
            options.workers,
            options.gpus_per_worker,
            max_videos=int(videos),
        )
    started = time.perf_counter()
    try:
        samples = _generate_all(options, settings, rows, engine, processor)
    finally:
        if owned:
            close_engine(engine)
    predictions = [_prediction(row, *samples.get(row.index, (None, None))) for row in rows]
    write_jsonl(predictions, out_dir / "predictions.jsonl")
    write_jsonl(
        (
            {
                "index": row.index,
                "id": row.id,
                "texts": samples[row.index][0].texts,
                "finish_reasons": samples[row.index][0].finish_reasons,
                "prompt_tokens": samples[row.index][0].prompt_tokens,
                **({"texts_swapped": samples[row.index][1].texts} if settings.swap else {}),
            }
            for row in rows
            if row.index in samples
        ),
        out_dir / "generations.jsonl",
    )
    metrics = compute_metrics(options.benchmark, rows, predictions)
    finishes = [f for pair in samples.values() for s in pair if s is not None for f in s.finish_reasons]
    metrics["run"] = {
        **{k: v for k, v in asdict(options).items() if k != "out_dir"},
        "settings": asdict(settings),
        "truncated_rate": sum(f == "length" for f in finishes) / max(len(finishes), 1),
        "generate_seconds": round(time.perf_counter() - started, 1),
    }
    write_reports(metrics, out_dir)
    return metrics


def recompute_metrics(
    benchmark: str, data: str, predictions_path: str, out_path: str, schema: str | None = None, limit: int | None = None
) -> dict[str, Any]:
    """``r1reward eval-metrics``: metrics of a predictions file joined to the benchmark file (no images
    needed), written to ``out_path`` (JSON) and beside it as Markdown (and the K plot, with votes)."""
    from r1reward.eval.report import markdown_table, plot_scaling, write_json

    out = Path(out_path)
    if not out.parent.is_dir():
        raise UserError(f"cannot write {out}: folder {out.parent} does not exist")
    rows = read_benchmark(data, benchmark, schema, limit)
    metrics = compute_metrics(benchmark, rows, read_jsonl(predictions_path))
    write_json(metrics, out)
    out.with_suffix(".md").write_text(markdown_table(metrics), encoding="utf-8")
    plot_scaling(metrics, out.with_suffix(".png"))
    return metrics
