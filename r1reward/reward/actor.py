"""The reward actor: scores generations with format + result + the judge's consistency (paper §4.3).

`RewardActor` and `JudgeEngine` are plain classes; the caller wraps them with `ray.remote` so their
resources come from the placement plan (`make_judge_actor_class` does it for the judge engine).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from r1reward.algo.judges import JudgeNotReady, JudgeResult, make_judge, needs_model_actor
from r1reward.algo.reward import score_generation
from r1reward.config.schema import RewardConfig
from r1reward.placement.engine_process import keep_engine_core_in_process
from r1reward.waits import error_line

log = logging.getLogger(__name__)

DEFAULT_JUDGE_KV_BYTES = 256 * 1024 * 1024


class RewardActor:
    """Built from a `RewardConfig` as a dict. With `judge: vllm`, `judge_actor` is the handle of a
    `JudgeEngine` actor; if none is given one is started here for `judge_model` (1 CPU, no GPU)."""

    def __init__(self, cfg: dict[str, Any], judge_actor: Any = None) -> None:
        self.cfg = RewardConfig(**cfg)
        if needs_model_actor(self.cfg.judge) and judge_actor is None and self.cfg.judge_model:
            judge_actor = make_judge_actor_class().remote(self.cfg.judge_model)
        self.judge = make_judge(self.cfg, RayJudgeClient(judge_actor) if judge_actor is not None else None)

    def _judge(self, texts: list[str]) -> JudgeResult:
        n = len(texts)
        try:
            verdict = self.judge.judge(texts)
        except Exception:  # noqa: BLE001 - a broken judge must not stop training: consistency 0
            log.exception("the %s judge raised; consistency 0 for the whole batch", self.cfg.judge)
            return JudgeResult([0] * n, failures=n)
        if len(verdict.values) != n:
            log.error("the %s judge returned %d values for %d texts", self.cfg.judge, len(verdict.values), n)
            return JudgeResult([0] * n, failures=n)
        # Anything but -1/0/+1 would make score_generation zero the whole reward; neutral 0 instead.
        bad = [i for i, v in enumerate(verdict.values) if v not in (-1, 0, 1)]
        for i in bad:
            verdict.values[i] = 0
        verdict.invalid += len(bad)
        return verdict

    def score(self, texts: list[str], labels: list[int | str]) -> dict[str, Any]:
        """Per-generation `reward`, `format`, `result`, `consistency`, `parse_failed`, and batch stats."""
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        start = time.perf_counter()
        verdict = self._judge(texts)
        judge_s = time.perf_counter() - start
        out: dict[str, list] = {k: [] for k in ("reward", "format", "result", "consistency", "parse_failed")}
        score_errors = 0
        for text, label, cons in zip(texts, labels, verdict.values):
            try:
                parts = score_generation(
                    text, label, cons, w_consistency=self.cfg.w_consistency, w_format=self.cfg.w_format
                )
                error = parts.error
                row = (parts.reward, parts.format, parts.result, parts.consistency, parts.parse_failed)
            except Exception as exc:  # noqa: BLE001 - score_generation should not raise; if it does, 0
                error = f"{type(exc).__name__}: {exc}"
                row = (0.0, 0.0, 0.0, 0, True)
            if error is not None:
                score_errors += 1
                log.warning("scoring a generation failed, reward 0: %s", error)
                row = (0.0, 0.0, 0.0, 0, True)  # never a positive reward from a failed score
            for key, value in zip(out, row):
                out[key].append(value)
        n = len(texts)

        def mean(xs: list) -> float:
            return float(sum(xs)) / n if n else 0.0

        return {
            **out,
            "n": n,
            "format_rate": mean(out["format"]),
            "result_rate": mean(out["result"]),
            "consistency_mean": mean(out["consistency"]),
            "reward_mean": mean(out["reward"]),
            "judge_failures": verdict.failures + verdict.invalid,
            "judge_invalid": verdict.invalid,
            "judge_skipped": verdict.skipped,
            "parse_failures": sum(out["parse_failed"]),
            "score_errors": score_errors,
            "judge_time_s": judge_s,
        }

    def ready(self, timeout_s: float) -> bool:
        """Once the judge answers (`timeouts.startup_s` as `timeout_s`); raises JudgeNotReady naming it."""
        self.judge.ready(timeout_s)
        return True


class RayJudgeClient:
    """The `algo.judges.JudgeClient` over a `JudgeEngine` actor: one bounded Ray call per round."""

    def __init__(self, judge_actor: Any) -> None:
        self.actor = judge_actor

    def generate(self, prompts: list[str], temperature: float, max_tokens: int, timeout_s: float) -> list[str]:
        import ray

        ref = self.actor.generate.remote(prompts, temperature, max_tokens)
        try:
            return ray.get(ref, timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref)  # a queued call is dropped; a running one finishes in the actor, unread
            raise

    def ready(self, timeout_s: float, name: str) -> None:
        """Until the `JudgeEngine` has loaded its model (its constructor has returned)."""
        import ray

        try:
            ray.get(self.actor.ready.remote(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise JudgeNotReady(f"{name} did not answer within {timeout_s:g} s") from None
        except ray.exceptions.RayError as exc:
            # An engine whose constructor raised: Ray's first line says only that; its last is the error.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            died = isinstance(exc, ray.exceptions.ActorDiedError) and len(lines) > 1
            raise JudgeNotReady(f"{name} failed to start: {lines[-1] if died else error_line(exc)}") from None


class JudgeEngine:
    """A text-only `vllm.LLM` serving the consistency judge; wrap with `ray.remote`
    (or use `make_judge_actor_class`). On the CPU the KV cache is `kv_cache_memory_bytes` of host RAM
    (`gpu_memory_utilization` fails inside Ray there); on a GPU, `gpu_memory_utilization` if given."""

    def __init__(
        self,
        model_path: str,
        dtype: str = "auto",
        kv_cache_memory_bytes: int = DEFAULT_JUDGE_KV_BYTES,
        gpu_memory_utilization: float | None = None,
        max_model_len: int = 4096,
        seed: int = 0,
    ) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from vllm import LLM

        on_gpu = torch.cuda.is_available()
        keep_engine_core_in_process(1, on_gpu)
        memory = (
            {"gpu_memory_utilization": gpu_memory_utilization}
            if on_gpu and gpu_memory_utilization
            else {"kv_cache_memory_bytes": kv_cache_memory_bytes}
        )
        # No images reach the judge: zero multimodal limits skip the vision encoder's memory profiling.
        self.llm = LLM(
            model=model_path,
            dtype=dtype,
            seed=seed,
            enforce_eager=True,
            max_model_len=max_model_len,
            limit_mm_per_prompt={"image": 0, "video": 0},
            **memory,
        )

    def generate(self, prompts: list[str], temperature: float, max_tokens: int) -> list[str]:
        """One user turn per prompt through the model's chat template; the reply texts."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=temperature, max_tokens=max_tokens)
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        return [out.outputs[0].text for out in outputs]

    def ready(self) -> bool:
        return True


def make_judge_actor_class(num_cpus: float = 1, num_gpus: float = 0) -> Any:
    """`JudgeEngine` as a Ray actor class: `make_judge_actor_class().remote(model_path, ...)`."""
    import ray

    return ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(JudgeEngine)
