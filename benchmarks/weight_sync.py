"""Weight sync over gloo: r1reward's bucketed transfer vs the raw broadcast of the same bytes.

Two processes form a gloo group, as the trainer and a CPU vLLM worker do. Per round, the sender moves
the same weights several ways, in the same process pair:

- `raw_flat`: one broadcast of one preallocated flat tensor holding all the bytes: the transport's limit;
- `per_parameter`: one broadcast per tensor, nothing else;
- `r1reward_before`: the previous release's loop (a fresh buffer per bucket on both sides, the next
  bucket asked for only once the last one arrived);
- `r1reward`: `r1reward.sync.buckets.send_buckets` / `receive_buckets`, what the gloo engine runs
  (a tensor of 1 MiB or more sent from its own memory, the small ones packed into two kept buffers,
  the checksums behind the last bucket; every receive posted up front into a kept staging area; each
  bucket hashed while the others move; loaded once every checksum matched), with its buffers kept
  from round to round as the engine keeps them;
- `r1reward_unverified`: the same without the XXH3 checksums, to show what they cost.

The receiver copies what it gets into its own tensors (what vLLM's `load_weights` does at least), and
both sides checksum every bucket in the verified variants. Each rank runs torch on one thread: the two
ranks stand for two roles with a core each, and intra-op threads of one would take the other's core.
Shapes:

- `tiny`: the language weights of the `tiny` Qwen2.5-VL (the demo's model, one bucket);
- `small`: the language weights of the `small` tiny Qwen2.5-VL (the model the other comparisons use);
- `7b`: Qwen2.5-7B's 339 language tensors (28 layers of q/k/v with biases, o, gate/up/down, two norms;
  embeddings, final norm, lm_head) in bf16, each dimension divided by `--scale` so the bytes fit this
  machine (scale 8: 1/64 of the 15.2 GB); the bucket size is divided by scale^2 too, so that the
  tensor count and the shape ratios stay those of the real model (the 1 MiB above which a tensor is
  sent alone is not scaled: more of the scaled tensors are packed than the real model's would be).

    python -m benchmarks.weight_sync [--shapes tiny small 7b] [--scale 8] [--rounds 11] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from r1reward.sync.buckets import (
    DEFAULT_BUCKET_BYTES,
    Buffers,
    SyncCorrupted,
    TensorMeta,
    checksum,
    pack,
    plan_buckets,
    receive_buckets,
    send_buckets,
    unpack,
)

# The tiny model's transfer takes about a millisecond, so one late wake-up of either process moves its
# median: it runs this many times the rounds (all of them cost less than one round of the 7b shapes). The
# small model's share sits near its goal, so it gets more rounds too.
ROUNDS_FACTOR = {"tiny": 5, "small": 3}

QWEN25_7B = {"hidden": 3584, "intermediate": 18944, "layers": 28, "kv": 512, "vocab": 152064}


def qwen7b_like(scale: int) -> dict[str, torch.Tensor]:
    """Qwen2.5-7B's language tensors (names, order, bf16) with every dimension divided by `scale`."""
    h, i, kv, v = (QWEN25_7B[k] // scale for k in ("hidden", "intermediate", "kv", "vocab"))
    gen = torch.Generator().manual_seed(0)

    def t(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(torch.bfloat16)

    out = {"model.embed_tokens.weight": t(v, h)}
    for layer in range(QWEN25_7B["layers"]):
        p = f"model.layers.{layer}."
        out.update(
            {
                p + "self_attn.q_proj.weight": t(h, h),
                p + "self_attn.q_proj.bias": t(h),
                p + "self_attn.k_proj.weight": t(kv, h),
                p + "self_attn.k_proj.bias": t(kv),
                p + "self_attn.v_proj.weight": t(kv, h),
                p + "self_attn.v_proj.bias": t(kv),
                p + "self_attn.o_proj.weight": t(h, h),
                p + "mlp.gate_proj.weight": t(i, h),
                p + "mlp.up_proj.weight": t(i, h),
                p + "mlp.down_proj.weight": t(h, i),
                p + "input_layernorm.weight": t(h),
                p + "post_attention_layernorm.weight": t(h),
            }
        )
    out["model.norm.weight"] = t(h)
    out["lm_head.weight"] = t(v, h)
    return out


def language_weights(model_dir: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    return {n: p.detach().contiguous() for n, p in model.named_parameters() if ".visual." not in n}


def _plan_before(metas: list[TensorMeta], bucket_bytes: int) -> list[list[TensorMeta]]:
    """The previous release's plan: greedy in order, a tensor larger than a bucket alone."""
    buckets: list[list[TensorMeta]] = []
    size = 0
    for meta in metas:
        if buckets and size + meta.nbytes <= bucket_bytes:
            buckets[-1].append(meta)
            size += meta.nbytes
        else:
            buckets.append([meta])
            size = meta.nbytes
    return buckets


def _send_before(weights: dict[str, torch.Tensor], metas: list[TensorMeta], bucket_bytes: int, broadcast) -> None:
    """The sender's loop before this release: a fresh buffer per packed bucket, two buckets in flight,
    then the checksums."""
    sums, in_flight = [], []
    for bucket in _plan_before(metas, bucket_bytes):
        flat = pack([weights[m.name] for m in bucket])
        in_flight.append((flat, broadcast(flat)))
        sums.append(checksum(flat))
        if len(in_flight) > 1:
            in_flight.pop(0)[1].wait()
    for _, work in in_flight:
        work.wait()
    dist.broadcast(torch.tensor(sums, dtype=torch.int64), src=0)


def _receive_before(metas: list[TensorMeta], bucket_bytes: int, broadcast, load) -> None:
    """Its receiver: a fresh buffer per bucket, the next one posted once the last has arrived, one load
    call per bucket."""
    plan = _plan_before(metas, bucket_bytes)

    def post(bucket):
        flat = torch.empty(sum(m.nbytes for m in bucket), dtype=torch.uint8)
        return flat, broadcast(flat)

    staged, got = [], []
    pending = post(plan[0])
    for i, bucket in enumerate(plan):
        flat, work = pending
        work.wait()
        if i + 1 < len(plan):
            pending = post(plan[i + 1])
        got.append(checksum(flat))
        staged.append((flat, bucket))
    sent = torch.empty(len(got), dtype=torch.int64)
    dist.broadcast(sent, src=0)
    if sent.tolist() != got:
        raise SyncCorrupted("r1reward_before: a bucket differs from the sender's checksum")
    for flat, bucket in staged:
        load(list(unpack(flat, bucket)))


def weights_for(shapes: str, source: str, scale: int) -> dict[str, torch.Tensor]:
    return qwen7b_like(scale) if shapes == "7b" else language_weights(source)


def run(rank: int, port: int, shapes: str, source: str, scale: int, rounds: int, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timedelta(minutes=10)
    )
    weights = weights_for(shapes, source, scale)
    bucket_bytes = DEFAULT_BUCKET_BYTES // (scale * scale) if shapes == "7b" else DEFAULT_BUCKET_BYTES
    metas = [TensorMeta(n, str(t.dtype).removeprefix("torch."), tuple(t.shape)) for n, t in weights.items()]
    total = sum(m.nbytes for m in metas)
    if rank == 1:  # the receiver starts from other values, and must end with the sender's
        weights = {n: torch.zeros_like(t) for n, t in weights.items()}

    def load(pairs: list[tuple[str, torch.Tensor]]) -> None:
        for name, tensor in pairs:
            weights[name].copy_(tensor)

    def broadcast(tensor: torch.Tensor):
        return dist.broadcast(tensor, src=0, async_op=True)

    flat_all = torch.zeros(total, dtype=torch.uint8)
    kept = Buffers()  # as the engine keeps them between updates
    variants = {
        "raw_flat": lambda: dist.broadcast(flat_all, src=0),
        "per_parameter": lambda: [dist.broadcast(t, src=0) for t in weights.values()],
        "r1reward_before": (
            (lambda: _send_before(weights, metas, bucket_bytes, broadcast))
            if rank == 0
            else (lambda: _receive_before(metas, bucket_bytes, broadcast, load))
        ),
        "r1reward": (
            (lambda: send_buckets(iter(weights.items()), metas, bucket_bytes, broadcast, buffers=kept))
            if rank == 0
            else (lambda: receive_buckets(metas, bucket_bytes, broadcast, load, buffers=kept))
        ),
        # What the checksums cost: the same transfer without them (the engine always verifies).
        "r1reward_unverified": (
            (lambda: send_buckets(iter(weights.items()), metas, bucket_bytes, broadcast, verify=False, buffers=kept))
            if rank == 0
            else (lambda: receive_buckets(metas, bucket_bytes, broadcast, load, verify=False, buffers=kept))
        ),
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}  # this rank's CPU, all its threads
    for _ in range(rounds):
        for name, variant in variants.items():
            if rank == 1 and name != "raw_flat":
                for tensor in weights.values():
                    tensor.zero_()
            dist.barrier()
            start, start_cpu = time.perf_counter(), time.process_time()
            variant()
            cpu[name].append(time.process_time() - start_cpu)
            dist.barrier()
            timings[name].append(time.perf_counter() - start)
    results[f"cpu{rank}"] = cpu
    if rank == 1:
        reference = weights_for(shapes, source, scale)
        results["received_equal"] = all(torch.equal(weights[n], t) for n, t in reference.items())
    else:
        results.update(
            timings=timings,
            tensors=len(metas),
            bytes=total,
            bucket_bytes=bucket_bytes,
            buckets=len(plan_buckets(metas, bucket_bytes)),
            single_tensor_buckets=sum(len(b) == 1 for b in plan_buckets(metas, bucket_bytes)),
            torch_threads=torch.get_num_threads(),
        )
    dist.destroy_process_group()


def shares_of_raw(timings: dict[str, list[float]]) -> dict[str, float]:
    """Per variant, the median over rounds of raw_flat's seconds over the variant's in the same round. Each
    variant is set against the raw broadcast of its own round: a stretch in which the shared cores run
    slow then slows both sides of a ratio, instead of only the variant that happened to run in it."""
    return {k: statistics.median(raw / s for raw, s in zip(timings["raw_flat"], v)) for k, v in timings.items()}


def measure(shapes: str, source: str, scale: int, rounds: int) -> dict:
    from vllm.utils.network_utils import get_open_port

    rounds = rounds * ROUNDS_FACTOR.get(shapes, 1)
    results = mp.Manager().dict()
    mp.spawn(run, args=(get_open_port(), shapes, source, scale, rounds, results), nprocs=2)
    timings = results["timings"]
    medians = {k: statistics.median(v) for k, v in timings.items()}
    cpu = {k: statistics.median(a + b for a, b in zip(v, results["cpu1"][k])) for k, v in results["cpu0"].items()}
    out = {
        "shapes": shapes,
        "scale": scale if shapes == "7b" else 1,
        "rounds": rounds,
        "tensors": results["tensors"],
        "bytes": results["bytes"],
        "bucket_bytes": results["bucket_bytes"],
        "buckets": results["buckets"],
        "single_tensor_buckets": results["single_tensor_buckets"],
        "torch_threads_per_rank": results["torch_threads"],
        "received_bit_identical": results["received_equal"],
        "seconds": medians,
        "gbit_per_s": {k: results["bytes"] * 8 / s / 1e9 for k, s in medians.items()},
        "fraction_of_raw": shares_of_raw(timings),
        # Both ranks' CPU seconds (every thread): what a shared machine's load does not change much.
        "cpu_seconds": cpu,
        "runs": timings,
    }
    print(
        f"{shapes}: {out['tensors']} tensors, {out['bytes'] / 2**20:.1f} MiB, {out['buckets']} buckets: "
        + "  ".join(f"{k} {s * 1000:.0f} ms" for k, s in medians.items()),
        flush=True,
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny", "small", "7b"], choices=["tiny", "small", "7b"])
    parser.add_argument("--scale", type=int, default=8, help="7b shapes: every dimension divided by this")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--out", default="benchmarks/results/weight_sync.json")
    args = parser.parse_args()
    from benchmarks.assets import ASSETS, ensure_assets
    from r1reward.models.tiny import make_tiny_model
    from r1reward.trainer.pipeline import machine

    model_dir, _ = ensure_assets()
    tiny_dir = ASSETS / "tiny-base"
    if "tiny" in args.shapes and not (tiny_dir / "config.json").exists():
        make_tiny_model(tiny_dir, seed=0, size="tiny")
    sources = {"tiny": str(tiny_dir), "small": str(model_dir), "7b": ""}
    result = {
        "name": "weight_sync",
        "machine": machine(),
        "rounds": args.rounds,  # per shape: times ROUNDS_FACTOR
        "shapes": {s: measure(s, sources[s], args.scale, args.rounds) for s in args.shapes},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
