"""Step time with asynchronous rollout (trainer.max_staleness=1) against the synchronous loop (0).

Both train the same random tiny Qwen2.5-VL on the same synthetic prompts with the tiny CPU config, one
after the other in one Ray session, `--repeats` times each (alternating, so that a slow spell of a shared
machine falls on both); per run the median step time over the steady steps 2 .. N-1 (step 1 warms the
engines and has nothing generated ahead; the last step starts nothing ahead), then per setting the
median over the repeats and their spread (largest minus smallest). The goal: eta=1 faster than eta=0 by
more than the spread. Both recompute the old log-probs on the learner (algo.old_logprobs=learner), which
samples generated ahead need, so that the two steps hold the same work.

By default the rollout worker and the one learner rank are pinned to cores of their own
(`resources.pin_cores=true`, `learner.num_ranks=1`: on 2 cores, one each), as separate GPUs would keep
them apart; the reward actor and the driver run on any core. `--shared-cores` runs the config as it is
(two learner ranks, every process on every core): there generation and training slow each other down.

    python -m benchmarks.staleness [--steps 12] [--repeats 3] [--shared-cores] [--out benchmarks/results/staleness.json]

`main(out_dir)` returns the result and writes `staleness.json` and `staleness.md` under out_dir;
`make bench` (benchmarks/run.py) runs it with the other comparisons and adds it to bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "tiny-cpu.yaml"
PINNED = ["resources.pin_cores=true", "learner.num_ranks=1"]


def _overrides(model: Path, data: Path, output_dir: Path, eta: int, steps: int, pinned: bool) -> list[str]:
    return [
        f"model.path={model}",
        f"data.train_path={data / 'train.parquet'}",
        f"trainer.output_dir={output_dir}",
        f"trainer.num_steps={steps}",
        f"trainer.save_every={steps}",
        f"trainer.max_staleness={eta}",
        # The same work in both: samples generated ahead need the learner's old log-probs, so the
        # synchronous run computes them too (its default would take the sampler's and skip that forward).
        "algo.old_logprobs=learner",
        *(PINNED if pinned else []),
    ]


def core_split(overrides: list[str]) -> dict[str, list[int]]:
    """Which cores each pinned role gets with these overrides on this machine ({} when none is pinned):
    the split the trainer makes at start-up (r1reward/placement/cores.py), or its one-line refusal."""
    from r1reward.config import load_config
    from r1reward.placement.cores import assign_cores
    from r1reward.placement.plan import ROLE_NAMES, make_plan

    config = load_config(CONFIG, overrides)
    if not config.resources.pin_cores:
        return {}
    plan = assign_cores(make_plan(config), sorted(os.sched_getaffinity(0)))
    return {f"{ROLE_NAMES[s.role].removeprefix('a ')} {s.rank}": list(s.cores) for s in plan.slots if s.cores}


def _run(overrides: list[str]) -> list[dict[str, Any]]:
    from r1reward.config import load_config
    from r1reward.trainer.driver import Trainer
    from r1reward.trainer.metrics import read_metrics

    config = load_config(CONFIG, overrides)
    Trainer(config).run()
    return read_metrics(Path(config.trainer.output_dir) / "metrics.jsonl")


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows[1:-1])


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One setting over its repeats: the median of the runs' median step times and their spread."""
    medians = [r["median_step_s"] for r in runs]
    return {
        "median_step_s": statistics.median(medians),
        "spread_s": max(medians) - min(medians),
        "repeat_median_step_s": medians,
        "median_generate_s": statistics.median(r["median_generate_s"] for r in runs),
        "median_idle_rollout": statistics.median(r["median_idle_rollout"] for r in runs),
        "median_idle_learner": statistics.median(r["median_idle_learner"] for r in runs),
        "runs": runs,
    }


def verdict(eta0: dict[str, Any], eta1: dict[str, Any]) -> dict[str, Any]:
    """eta=1 against eta=0: its speed-up, and the speed-up the larger of the two spreads would give on
    its own (the goal to beat)."""
    spread = max(eta0["spread_s"], eta1["spread_s"])
    gain = eta0["median_step_s"] - eta1["median_step_s"]
    return {
        "ratio_eta1_over_eta0": eta1["median_step_s"] / eta0["median_step_s"],
        "speedup_eta1": eta0["median_step_s"] / eta1["median_step_s"],
        "goal_speedup": (eta1["median_step_s"] + spread) / eta1["median_step_s"],
        "gain_s": gain,
        "spread_s": spread,
        "faster_beyond_spread": gain > spread,
    }


def main(
    out_dir: str | Path, steps: int = 12, repeats: int = 3, pinned: bool = True, work_dir: str | Path | None = None
) -> dict[str, Any]:
    import ray

    from r1reward.data.synthetic import make_synthetic_data
    from r1reward.models.tiny import make_tiny_model

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if steps < 3:
        raise ValueError("steps must be >= 3: the first and the last step are left out of the medians")
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        work = Path(tmp)
        model = make_tiny_model(work / "model", seed=0, size="tiny")
        make_synthetic_data(work / "data", num=64, seed=0)
        cores = core_split(_overrides(model, work / "data", work, 0, steps, pinned))  # refused here if it cannot
        started = not ray.is_initialized()
        if started:
            ray.init(num_cpus=8, include_dashboard=False)
        runs: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
        try:
            for repeat in range(repeats):
                for eta in (0, 1):
                    begin = time.perf_counter()
                    out = work / f"repeat{repeat}-eta{eta}"
                    rows = _run(_overrides(model, work / "data", out, eta, steps, pinned))
                    runs[eta].append(
                        {
                            "median_step_s": _median(rows, "time/step"),
                            "step_s": [r["time/step"] for r in rows],
                            "median_idle_rollout": _median(rows, "idle/rollout"),
                            "median_idle_learner": _median(rows, "idle/learner"),
                            "median_generate_s": _median(rows, "time/generate"),
                            "median_train_s": _median(rows, "time/train"),
                            "median_rollout_wait_s": _median(rows, "time/rollout_wait"),
                            "staleness_1_samples": sum(r.get("staleness/1", 0) for r in rows),
                            "run_s": time.perf_counter() - begin,
                            "load_average_after": os.getloadavg()[0],  # others' work shares the cores
                        }
                    )
        finally:
            if started:
                ray.shutdown()
    eta0, eta1 = summarise(runs[0]), summarise(runs[1])
    result = {
        "what": "median step time, trainer.max_staleness=1 against 0 (steps 2..N-1), tiny CPU config"
        + (", rollout worker and learner rank on cores of their own" if pinned else ", every process on every core"),
        "steps": steps,
        "repeats": repeats,
        "pinned": pinned,
        "overrides": PINNED if pinned else [],
        "cores": cores,
        **verdict(eta0, eta1),
        "eta0": eta0,
        "eta1": eta1,
    }
    (out_dir / "staleness.json").write_text(json.dumps(result, indent=1))
    (out_dir / "staleness.md").write_text(_markdown(result))
    return result


def _markdown(result: dict[str, Any]) -> str:
    from benchmarks.report import staleness_section

    return f"# Asynchronous rollout: step time\n\n{staleness_section(result)}\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shared-cores", action="store_true", help="no pinning: the config's two learner ranks")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "staleness.json"))
    args = parser.parse_args()
    print(json.dumps(main(Path(args.out).parent, args.steps, args.repeats, not args.shared_cores), indent=1))
