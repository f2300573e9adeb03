"""compare / rank / get_reward on a RewardModel, with every client's prompts batched into one engine.

The Python API and the server share their steps: ``RewardModel.prompts_for`` renders the pairs,
``RewardModel.seeds_for`` gives prompt i of a request with seed s the seed s * 1_000_003 + i, and
``RewardModel.judge`` is the engine call (here on the batcher's engine thread, for several requests at
once). So a request answers exactly what ``RewardModel.compare / rank / compare_pairs`` answers for the
same seed, whatever it is batched with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from r1reward.data.images import ImagePolicy, ImageRefused, load_untrusted_image
from r1reward.data.prompt import neutralize_special_tokens
from r1reward.data.records import DataError
from r1reward.data.render import MAX_IMAGES
from r1reward.eval.api import Comparison, Pair, RewardModel, rank_matches, ranking_of
from r1reward.eval.voting import Vote, majority_vote, vote_share
from r1reward.serve.batcher import Batcher
from r1reward.serve.metrics import ServeMetrics
from r1reward.serve.openrlhf import reward_items
from r1reward.serve.schemas import CompareRequest, GetRewardRequest, RankRequest, ServeError

log = logging.getLogger("r1reward.serve")


def _flip(vote: Vote) -> Vote:
    return None if vote is None else 3 - vote


def compare_answer(original: Comparison, swapped: Comparison | None = None) -> dict[str, Any]:
    """The /v1/compare answer. With ``swapped`` (the same pair judged in the other order): ``votes_swapped``
    in the original numbering, the winner and vote share over both orders' 2K votes, and ``agreement``:
    whether each order's majority chose the same response."""
    if swapped is None:
        return {
            "winner": original.winner,
            "votes": list(original.votes),
            "vote_share": original.vote_share,
            "agreement": None,
            "reasoning": original.reasoning,
        }
    back = [_flip(v) for v in swapped.votes]
    votes = list(original.votes) + back
    winner = majority_vote(votes)
    swapped_winner = _flip(swapped.winner)
    reasoning = swapped.reasoning if original.winner != winner and swapped_winner == winner else original.reasoning
    return {
        "winner": winner,
        "votes": list(original.votes),
        "votes_swapped": back,
        "vote_share": vote_share(votes, winner),
        "agreement": original.winner is not None and original.winner == swapped_winner,
        "reasoning": reasoning,
    }


def reward_of(original: Comparison, swapped: Comparison | None = None) -> float:
    """The share of samples preferring response 1 (the policy's) over response 2 (the reference)."""
    votes = list(original.votes) + ([_flip(v) for v in swapped.votes] if swapped is not None else [])
    return vote_share(votes, 1)


