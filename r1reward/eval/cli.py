"""The evaluation subcommands of ``r1reward``: eval, eval-metrics and score.

``r1reward.cli`` calls ``add_commands(subparsers, command)``; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from r1reward.data.render import MAX_PIXELS, MIN_PIXELS
from r1reward.data.video import VIDEO_FPS, VIDEO_MAX_FRAMES
from r1reward.eval.benchmarks import BENCHMARKS
from r1reward.eval.protocol import PROTOCOLS

_EVAL_HELP = (
    "evaluate a model on VL-RewardBench, Multimodal RewardBench or MM-RLHF-RewardBench: "
    "K samples per pair, majority vote, per-category metrics, Voting@K/Any@K"
)


def add_engine_options(p: argparse.ArgumentParser) -> None:
    """How each vLLM engine is built: shared by `eval`, `score` and `serve`."""
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="Ray GPUs per engine (default 1 on a GPU machine, 0 on the CPU)",
    )
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--dtype", default="auto", help="auto: bfloat16 on a GPU, float32 on the CPU")
    p.add_argument("--max-model-len", type=int, default=None, help="default: the model's own limit")
    p.add_argument("--min-pixels", type=int, default=MIN_PIXELS)
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="image size bound (default 640*28*28)")


def load_reward_model(args: argparse.Namespace) -> Any:
    """`RewardModel.load` with the model and engine options of `score` and `serve` (a context manager)."""
    from r1reward.eval.api import RewardModel

    return RewardModel.load(
        args.model,
        workers=args.workers,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        seed=args.seed,
        gpus_per_worker=args.gpus_per_worker,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder (Hugging Face format)")
    p.add_argument("--k", type=int, default=1, help="samples per pair; the majority vote decides (default 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (paper: 1.0)")
    p.add_argument("--max-tokens", type=int, default=1024, help="generation limit per sample (paper: 1024)")
    p.add_argument("--workers", type=int, default=1, help="vLLM engines; more than 1 runs them as Ray actors")
    add_engine_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--image-root", default=None, help="folder image paths are relative to (default: the data file's folder)"
    )
    p.add_argument(
        "--skip-missing-images",
        action="store_true",
        help="skip rows whose images or videos are missing or undecodable instead of stopping",
    )


def add_commands(subparsers: Any, command: Callable[[str], Callable]) -> None:
    """Add the eval, eval-metrics and score subcommands to ``subparsers`` and register their runners."""
    p = subparsers.add_parser("eval", help=_EVAL_HELP, description=_EVAL_HELP)
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--data", required=True, help="the benchmark file (JSONL/parquet)")
    p.add_argument(
        "--schema", default=None, help="file format if not the benchmark's released one (e.g. vl-rewardbench-hub)"
    )
    _add_engine_options(p)
    p.add_argument("--top-p", type=float, default=None, help="nucleus cut (default: the protocol's)")
    p.add_argument("--top-k", type=int, default=None, help="top-k cut, 0 for none (default: the protocol's)")
    # None = not given: the protocol decides (explicit flags win over it).
    p.set_defaults(temperature=None, max_tokens=None)
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="default",
        help="default: --temperature (1.0), --max-tokens (1024), the file's response order, prompt "
        "text first as trained; released: as the released R1-Reward scripts (the checkpoint's "
        "generation_config.json, 4096 tokens, chosen response first, image first)",
    )
    p.add_argument(
        "--swap", action="store_true", help="judge both response orders; a pair is correct only if right in both"
    )
    p.add_argument("--limit", type=int, default=None, help="only the first N rows of the file")
    p.add_argument("--batch-rows", type=int, default=256, help="rows per generation batch")
    p.add_argument(
        "--video-fps",
        type=float,
        default=VIDEO_FPS,
        help="frames per second taken from a video file (default %(default)s; a folder of frames is spread evenly)",
    )
    p.add_argument(
        "--video-max-frames",
        type=int,
        default=VIDEO_MAX_FRAMES,
        help="most frames per video, even (default %(default)s: the released MM-RLHF-RewardBench evaluation's)",
    )
    p.add_argument("--out", required=True, help="output folder")

    p = subparsers.add_parser("eval-metrics", help="recompute benchmark metrics from a predictions file")
    p.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    p.add_argument("--data", required=True, help="the benchmark file the predictions were made on")
    p.add_argument("--schema", default=None)
    p.add_argument("--predictions", required=True, help="JSONL, one line per benchmark row with id and correct")
    p.add_argument("--limit", type=int, default=None, help="the --limit the eval ran with")
    p.add_argument("--out", required=True, help="metrics JSON file to write (Markdown goes beside it)")

    p = subparsers.add_parser("score", help="judge the pairs of a canonical-schema JSONL file")
    _add_engine_options(p)
    p.add_argument("--pairs", required=True, help="JSONL: id, question, images, response_1, response_2[, label]")
    p.add_argument("--out", required=True, help="output JSONL file")

    command("eval")(_eval)
    command("eval-metrics")(_eval_metrics)
    command("score")(_score)


def _eval(args: argparse.Namespace) -> None:
    from r1reward.eval.runner import EvalOptions, run_eval

    options = EvalOptions(
        benchmark=args.benchmark,
        data=args.data,
        out_dir=args.out,
        model=args.model,
        image_root=args.image_root,
        schema=args.schema,
        k=args.k,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        top_p=args.top_p,
        top_k=args.top_k,
        swap=args.swap,
        workers=args.workers,
        limit=args.limit,
        skip_missing_images=args.skip_missing_images,
        seed=args.seed,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        batch_rows=args.batch_rows,
        video_fps=args.video_fps,
        video_max_frames=args.video_max_frames,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        gpus_per_worker=args.gpus_per_worker,
        gpu_memory_utilization=args.gpu_memory_utilization,
        protocol=args.protocol,
    )
    metrics = run_eval(options)
    print(summary_line(metrics) + f"; wrote {args.out}/metrics.json, metrics.md, predictions.jsonl")


def _eval_metrics(args: argparse.Namespace) -> None:
    from r1reward.eval.runner import recompute_metrics

    metrics = recompute_metrics(args.benchmark, args.data, args.predictions, args.out, args.schema, args.limit)
    print(summary_line(metrics) + f"; wrote {args.out}")


def _score(args: argparse.Namespace) -> None:
    from r1reward.errors import UserError
    from r1reward.eval.score import load_pairs, score_pairs

    if args.k < 1:
        raise UserError(f"--k must be at least 1, got {args.k}")
    if not Path(args.out).absolute().parent.is_dir():
        raise UserError(f"cannot write {args.out}: its folder does not exist")
    rows = load_pairs(args.pairs, args.image_root, args.skip_missing_images)  # fails before the model loads
    with load_reward_model(args) as model:
        summary = score_pairs(model, rows, args.out, k=args.k)
    accuracy = "" if summary["accuracy"] is None else f"; accuracy {100 * summary['accuracy']:.2f}%"
    print(f"judged {summary['judged']} of {summary['pairs']} pairs{accuracy}; wrote {args.out}")


def summary_line(metrics: dict[str, Any]) -> str:
    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    parts = [
        f"{metrics['benchmark']}: overall {pct(metrics['overall'])} ({metrics['correct']}/{metrics['evaluated']})",
        f"macro {pct(metrics['macro'])}",
    ]
    if "acc_plus" in metrics:
        parts.append(f"Acc+ {pct(metrics['acc_plus'])}")
    if "parse_failure_rate" in metrics:
        parts.append(f"parse failures {pct(metrics['parse_failure_rate'])}")
    if metrics.get("skipped"):
        parts.append(f"skipped {metrics['skipped']} rows")
    return "; ".join(parts)
