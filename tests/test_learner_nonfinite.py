"""A non-finite loss or gradient skips the optimizer step on every rank, on ZeRO stages 0 and 2.

Real DeepSpeed engines (gloo, the tiny Qwen2.5-VL, fp32) in fresh processes, one per learner rank, built
by `LearnerRank` as a Ray actor builds them. Each process first takes a real step (Adam has momentum and
the LR schedule has moved, so a step that was not skipped would show), then trains the same samples
under each poison the test wraps around the model from outside:

- `loss`: NaN added to the first loss (tests/fault_injection.py wraps the loss function, as in
  tests/test_faults.py);
- `forward`: a decoder layer's output made NaN, so the forward itself produces the NaN;
- `gradient`: the forward and the loss stay finite, only the backward through that layer is NaN.

Every poisoned step must leave the weights (sha256), Adam's state and the LR schedule as they were and
count itself skipped; a clean step afterwards must move the weights and keep them finite (no NaN
gradient left behind) and ascend the objective (A x log-prob of the samples rises; the learning rate is
small enough for one Adam step to be first order: at 1e-3 a step on the random tiny model raised every
sampled token's log-prob, negative advantages included). With two ranks only rank 0 is poisoned: rank 1
must skip as well. The clean step's statistics are checked against each micro-batch's own: `ratio_max`
is the largest over the micro-batches (and, reduced as the driver does, over the ranks), fractions are
weighted by tokens.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import queue
import socket
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from r1reward.algo.stats import reduce_stats

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
POISONS = ("loss", "forward", "gradient")
DEADLINE_S = 600.0


def _digest(value, digest=None):
    """sha256 over every tensor and number in a nested state (dicts in key order)."""
    digest = digest or hashlib.sha256()
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(str(key).encode())
            _digest(value[key], digest)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _digest(item, digest)
    elif torch.is_tensor(value):
        digest.update(value.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    else:
        digest.update(repr(value).encode())
    return digest


def _state(learner) -> dict:
    engine = learner.engine
    weights = engine.module.state_dict()
    return {
        "weights": _digest(weights).hexdigest(),
        "finite": all(bool(torch.isfinite(t).all()) for t in weights.values()),
        "adam": _digest(engine.basic_optimizer.state_dict()["state"]).hexdigest(),
        "lr": learner.scheduler.get_last_lr()[0],
        "schedule": learner.scheduler.last_epoch,
        "nonfinite_grads": any(
            p.grad is not None and not bool(torch.isfinite(p.grad).all()) for p in engine.module.parameters()
        ),
    }


def _layer(model):
    return model.model.language_model.layers[0]


@contextmanager
def _poison(learner, kind: str):
    """A NaN produced inside the model, wrapped in from outside (no branch in the learner's code)."""
    if kind == "loss":
        from fault_injection import poison_next_loss

        poison_next_loss(learner)
        yield
        return
    if kind == "forward":

        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            poisoned = hidden * float("nan")
            return (poisoned, *output[1:]) if isinstance(output, tuple) else poisoned

    else:  # "gradient": finite forward, NaN backward through this layer

        def hook(module, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if hidden.requires_grad:
                hidden.register_hook(lambda grad: grad * float("nan"))

    handle = _layer(learner.engine.module).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _samples(model_dir: str, data_dir: str, rank: int, count: int):
    from transformers import AutoProcessor

    from r1reward.data.readers import read_records
    from r1reward.data.render import encode_prompt
    from r1reward.data.samples import Sample

    processor = AutoProcessor.from_pretrained(model_dir)
    records = list(read_records(Path(data_dir) / "pairs.jsonl", "canonical"))[rank * count : (rank + 1) * count]
    words = ["<think>The image shows", "<think>Response 1 is", "<answer>2</answer>", "<think>Both"]
    return [
        Sample(
            **encode_prompt(processor, record, data_dir),
            completion_ids=processor.tokenizer(words[i % len(words)], add_special_tokens=False).input_ids,
        )
        for i, record in enumerate(records)
    ]


def _rank_main(rank, world, port, model_dir, data_dir, stage, results) -> None:
    """One learner rank: a real step, then each poison (rank 0 only), then a clean step."""
    try:
        from r1reward.config import load_config
        from r1reward.learner.loss import policy_loss_on_micro_batch
        from r1reward.learner.worker import LearnerRank

        per_rank = 4  # two micro-batches of 2: one optimizer step of two accumulated micro-batches
        config = load_config(
            str(ROOT / "configs" / "tiny-cpu.yaml"),
            [
                f"learner.zero_stage={stage}",
                f"learner.num_ranks={world}",
                "learner.micro_batch_size=2",
                f"learner.train_batch_size={per_rank * world}",
                "learner.lr=1e-5",
                "algo.old_logprobs=learner",  # these samples were not generated: no sampler log-probs
            ],
        )
        learner = LearnerRank(
            rank,
            world,
            "127.0.0.1",
            port,
            model_dir,
            asdict(config.model),
            asdict(config.learner),
            asdict(config.algo),
            total_optimizer_steps=10,
            timeouts={"collective_s": 120.0},
        )
        samples = _samples(model_dir, data_dir, rank, per_rank)
        for sample, logp in zip(samples, learner.compute_logprobs(samples)["old_logprobs"]):
            sample.old_logprobs = logp
            sample.advantages = [1.0 if len(logp) % 2 else -1.0] * len(logp)
        samples[0].advantages = [0.5] * len(samples[0].advantages)
        out = {"first": learner.train(samples)}
        poison_here = rank == 0
        for kind in POISONS:
            before = _state(learner)
            with _poison(learner, kind) if poison_here else nullcontext():
                metrics = learner.train(samples)
            out[kind] = {"before": before, "after": _state(learner), "metrics": metrics}
        before = _state(learner)
        with torch.no_grad():  # each micro-batch's own statistics, on the weights the clean step starts from
            micro = [
                policy_loss_on_micro_batch(
                    learner.engine, batch, learner.algo, learner.mm_token_ids, "cpu", sampling=learner.sampling
                )[1]
                for batch in learner._micro_batches(samples)
            ]
        logp_before = learner.compute_logprobs(samples)["old_logprobs"]
        metrics = learner.train(samples)
        logp_after = learner.compute_logprobs(samples)["old_logprobs"]
        # The first-order change of the objective the step ascends (each sample's token mean of A x log-prob).
        ascent = [
            sum(a * (new - old) for a, new, old in zip(s.advantages, lp_after, lp_before)) / len(lp_before)
            for s, lp_before, lp_after in zip(samples, logp_before, logp_after)
        ]
        after = _state(learner)
        out["clean"] = {"before": before, "metrics": metrics, "after": after, "micro": micro, "ascent": ascent}
        results.put((rank, out))
    except BaseException as error:  # the parent names the rank and the error, not a timeout
        import traceback

        results.put((rank, {"error": f"{error!r}\n{traceback.format_exc()}"}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _collect(procs, results) -> dict[int, dict]:
    """Each rank's report; fails with one line naming a rank that died without one, or that is late."""
    out, deadline = {}, time.monotonic() + DEADLINE_S
    while len(out) < len(procs):
        try:
            rank, result = results.get(timeout=1.0)
            out[rank] = result
        except queue.Empty:
            dead = [rank for rank, proc in enumerate(procs) if proc.exitcode not in (None, 0) and rank not in out]
            assert not dead, f"learner rank {dead[0]} exited with code {procs[dead[0]].exitcode} before reporting"
            late = sorted(set(range(len(procs))) - set(out))
            assert time.monotonic() < deadline, f"learner rank(s) {late} did not report within {DEADLINE_S:.0f} s"
    return out


def _run_ranks(world: int, stage: int, model_dir: Path, data_dir: Path) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [
        ctx.Process(target=_rank_main, args=(rank, world, port, str(model_dir), str(data_dir), stage, results))
        for rank in range(world)
    ]
    for proc in procs:
        proc.start()
    try:
        out = _collect(procs, results)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    for rank, result in out.items():
        assert "error" not in result, f"learner rank {rank}: {result['error']}"
    return [out[rank] for rank in range(world)]


def _check_rank(result: dict) -> None:
    first = result["first"]
    assert first["optimizer_steps_skipped"] == 0 and first["nonfinite_skipped"] == 0, first
    for kind in POISONS:
        before, after, metrics = result[kind]["before"], result[kind]["after"], result[kind]["metrics"]
        assert after["weights"] == before["weights"], (kind, "weights moved")
        assert after["adam"] == before["adam"], (kind, "optimizer state moved")
        assert (after["lr"], after["schedule"]) == (before["lr"], before["schedule"]), (kind, "LR schedule moved")
        assert not after["nonfinite_grads"], kind
        assert metrics["optimizer_steps_skipped"] == 1, (kind, metrics)
        assert metrics["nonfinite_skipped"] == 2, (kind, metrics)  # both micro-batches of the step dropped
        assert all(math.isfinite(v) for v in metrics.values()), (kind, metrics)
    clean = result["clean"]
    assert clean["after"]["weights"] != clean["before"]["weights"] and clean["after"]["finite"], clean
    assert clean["after"]["schedule"] == clean["before"]["schedule"] + 1
    assert clean["metrics"]["optimizer_steps_skipped"] == 0 and clean["metrics"]["nonfinite_skipped"] == 0
    # The rank's statistics over its micro-batches: the largest ratio, and fractions weighted by tokens.
    micro, metrics = clean["micro"], clean["metrics"]
    assert len({m["ratio_max"] for m in micro}) > 1, micro  # else max and mean could not be told apart
    assert metrics["ratio_max"] == pytest.approx(max(m["ratio_max"] for m in micro), rel=1e-6)
    tokens = sum(m["loss_tokens"] for m in micro)
    for key in ("clip_frac", "ratio_mean", "approx_kl"):
        assert metrics[key] == pytest.approx(sum(m[key] * m["loss_tokens"] for m in micro) / tokens, rel=1e-5), key


def _check_ascent(results: list[dict]) -> None:
    """The clean step follows the advantages: summed over every rank's samples (the ranks average their
    gradients, so the step ascends their common objective), A x log-prob rose. A flipped sign, or
    advantages paired with the wrong samples, would not show in the checks above."""
    ascent = [a for result in results for a in result["clean"]["ascent"]]
    assert sum(ascent) > 0, ascent


@pytest.mark.parametrize("stage", [0, 2])
def test_a_nan_in_the_forward_or_the_loss_leaves_weights_and_adam_untouched(stage, tiny_model_dir, synthetic_dir):
    (result,) = _run_ranks(1, stage, tiny_model_dir, synthetic_dir)
    _check_rank(result)
    _check_ascent([result])


@pytest.mark.parametrize("stage", [0, 2])
def test_a_nan_on_one_rank_skips_the_step_on_every_rank(stage, tiny_model_dir, synthetic_dir):
    results = _run_ranks(2, stage, tiny_model_dir, synthetic_dir)
    for result in results:
        _check_rank(result)
    _check_ascent(results)
    # Both ranks hold the same weights before and after every step (data parallel, one update).
    for kind in (*POISONS, "clean"):
        assert results[0][kind]["after"]["weights"] == results[1][kind]["after"]["weights"], kind
    # The driver's row: the largest ratio of any micro-batch on any rank.
    step = reduce_stats([result["clean"]["metrics"] for result in results])
    largest = max(m["ratio_max"] for result in results for m in result["clean"]["micro"])
    assert step["ratio_max"] == pytest.approx(largest, rel=1e-6)