class RewardService:
    def __init__(
        self,
        model: RewardModel,
        name: str = "r1reward",
        *,
        k: int = 1,
        swap: bool = False,
        max_batch: int = 256,
        max_queue: int | None = None,
        max_responses: int = 32,
        wait_s: float = 0.005,
        timeout_s: float = 300.0,
        images: ImagePolicy | None = None,
        decode_slots: int = 2,
        metrics: ServeMetrics | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if decode_slots < 1:
            raise ValueError(f"decode_slots must be at least 1, got {decode_slots}")
        if max_responses < 2:
            raise ValueError(f"max_responses must be at least 2, got {max_responses}")
        self.model, self.name, self.k, self.swap = model, name, k, swap
        self.max_responses = max_responses
        self.images = images or ImagePolicy()  # by default: no server paths
        # Each image is bounded in pixels; this bounds how many requests decode theirs at once (memory).
        self._decoding = asyncio.Semaphore(decode_slots)
        self.metrics = metrics or ServeMetrics()
        self.info = dict(info or {})
        self.batcher = Batcher(
            self._run,
            max_batch=max_batch,
            max_queue=max_queue,
            wait_s=wait_s,
            timeout_s=timeout_s,
            observe=self.metrics.observe_batch,
            on_drop=self.metrics.dropped_jobs.inc,
        )
        self.metrics.queued.set_function(lambda: self.batcher.queued)

    async def start(self) -> None:
        await self.batcher.start()

    async def close(self) -> None:
        await self.batcher.close()

    @property
    def healthy(self) -> bool:
        return self.batcher.alive

    def card(self) -> dict[str, Any]:
        """The /v1/models entry."""
        return {
            "id": self.name,
            "object": "model",
            "owned_by": "r1reward",
            "k": self.k,
            "swap": self.swap,
            "seed": self.model.seed,
            "temperature": self.model.temperature,
            "max_tokens": self.model.max_tokens,
            "max_batch": self.batcher.max_batch,
            "max_queue": self.batcher.max_queue,
            "max_responses": self.max_responses,
            "timeout_s": self.batcher.timeout_s,
            **self.info,
        }

    # --- the engine thread -----------------------------------------------------------------------
    def _run(self, prompts: list[dict[str, Any]], k: int, seeds: list[int]) -> list[Comparison]:
        return self.model.judge(prompts, k, seeds)

    # --- shared steps ----------------------------------------------------------------------------
    def _load_images(self, sources: Sequence[str], where: str, cache: dict[str, Any]) -> list[Any]:
        if len(sources) > MAX_IMAGES:
            raise ServeError(400, f"{where}: {len(sources)} images, the engine takes at most {MAX_IMAGES}")
        images = []
        for i, source in enumerate(sources):
            if source not in cache:
                try:
                    cache[source] = load_untrusted_image(source, self.images)
                except ImageRefused as exc:
                    log.warning("%s[%d] refused: %s", where, i, exc.detail)
                    raise ServeError(400, f"{where}[{i}]: {exc}") from None
            images.append(cache[source])
        return images

    def _prompts(self, pairs: list[Pair]) -> list[dict[str, Any]]:
        texts = (text for p in pairs for text in (p.question, p.response_1, p.response_2))
        self.metrics.special_tokens.inc(sum(neutralize_special_tokens(text)[1] for text in texts))
        try:
            return self.model.prompts_for(pairs)
        except DataError as exc:
            raise ServeError(400, f"images: {exc}") from None

    async def _judge(self, count: int, build: Any, k: int, seed: int) -> list[Comparison]:
        """Render the ``count`` pairs ``build()`` returns (images decoded there, off the event loop), then
        one batched engine call."""
        self.batcher.check_size(count, k)  # before any image is decoded
        async with self._decoding:
            prompts = await run_in_threadpool(lambda: self._prompts(build()))
        comparisons = await self.batcher.submit(prompts, self.model.seeds_for(len(prompts), seed), k)
        self.metrics.observe_votes(v for c in comparisons for v in c.votes)
        return comparisons

    def _settings(self, req: Any) -> tuple[int, int]:
        return (req.k or self.k), (self.model.seed if req.seed is None else req.seed)

    # --- endpoints -------------------------------------------------------------------------------
    async def compare(self, req: CompareRequest) -> dict[str, Any]:
        k, seed = self._settings(req)
        swap = self.swap if req.swap is None else req.swap

        def build() -> list[Pair]:
            images = self._load_images(req.images, "images", {})
            pair = Pair(req.question, images, req.response_1, req.response_2)
            return [pair, Pair(req.question, images, req.response_2, req.response_1)] if swap else [pair]

        results = await self._judge(2 if swap else 1, build, k, seed)
        answer = compare_answer(results[0], results[1] if swap else None)
        return {**answer, "k": k, "seed": seed, "swap": swap}

    async def rank(self, req: RankRequest) -> dict[str, Any]:
        k, seed = self._settings(req)
        n = len(req.responses)
        if n > self.max_responses:
            raise ServeError(413, f"responses: {n}, more than --max-responses {self.max_responses}")
        # The round-robin's size is checked before its pairs are built (N responses make N(N-1) pairs).
        self.batcher.check_size(n * (n - 1) // (1 if req.both_orders else 2), k)
        matches = rank_matches(n, req.both_orders)

        def build() -> list[Pair]:
            images = self._load_images(req.images, "images", {})
            return [Pair(req.question, images, req.responses[i], req.responses[j]) for i, j in matches]

        ranking = ranking_of(n, matches, await self._judge(len(matches), build, k, seed))
        games = [sum(r in match for match in matches) for r in range(n)]
        return {
            "order": ranking.order,
            "scores": [w / g for w, g in zip(ranking.wins, games)],
            "wins": ranking.wins,
            "k": k,
            "seed": seed,
            "both_orders": req.both_orders,
        }

    async def get_reward(self, req: GetRewardRequest) -> dict[str, Any]:
        k, seed = self._settings(req)
        swap = self.swap if req.swap is None else req.swap
        items = reward_items(req.query, req.prompts, req.labels)

        def build() -> list[Pair]:
            cache: dict[str, Any] = {}  # RL batches repeat each prompt's images across its samples
            pairs = []
            for i, item in enumerate(items):
                images = self._load_images(item.images, f"query[{i}].images", cache)
                pairs.append(Pair(item.question, images, item.response, item.reference))
                if swap:
                    pairs.append(Pair(item.question, images, item.reference, item.response))
            return pairs

        results = await self._judge(len(items) * (2 if swap else 1), build, k, seed)
        step = 2 if swap else 1
        rewards = [reward_of(results[i], results[i + 1] if swap else None) for i in range(0, len(results), step)]
        return {"rewards": rewards, "scores": rewards}
