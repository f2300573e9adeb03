"""Sampling K judgements per prompt with vLLM: one in-process rollout worker, or a RolloutGroup of W.

Any object with the ``RolloutWorker.generate`` signature can stand in for the engine (tests share one
engine between runs this way). A script that starts the in-process engine needs the
``if __name__ == "__main__":`` guard, because vLLM starts its engine core in a new process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from r1reward.algo.reward import parse_choice_lenient
from r1reward.algo.tags import think_text
from r1reward.config.schema import RolloutConfig
from r1reward.eval.voting import Vote


class Generator(Protocol):
    def generate(
        self,
        prompts: list[dict[str, Any]],
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seeds: list[int] | None = None,
    ) -> list[dict[str, Any]]: ...


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def eval_rollout_config(
    max_new_tokens: int,
    temperature: float = 1.0,
    dtype: str = "auto",
    max_model_len: int | None = None,
    seed: int = 0,
    gpu_memory_utilization: float = 0.85,
    top_p: float = 1.0,
    top_k: int = 0,
) -> dict[str, Any]:
    """A RolloutConfig dict for evaluation. ``dtype`` "auto" is bfloat16 on a GPU and float32 on the CPU;
    ``max_model_len`` None lets vLLM take the model's own limit (benchmark prompts are long)."""
    on_gpu = cuda_available()
    config = RolloutConfig(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        dtype=("bfloat16" if on_gpu else "float32") if dtype == "auto" else dtype,
        seed=seed,
        gpu_memory_utilization=gpu_memory_utilization,
        # On a GPU the KV cache is sized by gpu_memory_utilization (0 bytes means "use it").
        kv_cache_memory_bytes=0 if on_gpu else RolloutConfig.kv_cache_memory_bytes,
    )
    out = asdict(config)
    out["max_model_len"] = max_model_len  # None passes through to vLLM unchanged
    return out


def eval_plan(workers: int, gpus_per_worker: float) -> Any:
    """The rollout-only placement plan of W evaluation engines: `gpus_per_worker` GPUs and one CPU each."""
    from r1reward.config.schema import Config
    from r1reward.placement.plan import rollout_plan

    config = Config()
    config.rollout.num_workers = workers
    config.resources.gpus_per_rollout_worker, config.resources.cpus_per_rollout_worker = gpus_per_worker, 1.0
    return rollout_plan(config)


def start_engine(
    model_path: str,
    config: dict[str, Any],
    mm_pixels: tuple[int, int],
    workers: int = 1,
    gpus_per_worker: float | None = None,
    max_videos: int = 0,
) -> Generator:
    """One in-process RolloutWorker for ``workers`` <= 1, else a RolloutGroup of W actors on their own
    placement group (on a local Ray started here unless one is running, or RAY_ADDRESS's cluster).
    ``gpus_per_worker`` defaults to 1 on a GPU machine and 0 on the CPU; a fraction packs several engines
    onto one GPU (lower gpu_memory_utilization to match). ``max_videos`` (0 or 1) enables video input."""
    from r1reward.rollout.worker import RolloutWorker

    if workers <= 1:
        return RolloutWorker(str(model_path), config, mm_pixels, max_videos=max_videos)
    from r1reward.rollout.group import RolloutGroup

    gpus = (1.0 if cuda_available() else 0.0) if gpus_per_worker is None else gpus_per_worker
    return RolloutGroup.start_alone(str(model_path), config, mm_pixels, eval_plan(workers, gpus), max_videos=max_videos)


def close_engine(engine: Any) -> None:
    """Stop what start_engine started: a RolloutGroup, or the in-process vLLM engine core."""
    if hasattr(engine, "close"):
        engine.close()
        return
    core = getattr(getattr(getattr(engine, "llm", None), "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


@dataclass
class Sampled:
    """K generations for one prompt and their parsed votes (lenient rule; None = unparseable)."""

    votes: list[Vote]
    texts: list[str]
    finish_reasons: list[str]
    prompt_tokens: int | None = None  # the prompt's length with its image/video tokens, as the engine saw it


def reasoning_of(text: str) -> str:
    """The ``<think>`` part of a generation, or the whole text when it has none."""
    think = think_text(text)
    return (text if think is None else think).strip()


def sample_votes(
    engine: Generator,
    prompts: list[dict[str, Any]],
    k: int,
    temperature: float,
    max_tokens: int,
    seeds: list[int] | None = None,
    top_p: float | None = None,
) -> list[Sampled]:
    """K samples per prompt, parsed. ``seeds`` (one per prompt) make each prompt's samples independent
    of batching, on the CPU too: there RolloutWorker prefills whole prompts, so vLLM never has to rewind
    a seeded CPU generator mid-prompt (which torch cannot do)."""
    if not prompts:
        return []
    results = engine.generate(prompts, n=k, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seeds=seeds)
    sampled = []
    for result in results:
        texts = [g["text"] for g in result["generations"]]
        sampled.append(
            Sampled(
                [parse_choice_lenient(t) for t in texts],
                texts,
                [str(g.get("finish_reason")) for g in result["generations"]],
                len(result["prompt_token_ids"]) if "prompt_token_ids" in result else None,
            )
        )
    return sampled
