"""`r1reward-launch`: plan the placement for a cluster of N nodes x G GPUs, check it, then train.

The plan is fitted to the nodes before anything starts; `--dry-run` prints it and the command it
would run. (Submitting through the Ray Jobs API is `ray job submit ... -- r1reward train ...`.)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

from r1reward.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="r1reward-launch", description=__doc__)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--cpus-per-node", type=int, default=32)
    split = p.add_mutually_exclusive_group()
    split.add_argument("--rollout-gpus", type=int, help="GPUs for rollout workers; the rest train")
    split.add_argument("--ratio", help="rollout:learner GPUs, e.g. 1:3")
    p.add_argument("--config", default="configs/paper-qwen2.5-vl-7b.yaml")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the command; start nothing")
    p.add_argument("overrides", nargs="*", help="key=value config overrides")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from r1reward.config import load_config
        from r1reward.launch.plan import apply_ratio, fit_to_nodes, format_plan, make_plan, parse_ratio

        if args.nodes <= 0:
            raise UserError(f"--nodes must be positive, got {args.nodes}")
        config = load_config(args.config, args.overrides)
        nodes = [{"GPU": float(args.gpus_per_node), "CPU": float(args.cpus_per_node)} for _ in range(args.nodes)]
        split = parse_ratio(args.ratio) if args.ratio else args.rollout_gpus
        if split is not None:
            config = apply_ratio(config, float(args.nodes * args.gpus_per_node), split)
        plan = make_plan(config)
        print(format_plan(plan, fit_to_nodes(plan, nodes), nodes))
        command = ["r1reward", "train", "--config", args.config, *args.overrides,
                   f"rollout.num_workers={config.rollout.num_workers}", f"learner.num_ranks={config.learner.num_ranks}"]
        print("command:", shlex.join(command))
        if args.dry_run:
            return 0
        from r1reward.cli import main as r1reward_main

        return r1reward_main(command[1:])
    except UserError as e:
        print(f"r1reward-launch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
