"""A rollout worker: a Ray actor that owns one vLLM engine and generates reasoning chains.

It takes rendered prompts with their images and returns, per generation, the token ids, the text and
the sampler's log-probs. Weight updates arrive through vLLM's own weight-transfer API: the four
`*_weight_*` methods below only forward to the engine.
"""

from __future__ import annotations

import os
import time
from typing import Any

from r1reward.algo.sampling import BANNED_TOKEN_BIAS, VISION_TOKENS, VLLM_LOGPROBS_MODE
from r1reward.config.schema import RolloutConfig
from r1reward.data.render import MAX_IMAGES
from r1reward.placement.cores import pin_this_process
from r1reward.placement.engine_process import keep_engine_core_in_process
from r1reward.sync.backend import weight_transfer_backend


class RolloutWorker:
    """Wrapped with `ray.remote` by the caller so resources come from the placement plan."""

    def __init__(
        self,
        model_path: str,
        cfg: dict[str, Any],
        mm_pixels: tuple[int, int],
        max_images: int = MAX_IMAGES,
        transfer_backend: str | None = None,
        max_videos: int = 0,  # evaluation only: training data has no video rows
        cores: tuple[int, ...] = (),
    ) -> None:
        pin_this_process(cores)  # before the engine starts its threads (resources.pin_cores)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import torch
        from vllm import LLM
        from vllm.config import WeightTransferConfig

        self.cfg = RolloutConfig(**cfg)
        keep_engine_core_in_process(self.cfg.tensor_parallel_size, torch.cuda.is_available())
        engine_kwargs = (
            {"kv_cache_memory_bytes": self.cfg.kv_cache_memory_bytes}
            if self.cfg.kv_cache_memory_bytes
            else {"gpu_memory_utilization": self.cfg.gpu_memory_utilization}
        )
        if not torch.cuda.is_available():
            # vLLM's CPU sampler cannot resume a seeded generator mid-prompt ("CPU Generator does not use
            # offset"), so per-request seeds need whole-prompt prefills there.
            engine_kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=self.cfg.max_model_len)
        self.llm = LLM(
            model=model_path,
            dtype=self.cfg.dtype,
            seed=self.cfg.seed,
            enforce_eager=self.cfg.enforce_eager,
            tensor_parallel_size=self.cfg.tensor_parallel_size,
            max_model_len=self.cfg.max_model_len,
            limit_mm_per_prompt={"image": max_images, "video": max_videos},
            mm_processor_kwargs={"min_pixels": mm_pixels[0], "max_pixels": mm_pixels[1]},
            weight_transfer_config=WeightTransferConfig(backend=transfer_backend or weight_transfer_backend()),
            worker_extension_cls="r1reward.sync.worker_extension.WeightSyncExtension",
            # The log-probs of the distribution sampled from (bias, temperature), which the learner scores.
            logprobs_mode=VLLM_LOGPROBS_MODE,
            **engine_kwargs,
        )
        tokenizer = self.llm.get_tokenizer()
        self.banned_ids = [
            tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS if tokenizer.convert_tokens_to_ids(t) is not None
        ]

    def generate(
        self,
        prompts: list[dict[str, Any]],
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seeds: list[int] | None = None,
    ) -> list[dict[str, Any]]:
        """prompts: [{"prompt": rendered text, "images": [PIL images]}], a video row's with `"video"`:
        (frames array, metadata), see r1reward.data.video. With `seeds` (one per prompt)
        the samples are reproducible whatever the batch. Returns one dict per prompt with
        `prompt_token_ids` and `generations` (n dicts of `token_ids`, `logprobs`, `text`, `finish_reason`)."""
        from vllm import SamplingParams

        def params(seed: int | None) -> SamplingParams:
            return SamplingParams(
                n=n,
                temperature=self.cfg.temperature if temperature is None else temperature,
                top_p=self.cfg.top_p if top_p is None else top_p,
                top_k=self.cfg.top_k,
                max_tokens=max_tokens or self.cfg.max_new_tokens,
                logprobs=0,
                seed=seed,
                logit_bias={i: BANNED_TOKEN_BIAS for i in self.banned_ids},
            )

        def engine_input(p: dict[str, Any]) -> dict[str, Any]:
            media: dict[str, Any] = {"image": p["images"]} if p.get("images") else {}
            if p.get("video") is not None:
                media["video"] = p["video"]
            return {"prompt": p["prompt"], "multi_modal_data": media} if media else {"prompt": p["prompt"]}

        inputs = [engine_input(p) for p in prompts]
        sampling = [params(s) for s in seeds] if seeds is not None else params(None)
        outputs = self.llm.generate(inputs, sampling, use_tqdm=False)
        results = []
        for out in outputs:
            generations = []
            for completion in out.outputs:
                ids = list(completion.token_ids)
                logprobs = [step[token].logprob for step, token in zip(completion.logprobs, ids)]
                generations.append(
                    {
                        "token_ids": ids,
                        "logprobs": logprobs,
                        "text": completion.text,
                        "finish_reason": completion.finish_reason,
                    }
                )
            results.append({"prompt_token_ids": list(out.prompt_token_ids), "generations": generations})
        return results

    def generate_timed(self, prompts: list[dict[str, Any]], **kwargs: Any) -> tuple[list[dict[str, Any]], float]:
        """`generate` and the seconds this worker spent in it (its busy time, for the idle metrics)."""
        start = time.perf_counter()
        results = self.generate(prompts, **kwargs)
        return results, time.perf_counter() - start

    # --- weight sync: vLLM's weight-transfer API, forwarded -------------------------------------
    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        self.llm.init_weight_transfer_engine({"init_info": init_info})

    def start_weight_update(self) -> None:
        self.llm.start_weight_update()

    def update_weights(self, update_info: dict[str, Any]) -> None:
        self.llm.update_weights({"update_info": update_info})

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self.llm.finish_weight_update(weight_version)
        self._forget_cached()

    def load_checkpoint(self, path: str) -> int:
        """Another checkpoint of the same architecture (and processor) into this engine, without a restart:
        evaluating several stages costs one engine start. Returns the number of tensors loaded."""
        loaded = sum(self.llm.collective_rpc("r1reward_load_checkpoint", args=(str(path),)))
        self._forget_cached()
        return loaded

    def _forget_cached(self) -> None:
        """Cached image embeddings and prefixes were computed with the old weights."""
        self.llm.reset_prefix_cache()
        engine = self.llm.llm_engine
        for reset in ("reset_mm_cache", "reset_encoder_cache"):
            if hasattr(engine, reset):
                getattr(engine, reset)()

    def received_checksums(self) -> list[list[tuple[int, int]]]:
        """What each vLLM worker process received in the last gloo update (for tests and logs)."""
        return self.llm.collective_rpc("r1reward_received_checksums")

    def ready(self) -> bool:
        return True
