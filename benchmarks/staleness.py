"""Step time with asynchronous rollout (trainer.max_staleness=1) against the synchronous loop (0).

Both runs train the same random tiny Qwen2.5-VL on the same synthetic prompts with the tiny CPU config
(one vLLM rollout worker, two DeepSpeed learner ranks), one after the other in one Ray session; the
result is the ratio of their median step times over the steady steps 2 .. N-1 (step 1 warms the engines
and has nothing generated ahead; the last step starts nothing ahead), with each role's median idle
fraction over the same steps.

    python -m benchmarks.staleness [--steps 12] [--out benchmarks/results/staleness.json]

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


def _run(model: Path, data: Path, output_dir: Path, eta: int, steps: int) -> list[dict[str, Any]]:
    from r1reward.config import load_config
    from r1reward.trainer.driver import Trainer
    from r1reward.trainer.metrics import read_metrics

    config = load_config(
        ROOT / "configs" / "tiny-cpu.yaml",
        [
            f"model.path={model}",
            f"data.train_path={data / 'train.parquet'}",
            f"trainer.output_dir={output_dir}",
            f"trainer.num_steps={steps}",
            f"trainer.save_every={steps}",
            f"trainer.max_staleness={eta}",
        ],
    )
    Trainer(config).run()
    return read_metrics(output_dir / "metrics.jsonl")


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows[1:-1])


def main(out_dir: str | Path, steps: int = 12, work_dir: str | Path | None = None) -> dict[str, Any]:
    import ray

    from r1reward.data.synthetic import make_synthetic_data
    from r1reward.models.tiny import make_tiny_model

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if steps < 3:
        raise ValueError("steps must be >= 3: the first and the last step are left out of the medians")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        work = Path(tmp)
        model = make_tiny_model(work / "model", seed=0, size="tiny")
        make_synthetic_data(work / "data", num=64, seed=0)
        started = not ray.is_initialized()
        if started:
            ray.init(num_cpus=8, include_dashboard=False)
        runs = {}
        try:
            for eta in (0, 1):
                begin = time.perf_counter()
                rows = _run(model, work / "data", work / f"eta{eta}", eta, steps)
                runs[eta] = {
                    "median_step_s": _median(rows, "time/step"),
                    "step_s": [r["time/step"] for r in rows],
                    "median_idle_rollout": _median(rows, "idle/rollout"),
                    "median_idle_learner": _median(rows, "idle/learner"),
                    "median_generate_s": _median(rows, "time/generate"),
                    "median_rollout_wait_s": _median(rows, "time/rollout_wait"),
                    "staleness_1_samples": sum(r.get("staleness/1", 0) for r in rows),
                    "run_s": time.perf_counter() - begin,
                }
        finally:
            if started:
                ray.shutdown()
    result = {
        "what": "median step time, trainer.max_staleness=1 over 0 (steps 2..N-1), tiny CPU config",
        "steps": steps,
        "cpus": os.cpu_count(),
        "ratio_eta1_over_eta0": runs[1]["median_step_s"] / runs[0]["median_step_s"],
        "eta0": runs[0],
        "eta1": runs[1],
    }
    (out_dir / "staleness.json").write_text(json.dumps(result, indent=1))
    (out_dir / "staleness.md").write_text(_markdown(result))
    return result


def _markdown(result: dict[str, Any]) -> str:
    rows = [
        "| max_staleness | median step (s) | median generate phase (s) | rollout idle | learner idle |",
        "|---|---|---|---|---|",
    ]
    for eta in (0, 1):
        r = result[f"eta{eta}"]
        rows.append(
            f"| {eta} | {r['median_step_s']:.2f} | {r['median_generate_s']:.2f} | "
            f"{r['median_idle_rollout']:.2f} | {r['median_idle_learner']:.2f} |"
        )
    return (
        f"# Asynchronous rollout: step time\n\n{result['what']}; {result['steps']} steps each, "
        f"{result['cpus']} CPU cores.\n\n" + "\n".join(rows) + f"\n\nratio (eta 1 / eta 0): "
        f"**{result['ratio_eta1_over_eta0']:.2f}**\n"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "staleness.json"))
    args = parser.parse_args()
    print(json.dumps(main(Path(args.out).parent, args.steps), indent=1))
