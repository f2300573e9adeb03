"""A Python API for a trained R1-Reward model: compare two responses, or rank N of them.

    from r1reward.eval.api import RewardModel

    with RewardModel.load("runs/tiny-cpu/checkpoints/step_4/hf") as rm:
        c = rm.compare("What is in the image?", ["cat.png"], "A cat.", "A dog.", k=5)
        c.winner, c.vote_share, c.reasoning          # 1, 0.8, "Response 1 names the cat ..."
        r = rm.rank("What is in the image?", ["cat.png"], ["A dog.", "A cat.", "A bird."], k=1)
        r.order                                      # [1, 0, 2]: response indices, best first

A script that calls ``RewardModel.load`` with one worker needs the ``if __name__ == "__main__":``
guard (vLLM starts its engine core in a new process).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from r1reward.data.records import PreferenceRecord
from r1reward.data.render import MAX_PIXELS, MIN_PIXELS, rollout_prompt
from r1reward.eval.generation import (
    Generator,
    Sampled,
    close_engine,
    eval_rollout_config,
    reasoning_of,
    sample_votes,
    start_engine,
)
from r1reward.eval.voting import Vote, majority_vote, vote_share


@dataclass(frozen=True)
class Comparison:
    winner: int | None  # 1 or 2 (majority of the k samples); None when no sample gave a parseable answer
    vote_share: float  # fraction of the k samples (unparseable ones included) that chose the winner
    reasoning: str  # the <think> text of the first sample that chose the winner (else of the first sample)
    votes: tuple[Vote, ...] = ()
    texts: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True)
class Ranking:
    order: list[int]  # response indices, best first
    wins: list[int]  # comparisons each response won
    # (i, j) -> the comparison with response i shown first and response j second.
    comparisons: dict[tuple[int, int], Comparison] = field(repr=False)


@dataclass(frozen=True)
class Pair:
    question: str
    images: Sequence[Any]  # paths, bytes or PIL images
    response_1: str
    response_2: str


def comparison_of(sampled: Sampled) -> Comparison:
    winner = majority_vote(sampled.votes)
    reason_from = next((t for t, v in zip(sampled.texts, sampled.votes) if v == winner and winner), None)
    text = reason_from if reason_from is not None else (sampled.texts[0] if sampled.texts else "")
    return Comparison(
        winner, vote_share(sampled.votes, winner), reasoning_of(text), tuple(sampled.votes), tuple(sampled.texts)
    )


def rank_matches(n: int, both_orders: bool = True) -> list[tuple[int, int]]:
    """The comparisons of a round-robin over n responses: (i, j) shows response i first."""
    return [(i, j) for i in range(n) for j in range(n) if i != j and (both_orders or i < j)]


def ranking_of(n: int, matches: Sequence[tuple[int, int]], results: Sequence[Comparison]) -> Ranking:
    """Wins per response over the round-robin's comparisons; the order is by wins, ties to the lower index."""
    wins = [0] * n
    for (i, j), comparison in zip(matches, results):
        if comparison.winner is not None:
            wins[i if comparison.winner == 1 else j] += 1
    order = sorted(range(n), key=lambda index: (-wins[index], index))
    return Ranking(order, wins, dict(zip(matches, results)))


