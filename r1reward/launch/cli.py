"""`r1reward-launch`: plan the placement, check it against the cluster, then train.

Without an address it checks the plan against --nodes x --gpus-per-node and trains on a local Ray
(in this process). With --address or RAY_ADDRESS it reads the live cluster's nodes, submits the
training as a Ray job and follows its logs. `--dry-run` prints the plan and the command or job; it
starts nothing.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from r1reward.errors import UserError

if TYPE_CHECKING:
    from r1reward.config import Config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="r1reward-launch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--nodes",
        type=int,
        help="nodes in the cluster (required without an address; with one, "
        "the live cluster must have at least this many)",
    )
    p.add_argument("--gpus-per-node", type=int, default=8, help="without an address (default 8)")
    p.add_argument("--cpus-per-node", type=int, default=32, help="without an address (default 32)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--rollout-gpus", type=int, help="GPUs for rollout workers; the rest train")
    split.add_argument(
        "--ratio",
        help="rollout:learner GPUs, e.g. 1:3; `auto` predicts each feasible split's step time from --profile "
        "and takes the fastest",
    )
    p.add_argument("--profile", type=Path, help="with --ratio auto: the JSON `r1reward profile` wrote")
    p.add_argument("--config", default="configs/paper-qwen2.5-vl-7b.yaml")
    p.add_argument(
        "--address",
        help="a Ray cluster to submit to: its dashboard http://HOST:8265 or its GCS "
        "HOST:6379 (default: $RAY_ADDRESS; neither: train on a local Ray)",
    )
    p.add_argument("--working-dir", type=Path, help="uploaded with the job (default: the repository root)")
    p.add_argument(
        "--python",
        default="python",
        help="interpreter of the job's entrypoint on the head node "
        "(default: `python` on the cluster's PATH, i.e. the image's or the activated venv's)",
    )
    p.add_argument(
        "--pipeline",
        action="store_true",
        help="run the whole pipeline (r1reward pipeline: SFT, RL from its checkpoint, evaluation; "
        "docs/pipeline.md) rather than RL alone; the plan checked is RL's, its largest stage",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan and the command or job; start nothing")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def _fixed_nodes(args: argparse.Namespace) -> list[dict[str, float]]:
    if args.nodes is None:
        raise UserError("--nodes is required without --address or RAY_ADDRESS")
    if args.nodes <= 0:
        raise UserError(f"--nodes must be positive, got {args.nodes}")
    return [{"GPU": float(args.gpus_per_node), "CPU": float(args.cpus_per_node)} for _ in range(args.nodes)]


def _submit_and_follow(client, api_url: str, spec) -> int:
    from r1reward.launch import jobs

    job_id = jobs.submit(client, spec)
    print(f"submitted job {job_id}; following its logs (Ctrl-C stops following, not the job)", flush=True)
    try:
        status = jobs.follow(client, job_id)
    except KeyboardInterrupt:  # the job is the cluster's now: say how to stop it
        print(
            f"\nr1reward-launch: stopped following; job {job_id} keeps running. Stop it with: "
            f"ray job stop {job_id} --address {api_url}",
            file=sys.stderr,
            flush=True,
        )
        return 130
    if status == "SUCCEEDED":
        print(f"job {job_id} succeeded")
        return 0
    print(f"r1reward-launch: job {job_id} {status}: {jobs.failure_message(client, job_id)}", file=sys.stderr)
    return 1


def _train_here(config: Config, command: str) -> int:
    """What the printed command (`r1reward train` or `r1reward pipeline`) does, in this process, on the
    config already loaded and split above (the same one the command line would load)."""
    try:
        if command == "pipeline":
            from r1reward.trainer.pipeline import run_pipeline

            run_pipeline(config)
            return 0
        from r1reward.trainer.driver import Trainer

        result = Trainer(config).run()
    except KeyboardInterrupt:
        print("r1reward-launch: interrupted", file=sys.stderr)
        return 130
    print(f"finished at step {result['step']}; last checkpoint: {result['checkpoint']}")
    return 0


def _auto_split(config: Config, nodes: list[dict[str, float]], profile: Path | None) -> Config:
    """Print every feasible rollout:learner split's predicted step time and idle fractions (the step-time
    model, r1reward/placement/stepmodel.py) and return `config` with the fastest."""
    from r1reward.placement.plan import with_split
    from r1reward.placement.stepmodel import (
        device_unit,
        devices_of,
        format_predictions,
        load_step_model,
        predict_splits,
    )

    if profile is None:
        raise UserError("--ratio auto needs --profile FILE (write one with `r1reward profile --config FILE`)")
    model = load_step_model(profile)
    if model.model_path and model.model_path != config.model.path:
        print(
            f"r1reward-launch: note: the profile measured {model.model_path}, the config trains {config.model.path}: "
            f"the prediction holds for the model profiled",
            file=sys.stderr,
        )
    predictions, best = predict_splits(config, nodes, model)
    unit = device_unit(config)[0]
    print(f"predicted synchronous step per rollout:learner split (profile {profile}; seconds; * = chosen):")
    print(format_predictions(predictions, best, lambda s: devices_of(config, s), unit))
    print(
        f"chosen: {best.split.rollout_workers} rollout workers, {best.split.learner_ranks} learner ranks: "
        f"{best.step_s:.3g} s per step (the fastest; within 1% of it, the fewest {unit}s, then the fewest "
        f"learner {unit}s)"
    )
    return with_split(config, best.split.rollout_workers, best.split.learner_ranks)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    try:
        from r1reward.config import load_config
        from r1reward.placement.plan import (
            PlacementError,
            apply_ratio,
            fit_to_nodes,
            format_plan,
            make_plan,
            parse_ratio,
        )

        config = load_config(args.config, args.overrides)
        if address:
            from r1reward.launch import jobs

            client, api_url = jobs.connect(address)
            nodes = jobs.live_nodes(api_url)
            where = f"the live cluster at {api_url}"
            if args.nodes is not None and len(nodes) < args.nodes:
                raise PlacementError(
                    f"--nodes {args.nodes}, but {where} has {len(nodes)} alive nodes: wait for "
                    f"the rest to join (`ray status`) or lower --nodes"
                )
        else:
            nodes, where = _fixed_nodes(args), f"{args.nodes} nodes x {args.gpus_per_node} GPUs"
        if args.profile is not None and args.ratio != "auto":
            raise UserError("--profile is read with --ratio auto only")
        if args.ratio == "auto":
            config = _auto_split(config, nodes, args.profile)
        else:
            split = parse_ratio(args.ratio) if args.ratio else args.rollout_gpus
            if split is not None:
                config = apply_ratio(config, sum(n.get("GPU", 0.0) for n in nodes), split)
        plan = make_plan(config)
        try:
            assignment = fit_to_nodes(plan, nodes)
        except PlacementError as e:
            raise PlacementError(f"{e} (nodes read from {where})" if address else str(e)) from None
        print(f"placement on {where}:")
        print(format_plan(plan, assignment, nodes))
        # The chosen split travels as overrides, so the job trains exactly the plan shown.
        overrides = [
            *args.overrides,
            f"rollout.num_workers={config.rollout.num_workers}",
            f"learner.num_ranks={config.learner.num_ranks}",
        ]
        command = "pipeline" if args.pipeline else "train"
        if not address:
            print("command:", shlex.join(["r1reward", command, "--config", args.config, *overrides]))
            if args.dry_run:
                return 0
            return _train_here(config, command)
        working_dir = (args.working_dir or jobs.repo_root()).resolve()
        spec = jobs.build_job(args.config, overrides, working_dir, args.python, command)
        print(spec.describe(api_url), flush=True)
        for note in jobs.path_notes(config, working_dir, command):
            print(f"r1reward-launch: note: {note}", file=sys.stderr)
        if args.dry_run:
            return 0
        return _submit_and_follow(client, api_url, spec)
    except UserError as e:
        print(f"r1reward-launch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
