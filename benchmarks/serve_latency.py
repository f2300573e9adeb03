"""Latency and throughput of ``r1reward serve``: /v1/compare requests, one client at a time and from a few
concurrent clients, for each K. Starts the server itself (one process for all K: K is per request).

    .venv/bin/python benchmarks/serve_latency.py --model runs/pipeline/sft/hf --ks 1 5 --requests 30 --clients 4

Each request is a different synthetic pair (image as a file path) with its own seed. Prints one row per
(K, mode): median and p95 latency and requests/s over the wall time of that mode; ``--out`` writes JSON.

With ``--replicas 1 2`` it serves through Ray Serve instead (``r1reward serve --ray-serve --replicas N``, one
server per count, on a local Ray of its own) and measures only the concurrent mode at the first K; the JSON
names the machine. ``--model tiny`` makes an untrained tiny model: it answers nothing, but it generates
--max-tokens tokens per sample, so every request costs the same.

    .venv/bin/python benchmarks/serve_latency.py --model tiny --replicas 1 2 --ks 1 --requests 48 --clients 8 \
        --max-tokens 64 --out benchmarks/results/serve_replicas.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_server(
    args: argparse.Namespace, port: int, log: Path, image_root: Path, extra: tuple[str, ...] = ()
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "r1reward",
        "serve",
        "--model",
        args.model,
        "--port",
        str(port),
        "--max-tokens",
        str(args.max_tokens),
        "--max-batch",
        str(args.max_batch),
        "--image-root",
        str(image_root),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # --ray-serve: a local Ray of its own
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + args.startup_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"r1reward serve exited with {proc.returncode}; see {log}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting up
            pass
        time.sleep(0.5)
    proc.terminate()
    sys.exit(f"r1reward serve did not answer /health within {args.startup_timeout} s; see {log}")


def run(url: str, bodies: list[dict], clients: int) -> dict:
    def one(body: dict) -> tuple[float, int]:
        start = time.perf_counter()
        response = requests.post(f"{url}/v1/compare", json=body, timeout=600)
        response.raise_for_status()
        # A vote of None is a sample without a parseable answer, often one that ran to --max-tokens.
        return time.perf_counter() - start, sum(v is None for v in response.json()["votes"])

    start = time.perf_counter()
    if clients == 1:
        answers = [one(body) for body in bodies]
    else:
        with ThreadPoolExecutor(max_workers=clients) as pool:
            answers = list(pool.map(one, bodies))
    wall = time.perf_counter() - start
    latencies = [latency for latency, _ in answers]
    return {
        "requests": len(bodies),
        "clients": clients,
        "median_s": statistics.median(latencies),
        "p95_s": percentile(latencies, 0.95),
        "max_s": max(latencies),
        "unparsed_votes": sum(unparsed for _, unparsed in answers),
        "requests_with_unparsed_votes": sum(unparsed > 0 for _, unparsed in answers),
        "latencies_ms": [round(latency * 1000) for latency in latencies],  # in the order sent
        "requests_per_s": len(bodies) / wall,
        "wall_s": wall,
    }


def compare_bodies(rows: list[dict], image_root: Path, count: int, k: int, offset: int) -> list[dict]:
    """``count`` /v1/compare bodies, each a different pair with its own seed (from ``offset``)."""
    out = []
    for i in range(count):
        row = rows[(offset + i) % len(rows)]
        out.append(
            {
                "question": row["question"],
                "images": [str(image_root / row["images"][0])],
                "response_1": row["response_1"],
                "response_2": row["response_2"],
                "k": k,
                "seed": offset + i,
            }
        )
    return out


def compare_replicas(args: argparse.Namespace, rows: list[dict], image_root: Path, tmp: Path) -> dict:
    """The concurrent mode through ``r1reward serve --ray-serve --replicas N`` for each N, one server each."""
    from r1reward.trainer.pipeline import machine

    k, runs = args.ks[0], []
    for replicas in args.replicas:
        port = free_port()
        log = tmp / f"server-{replicas}.log"
        proc = start_server(args, port, log, image_root, ("--ray-serve", "--replicas", str(replicas)))
        url = f"http://127.0.0.1:{port}"
        try:
            # Warm-up: enough concurrent requests that every replica has served some.
            run(url, compare_bodies(rows, image_root, 2 * args.clients, k, 1000), args.clients)
            load = os.getloadavg()[0]  # others' work on the machine shares its cores
            result = run(url, compare_bodies(rows, image_root, args.requests, k, 0), args.clients)
        finally:
            proc.terminate()
            proc.wait(120)
        runs.append({"replicas": replicas, "k": k, "load_before": round(load, 2), **result})
        print(
            f"replicas={replicas} K={k} clients={args.clients}  median {result['median_s'] * 1000:7.0f} ms  "
            f"p95 {result['p95_s'] * 1000:7.0f} ms  {result['requests_per_s']:6.2f} req/s  (load {load:.1f})",
            flush=True,
        )
    return {"machine": machine(), "max_tokens": args.max_tokens, "clients": args.clients, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", required=True, help="a trained checkpoint (Hugging Face format), or tiny: an untrained tiny model"
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--requests", type=int, default=30, help="requests per (K, mode)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients in the concurrent mode")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--max-batch", type=int, default=256)
    parser.add_argument("--startup-timeout", type=float, default=300)
    parser.add_argument("--replicas", type=int, nargs="+", default=None, help="Ray Serve replica counts to compare")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()

    from r1reward.data.synthetic import make_synthetic_data

    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            from r1reward.models.tiny import make_tiny_model

            args.model = str(make_tiny_model(Path(tmp) / "tiny", seed=0, size="tiny"))
        data = Path(make_synthetic_data(Path(tmp) / "data", num=64, seed=123)["pairs"])
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        if args.replicas:
            result = compare_replicas(args, rows, data.parent, Path(tmp))
            if args.out:
                Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
            return
        port = free_port()
        proc = start_server(args, port, Path(tmp) / "server.log", data.parent)
        url = f"http://127.0.0.1:{port}"
        results = []
        try:
            for k in args.ks:

                def bodies(offset: int, k: int = k) -> list[dict]:
                    return compare_bodies(rows, data.parent, args.requests, k, offset)

                run(url, bodies(1000)[:2], 1)  # warm-up
                for mode, clients, offset in (("sequential", 1, 0), ("concurrent", args.clients, args.requests)):
                    result = {"k": k, "mode": mode, **run(url, bodies(offset), clients)}
                    results.append(result)
                    print(
                        f"K={k:<2} {mode:<10} clients={clients}  median {result['median_s'] * 1000:7.0f} ms  "
                        f"p95 {result['p95_s'] * 1000:7.0f} ms  max {result['max_s'] * 1000:7.0f} ms  "
                        f"{result['requests_per_s']:6.2f} req/s  unparsed votes {result['unparsed_votes']}",
                        flush=True,
                    )
            metrics = requests.get(f"{url}/metrics", timeout=10).text
            batch = {
                line.split()[0]: float(line.split()[1])
                for line in metrics.splitlines()
                if line.startswith(("r1reward_serve_batch_requests_sum", "r1reward_serve_batch_requests_count"))
            }
            print(
                f"engine calls: {batch['r1reward_serve_batch_requests_count']:.0f} for "
                f"{batch['r1reward_serve_batch_requests_sum']:.0f} requests"
            )
        finally:
            proc.terminate()
            proc.wait(120)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