class RewardModel:
    """A generative reward model behind a vLLM engine (or any object with RolloutWorker.generate)."""

    def __init__(
        self,
        engine: Generator,
        processor: Any,
        *,
        temperature: float = 1.0,
        max_tokens: int = 1024,
        min_pixels: int = MIN_PIXELS,
        max_pixels: int = MAX_PIXELS,
        seed: int = 0,
        owns_engine: bool = False,
    ) -> None:
        self.engine, self.processor = engine, processor
        self.temperature, self.max_tokens = temperature, max_tokens
        self.min_pixels, self.max_pixels, self.seed = min_pixels, max_pixels, seed
        self.owns_engine = owns_engine

    @classmethod
    def load(
        cls,
        model_dir: str,
        *,
        workers: int = 1,
        temperature: float = 1.0,
        max_tokens: int = 1024,
        min_pixels: int = MIN_PIXELS,
        max_pixels: int = MAX_PIXELS,
        dtype: str = "auto",
        max_model_len: int | None = None,
        seed: int = 0,
        gpus_per_worker: float | None = None,
        gpu_memory_utilization: float = 0.85,
    ) -> RewardModel:
        """Load a checkpoint (Hugging Face format) into vLLM: in-process, or as W Ray actors.
        ``temperature`` 1.0 is the paper's sampling temperature; pass 0 for greedy judgements."""
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(model_dir)
        config = eval_rollout_config(max_tokens, temperature, dtype, max_model_len, seed, gpu_memory_utilization)
        engine = start_engine(model_dir, config, (min_pixels, max_pixels), workers, gpus_per_worker)
        return cls(
            engine,
            processor,
            temperature=temperature,
            max_tokens=max_tokens,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            seed=seed,
            owns_engine=True,
        )

    def prompts_for(self, pairs: Sequence[Pair]) -> list[dict[str, Any]]:
        """The rendered prompts (images decoded and resized) that compare_pairs sends to the engine."""
        records = [
            PreferenceRecord(
                id=str(i),
                question=p.question,
                images=list(p.images),
                response_1=p.response_1,
                response_2=p.response_2,
                label=1,
            )
            for i, p in enumerate(pairs)
        ]
        return [rollout_prompt(self.processor, r, self.min_pixels, self.max_pixels) for r in records]

    def seeds_for(self, count: int, seed: int | None = None) -> list[int]:
        """One sampling seed per prompt of a call: prompt i of a call with seed s uses s * 1_000_003 + i,
        so a call's answers do not depend on what else the engine is generating."""
        base = self.seed if seed is None else seed
        return [base * 1_000_003 + i for i in range(count)]

    def judge(
        self, prompts: list[dict[str, Any]], k: int, seeds: list[int], temperature: float | None = None
    ) -> list[Comparison]:
        """K sampled judgements per rendered prompt, one seed per prompt: the engine call of compare_pairs
        (r1reward serve batches several clients' prompts into one such call)."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        sampled = sample_votes(
            self.engine, prompts, k, self.temperature if temperature is None else temperature, self.max_tokens, seeds
        )
        return [comparison_of(s) for s in sampled]

    def compare_pairs(
        self, pairs: Sequence[Pair], k: int = 1, temperature: float | None = None, seed: int | None = None
    ) -> list[Comparison]:
        """One Comparison per pair, all pairs generated in one batch (k samples each). ``seed`` (default:
        the model's) fixes the samples."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        prompts = self.prompts_for(pairs)
        return self.judge(prompts, k, self.seeds_for(len(prompts), seed), temperature)

    def compare(
        self,
        question: str,
        images: Sequence[Any],
        response_1: str,
        response_2: str,
        k: int = 1,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> Comparison:
        """Which response is better (1 or 2), by majority over k sampled judgements."""
        return self.compare_pairs([Pair(question, images, response_1, response_2)], k, temperature, seed)[0]

    def rank(
        self,
        question: str,
        images: Sequence[Any],
        responses: Sequence[str],
        k: int = 1,
        both_orders: bool = True,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> Ranking:
        """Best-of-N by a round-robin of pairwise comparisons.

        Every pair of responses is compared (in both orders by default, which cancels the position
        bias and costs N(N-1) comparisons of k samples each; else once, the lower index first). A
        response earns one win per comparison it wins; the order is by wins, ties to the lower index.
        """
        matches = rank_matches(len(responses), both_orders)
        results = (
            self.compare_pairs(
                [Pair(question, images, responses[i], responses[j]) for i, j in matches], k, temperature, seed
            )
            if matches
            else []
        )
        return ranking_of(len(responses), matches, results)

    def close(self) -> None:
        """Stop the engine if this object started it (RewardModel.load)."""
        if self.owns_engine and self.engine is not None:
            close_engine(self.engine)
            self.engine = None

    def __enter__(self) -> RewardModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
