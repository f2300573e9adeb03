"""Weight sync: bucketed broadcast (what r1reward sends) vs one broadcast per parameter (the baseline).

Two processes form a gloo group, as the trainer and a CPU vLLM worker do; the sender broadcasts the
language weights of a `small` tiny Qwen2.5-VL. Both ways run in the same process pair, several rounds
each, and the result is the ratio of their median times, plus a bit-exactness check of the buckets.

    .venv/bin/python benchmarks/weight_sync.py [--size small|tiny] [--rounds 5] [--bucket-mb 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from r1reward.sync.buckets import TensorMeta, checksum, pack, plan_buckets, unpack


def language_weights(model_dir: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if ".visual." not in n}


def run(rank: int, port: int, model_dir: str, rounds: int, bucket_bytes: int, results) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(minutes=5)
    )
    weights = language_weights(model_dir)
    metas = [TensorMeta(n, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for n, t in weights.items()]
    if rank == 1:  # the receiver must start from other values
        weights = {n: torch.zeros_like(t) for n, t in weights.items()}
    timings: dict[str, list[float]] = {"per_parameter": [], "bucketed": [], "bucketed_checksummed": []}
    same = True
    for _ in range(rounds):
        dist.barrier()
        start = time.perf_counter()
        for tensor in weights.values():
            dist.broadcast(tensor if rank == 0 else torch.empty_like(tensor), src=0)
        dist.barrier()
        timings["per_parameter"].append(time.perf_counter() - start)
        for variant in ("bucketed", "bucketed_checksummed"):
            start = time.perf_counter()
            for bucket in plan_buckets(metas, bucket_bytes):
                flat = (
                    pack(weights[m.name] for m in bucket)
                    if rank == 0
                    else torch.empty(sum(m.nbytes for m in bucket), dtype=torch.uint8)
                )
                dist.broadcast(flat, src=0)
                if rank == 1:
                    weights.update({n: t.clone() for n, t in unpack(flat, bucket)})
                if variant == "bucketed_checksummed":
                    sums = torch.tensor(checksum(flat))
                    gathered = [torch.zeros_like(sums) for _ in range(2)]
                    dist.all_gather(gathered, sums)
                    same &= torch.equal(gathered[0], gathered[1])
            dist.barrier()
            timings[variant].append(time.perf_counter() - start)
    if rank == 0:
        results.update(
            timings=timings,
            params=len(metas),
            bytes=sum(m.nbytes for m in metas),
            buckets=len(plan_buckets(metas, bucket_bytes)),
        )
    results[f"checksums_equal_{rank}"] = same
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bucket-mb", type=int, default=64)
    args = parser.parse_args()
    from vllm.utils.network_utils import get_open_port

    from r1reward.models.tiny import make_tiny_model

    results = mp.Manager().dict()
    with tempfile.TemporaryDirectory() as model_dir:
        make_tiny_model(model_dir, size=args.size)
        mp.spawn(run, args=(get_open_port(), model_dir, args.rounds, args.bucket_mb * 2**20, results), nprocs=2)
    medians = {k: statistics.median(v) for k, v in results["timings"].items()}
    print(
        f"{args.size} model language weights: {results['params']} tensors, {results['bytes'] / 2**20:.1f} MiB, "
        f"{results['buckets']} bucket(s) of {args.bucket_mb} MiB; median of {args.rounds} rounds"
    )
    for name, seconds in medians.items():
        print(
            f"  {name:<22} {seconds * 1000:8.1f} ms   "
            f"{medians['per_parameter'] / seconds:5.2f}x the per-parameter speed"
        )
    print(f"buckets bit-identical on both sides: {results['checksums_equal_0'] and results['checksums_equal_1']}")


if __name__ == "__main__":
    main()
