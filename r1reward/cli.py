"""The `r1reward` command: one subcommand per job. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from r1reward.errors import UserError
from r1reward.paths import prepare_output_dir

COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


@command("make-tiny-model")
def _make_tiny_model(args: argparse.Namespace) -> None:
    from r1reward.models.tiny import make_tiny_model

    out = prepare_output_dir(args.out_dir)
    make_tiny_model(out, seed=args.seed, size=args.size)
    print(f"wrote a {args.size} Qwen2.5-VL (seed {args.seed}) to {out}")


@command("make-synthetic-data")
def _make_synthetic_data(args: argparse.Namespace) -> None:
    from r1reward.data.synthetic import make_synthetic_data

    if args.num <= 0:
        raise UserError(f"--num must be positive, got {args.num}")
    out = prepare_output_dir(args.out_dir)
    paths = make_synthetic_data(out, num=args.num, seed=args.seed)
    print(f"wrote {args.num} examples: " + ", ".join(str(p) for p in paths.values()))


@command("sft-local")
def _sft_local(args: argparse.Namespace) -> None:
    from r1reward.learner.sft_local import sft_local

    for path in (args.model_dir, args.sft_data):
        if not Path(path).exists():
            raise UserError(f"not found: {path}")
    out = prepare_output_dir(args.out_dir)
    losses = sft_local(args.model_dir, args.sft_data, out, steps=args.steps, lr=args.lr)
    print(f"cold-start SFT: loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps; saved to {out}")


@command("sft")
def _sft(args: argparse.Namespace) -> None:
    from r1reward.config import load_config
    from r1reward.trainer.sft import SFTTrainer

    result = SFTTrainer(load_config(args.config, args.overrides)).run()
    print(f"SFT finished at step {result['step']}; model: {result['hf']}")


@command("train")
def _train(args: argparse.Namespace) -> None:
    from r1reward.config import load_config
    from r1reward.trainer.driver import train

    config = load_config(args.config, args.overrides)
    result = train(config)
    print(f"finished at step {result['step']}; last checkpoint: {result['checkpoint']}")


@command("profile")
def _profile(args: argparse.Namespace) -> None:
    import tempfile

    from r1reward.config import load_config
    from r1reward.trainer.profile import check_profile_args, profile, write_profile

    check_profile_args(args.steps, tuple(args.batch_multipliers))
    config = load_config(args.config, args.overrides)
    if not Path(config.model.path).exists() and config.model.path.startswith(("/", ".", "runs/")):
        raise UserError(f"model.path does not exist: {config.model.path}")
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="r1reward-profile-"))
    data = profile(config, args.steps, run_dir, tuple(args.batch_multipliers))
    write_profile(data, Path(args.out))
    rates, sync = data["throughput"], data["phases"]["sync"]

    def rate(key: str, unit: str) -> str:  # None: the phase did not grow with its work (latency-bound)
        return f"{rates[key]:.4g} {unit}" if rates[key] is not None else "latency-bound"

    print(
        f"wrote {args.out} (run in {run_dir}): rollout {rate('rollout_tokens_per_s_per_worker', 'tokens/s')} per "
        f"worker; learner {rate('learner_logprob_samples_per_s_per_rank', 'samples/s')} log-probs, "
        f"{rate('learner_train_samples_per_s_per_rank', 'samples/s')} training per rank; reward "
        f"{rate('reward_samples_per_s', 'samples/s')}; sync {sync['latency_s']:.3g} s + "
        f"{sync['seconds_per_unit']:.3g} s/byte"
    )


@command("select-hard")
def _select_hard(args: argparse.Namespace) -> None:
    from r1reward.config import load_config
    from r1reward.trainer.hard_examples import Sampler, records_of, select_hard, summarise, write_hard

    config = load_config(args.config, args.overrides)
    if args.rule == "teacher-tries":
        from r1reward.data.annotations import ANNOTATIONS_FILE, read_annotations
        from r1reward.trainer.hard_examples import select_by_teacher_tries

        if not args.annotations:
            raise UserError("--rule teacher-tries needs --annotations (r1reward annotate's --out folder or its file)")
        where = Path(args.annotations)
        where = where / ANNOTATIONS_FILE if where.is_dir() else where
        if not where.is_file():
            raise UserError(f"annotations not found: {where}")
        records = records_of(args.data, args.schema, config)
        hard = select_by_teacher_tries(records, read_annotations(where), str(where))
        write_hard(hard, args.out)
        print(f"kept {len(hard)} of {len(records)} pairs (teacher needed 2+ tries or failed) -> {args.out}")
        return
    if not args.model or not Path(args.model).exists():
        raise UserError(f"--rule model-samples needs --model, a model folder; got {args.model}")
    records = records_of(args.data, args.schema, config)  # the sampling starts (or joins) Ray on its own plan
    with Sampler(args.model, config) as sampler:
        choices = sampler.choices(records, k=args.k)
    hard = select_hard(records, choices)
    write_hard(hard, args.out)
    stats = summarise(choices, records, len(hard))
    print(
        f"kept {len(hard)} of {len(records)} pairs "
        f"(accuracy over {args.k} samples: {stats['accuracy']:.3f}) -> {args.out}"
    )


@command("annotate")
def _annotate(args: argparse.Namespace) -> int:
    from r1reward.trainer.annotate import annotate
    from r1reward.trainer.teacher import TeacherClient

    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    client = TeacherClient(
        args.teacher_url,
        args.teacher_model,
        api_key,
        timeout_s=args.request_timeout,
        max_attempts=args.max_attempts,
        max_backoff_s=args.max_backoff,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
    )
    out = prepare_output_dir(args.out)
    swap_seed = None if args.keep_order else args.swap_seed
    report = annotate(
        args.data, args.schema, out, client, args.tries, args.concurrency, args.image_root, swap_seed=swap_seed
    )
    levels = ", ".join(f"{k}: {v}" for k, v in report["difficulty"].items())
    print(
        f"annotated {report['pairs']} of {report['total_pairs']} pairs ({levels}); SFT {report['sft_pairs']}, "
        f"RL {report['rl_pairs']}; {report['tokens']['total']} tokens -> {out}"
    )
    if report["errors"]:
        print(f"{report['errors']} pairs got no answer (rerun to ask them again); first: {report['first_error']}")
        return 1
    return 0


@command("pipeline")
def _pipeline(args: argparse.Namespace) -> None:
    from r1reward.config import load_config
    from r1reward.trainer.pipeline import run_pipeline

    run_pipeline(load_config(args.config, args.overrides), dry_run=args.dry_run)


def _data_args(args: argparse.Namespace):
    """(config, data path, schema) for check-data/prepare-data: the flags win over the config's data section."""
    from r1reward.config import load_config

    config = load_config(args.config, args.overrides)
    return config, args.data or config.data.train_path, args.schema or config.data.schema


