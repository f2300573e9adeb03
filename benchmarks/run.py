"""`make bench`: every comparison in one run, then benchmarks/results/bench.md and bench.png.

Each comparison runs in its own process (engines, Ray and gloo groups end with it) and writes
benchmarks/results/<name>.json, stamped here with the invocation and the machine it ran on (torch's CPU
capability, the CPU model and the core count: the kernels, and so the numbers, differ between CPUs); the
report is rebuilt from all the JSON files present, so `--only NAME` refreshes one comparison and keeps the
others.

    python -m benchmarks.run [--only rollout|end_to_end|weight_sync|staleness] [--machine "2 cores, CPU"]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.assets import ROOT, ensure_assets
from benchmarks.report import plot, render

RESULTS = ROOT / "benchmarks" / "results"
COMPARISONS = ("rollout", "weight_sync", "end_to_end", "staleness")


def stamp(result: dict[str, Any], invocation: str) -> dict[str, Any]:
    """`result` with what made it (the invocation, when it finished) and the machine it ran on."""
    from r1reward.trainer.pipeline import machine

    finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return {**result, "made_by": f"{invocation} (finished {finished})", "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=COMPARISONS, action="append", help="run only these (repeatable)")
    parser.add_argument("--report-only", action="store_true", help="rebuild bench.md/png from the JSON files")
    parser.add_argument("--machine", default=f"{os.cpu_count()} cores, CPU, no GPU")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    failed = []
    invocation = "python -m benchmarks.run" + "".join(f" --only {n}" for n in args.only or [])
    if not args.report_only:
        ensure_assets()
        for name in args.only or COMPARISONS:
            start = time.perf_counter()
            out = RESULTS / f"{name}.json"
            out.unlink(missing_ok=True)  # a failed comparison leaves no stale numbers behind
            command = [sys.executable, "-m", f"benchmarks.{name}", "--out", str(out)]
            if subprocess.run(command, cwd=ROOT, env=env).returncode != 0:  # the others still run
                failed.append(name)
            else:  # the report names, per section, the invocation and the machine
                out.write_text(json.dumps(stamp(json.loads(out.read_text()), invocation), indent=1) + "\n")
            print(f"{name}: {time.perf_counter() - start:.0f} s -> {out.relative_to(ROOT)}", flush=True)
    found = [n for n in COMPARISONS if (RESULTS / f"{n}.json").exists()]
    results = {n: json.loads((RESULTS / f"{n}.json").read_text()) for n in found}
    (RESULTS / "bench.md").write_text(render(results, args.machine, "make bench (python -m benchmarks.run)") + "\n")
    plot(results, RESULTS / "bench.png")
    print((RESULTS / "bench.md").read_text())
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