@command("check-data")
def _check_data(args: argparse.Namespace) -> int:
    import json

    from r1reward.data.check import check_data

    config, data, schema = _data_args(args)
    result = check_data(data, schema, config, image_root=args.image_root)
    print(json.dumps(result, indent=1))
    return 0 if result["loaded"] else 1


@command("prepare-data")
def _prepare_data(args: argparse.Namespace) -> int:
    import json

    from r1reward.data.prepare import prepare_data

    config, data, schema = _data_args(args)
    out = prepare_output_dir(args.out)
    result = prepare_data(data, schema, out, config, image_root=args.image_root)
    print(json.dumps(result, indent=1))
    return 0 if result["converted"] else 1


@command("print-config")
def _print_config(args: argparse.Namespace) -> None:
    from r1reward.config import load_config, to_yaml

    print(to_yaml(load_config(args.config, args.overrides)), end="")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="r1reward", description=__doc__)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show every actor's log (vLLM, Ray, DeepSpeed) on the terminal, not only in OUT/logs",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-tiny-model", help="write a random tiny Qwen2.5-VL in Hugging Face format")
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=["tiny", "small"], default="tiny")

    p = sub.add_parser("make-synthetic-data", help="write a synthetic multimodal preference set")
    p.add_argument("out_dir")
    p.add_argument("--num", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("sft-local", help="cold-start SFT in one process (teaches the output format)")
    p.add_argument("model_dir")
    p.add_argument("sft_data", help="canonical JSONL with a `target` column, e.g. make-synthetic-data's sft.jsonl")
    p.add_argument("out_dir")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--lr", type=float, default=3e-3)

    p = sub.add_parser("sft", help="cold-start SFT on the DeepSpeed learner ranks (loss on the target tokens)")
    p.add_argument("--config", default=None)
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sft.num_epochs=2")

    p = sub.add_parser("train", help="RL training (StableReinforce) on Ray: rollout, reward, learners, sync")
    p.add_argument("--config", default=None)
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.num_steps=10")

    p = sub.add_parser(
        "profile", help="a few real RL steps -> per-role throughputs for r1reward-launch --ratio auto (JSON)"
    )
    p.add_argument("--config", default=None)
    p.add_argument(
        "--steps",
        type=int,
        default=10,
        help="steps of the run, cycling through the batch sizes; each size's first step is its warm-up, "
        "left out (default 10)",
    )
    p.add_argument("--out", default="profile.json")
    p.add_argument(
        "--batch-multipliers",
        type=int,
        nargs="+",
        default=[1, 2],
        metavar="M",
        help="the steps cycle through M x trainer.rollout_batch_size prompts; two or more sizes separate each "
        "phase's fixed latency from its throughput (default: 1 2)",
    )
    p.add_argument("--run-dir", default=None, help="where the run writes (default: a new temporary folder)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. rollout.num_workers=1")

    p = sub.add_parser(
        "select-hard",
        help="hard examples for RL (RL parquet): the paper's rule (teacher tries) or the project's (K model samples)",
    )
    p.add_argument(
        "--rule",
        choices=["teacher-tries", "model-samples"],
        default="teacher-tries",
        help="teacher-tries (default, the paper's): pairs the annotating teacher needed 2+ tries for or failed; "
        "model-samples (the project's own, for data without annotations): pairs --model does not solve in all "
        "--k samples",
    )
    p.add_argument("--annotations", default=None, help="teacher-tries: r1reward annotate's --out folder or its file")
    p.add_argument("--model", default=None, help="model-samples: the model that samples")
    p.add_argument("--data", required=True)
    p.add_argument("--schema", default="r1reward-rl")
    p.add_argument("--k", type=int, default=4, help="model-samples: samples per pair (default 4)")
    p.add_argument("--out", required=True)
    p.add_argument("--config", default=None)
    p.add_argument("overrides", nargs="*")

    p = sub.add_parser(
        "annotate", help="label pairs with an OpenAI-compatible teacher (tries = difficulty) -> SFT + RL sets"
    )
    p.add_argument("--teacher-url", required=True, help="the endpoint's base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--teacher-model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--schema", required=True)
    p.add_argument("--out", required=True, help="folder; a rerun with the same folder resumes")
    p.add_argument("--tries", type=int, default=3, help="tries per pair, the paper's 3 (default)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    p.add_argument("--api-key-env", default=None, help="environment variable holding the API key (none: no key)")
    p.add_argument("--temperature", type=float, default=0.0, help="the paper's 0 (default)")
    p.add_argument("--max-tokens", type=int, default=4096)
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request (default 120)")
    p.add_argument("--max-attempts", type=int, default=6, help="attempts per request on 429/5xx/timeouts (default 6)")
    p.add_argument("--max-backoff", type=float, default=60.0, help="longest wait between attempts, s (default 60)")
    p.add_argument("--image-root", default=None, help="folder relative image paths are taken from")
    p.add_argument("--swap-seed", type=int, default=0, help="seeds the swap that balances labels 1 and 2 (default 0)")
    p.add_argument("--keep-order", action="store_true", help="ask in the file's response order, no balancing")

    p = sub.add_parser(
        "pipeline",
        help="[annotate] -> cold-start SFT -> [hard examples] -> RL from the SFT checkpoint -> evaluation, as "
        "recorded stages: a rerun skips what is done and resumes what was interrupted (docs/pipeline.md)",
    )
    p.add_argument("--config", default=None)
    p.add_argument(
        "--dry-run", action="store_true", help="print the stages, their inputs and outputs; load and start nothing"
    )
    p.add_argument("overrides", nargs="*")

    for name, text in (
        ("check-data", "load a data file as training would; print counts and bad rows as JSON"),
        ("prepare-data", "convert a data file to OUT/train.parquet + OUT/images/ (relative paths)"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--schema", default=None, help="file schema (default: the config's data.schema)")
        p.add_argument("--data", default=None, help="file or folder of shards (default: data.train_path)")
        p.add_argument(
            "--image-root",
            default=None,
            help="folder relative image paths are taken from (default: data.image_root, else the data file's folder)",
        )
        if name == "prepare-data":
            p.add_argument("--out", required=True, help="output folder")
        p.add_argument("--config", default=None)
        p.add_argument(
            "overrides",
            nargs="*",
            help="key=value overrides, e.g. 'data.image_path_map={/mmu_mllm_hdd/yfzhang/data/: /data/images/}'",
        )

    p = sub.add_parser("print-config", help="print the resolved, validated configuration")
    p.add_argument("--config", default=None)
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. trainer.num_steps=10")

    from r1reward.eval.cli import add_commands

    add_commands(sub, command)  # eval, eval-metrics, score
    from r1reward.serve.cli import add_command as add_serve_command

    add_serve_command(sub, command)  # serve
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verbose:  # read by ensure_ray in this process (and by Ray jobs it submits)
        os.environ["R1REWARD_VERBOSE"] = "1"
    try:
        return COMMANDS[args.command](args) or 0
    except UserError as e:
        print(f"r1reward {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"r1reward {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
