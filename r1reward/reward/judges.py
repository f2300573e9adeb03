"""Consistency judges: does a generation's reasoning support its final answer? (paper §4.3)

Each judge maps generations to -1 / 0 / +1 and counts its failures. ``rule`` needs no model;
``openai`` asks an OpenAI-compatible chat-completions endpoint; ``vllm`` asks a judge model served by
a Ray actor (``r1reward.reward.actor.JudgeEngine``). As in the released code the model judges are
text only and see the last 3 lines of the reasoning and the answer rewritten as "Response N is better";
"1" -> +1, "0" -> -1. Anything else, or a call that still fails after the retries, gives 0 (neutral:
the reward then rests on result and format alone).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from r1reward.algo.reward import parse_answer, rule_consistency
from r1reward.config.schema import RewardConfig
from r1reward.errors import UserError

log = logging.getLogger(__name__)

# The one place the judge prompt lives; {reasoning} and {answer} come from `judge_view`.
JUDGE_PROMPT = (
    "You are checking a reward model's verdict. It compared two responses, Response 1 and Response 2, "
    "reasoned about them, and then gave a final answer.\n\n"
    "The end of its reasoning:\n{reasoning}\n\n"
    "Its final answer: {answer}\n\n"
    "Does the reasoning support the final answer, i.e. does it conclude in favour of the same response? "
    "Reply with a single character: 1 if it does, 0 if it does not."
)
JUDGE_TEMPERATURE = 0.1
JUDGE_MAX_TOKENS = 8  # the judge answers one character; a little slack for whitespace or a period
MAX_CONCURRENCY = 8

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL)
_TAG = re.compile(r"</?(?:think|answer)>")


@dataclass
class JudgeResult:
    values: list[int]  # -1 / 0 / +1 per generation
    failures: int = 0  # calls that still failed (timeout, connection, HTTP error) after the retries
    invalid: int = 0  # answers that were neither "1" nor "0"
    skipped: int = 0  # generations with no parseable answer or no reasoning: 0 without a call


def judge_view(text: str, max_lines: int = 3) -> tuple[str, str] | None:
    """(last non-empty reasoning lines, "Response N is better"), or None when there is nothing to
    judge: no parseable answer, or no reasoning."""
    answer = parse_answer(text)
    if answer is None:
        return None
    think = _THINK.search(text)
    # Without <think> tags the reasoning is whatever precedes the answer.
    reasoning = think.group(1) if think else _TAG.sub("", text.split("<answer>")[0])
    lines = [line.strip() for line in reasoning.splitlines() if line.strip()][-max_lines:]
    if not lines:
        return None
    return "\n".join(lines), f"Response {answer} is better"


def build_judge_prompt(text: str) -> str | None:
    view = judge_view(text)
    return None if view is None else JUDGE_PROMPT.format(reasoning=view[0], answer=view[1])


def parse_judge_output(output: str) -> int | None:
    """"1" -> +1, "0" -> -1 (tolerating quotes, a period or <answer> tags); None for anything else."""
    stripped = _TAG.sub("", output).strip().strip("\"'`*.").strip()
    return {"1": 1, "0": -1}.get(stripped)


class RuleJudge:
    """The model-free stand-in: `rule_consistency` on each generation."""

    def judge(self, texts: list[str]) -> JudgeResult:
        return JudgeResult([rule_consistency(t) for t in texts])


class _NoRetry(Exception):
    """A client error (400, 401, 404 ...) that a retry would not fix."""


def _pending(texts: list[str]) -> tuple[list[str | None], list[int], JudgeResult]:
    """Judge prompts, the indices worth a call (a parseable answer and reasoning), and a result that
    starts at 0 for every generation with the others counted as skipped."""
    prompts = [build_judge_prompt(t) for t in texts]
    todo = [i for i, p in enumerate(prompts) if p is not None]
    return prompts, todo, JudgeResult([0] * len(texts), skipped=len(texts) - len(todo))


def _call_with_retries(fn: Callable[[], str], retries: int, backoff_s: float, what: str) -> str | None:
    """fn() up to 1 + retries times with exponential backoff; None if every try failed."""
    for attempt in range(retries + 1):
        try:
            return fn()
        except _NoRetry as exc:
            log.warning("%s failed, not retried: %s", what, exc)
            return None
        except Exception as exc:  # noqa: BLE001 - any failure of the judge must end as a neutral 0
            log.warning("%s failed (try %d of %d): %s", what, attempt + 1, retries + 1, exc)
            if attempt < retries:
                time.sleep(min(backoff_s * 2**attempt, 2.0))
    return None


class OpenAIJudge:
    """A judge behind an OpenAI-compatible chat-completions endpoint (e.g. `vllm serve`).

    `judge_url` is the base URL (``http://host:8000/v1``) or the full ``.../chat/completions`` URL.
    Each request is bounded by `judge_timeout_s` (connect, each read, and the whole body) and tried
    1 + `judge_retries` times; up to `MAX_CONCURRENCY` requests run at once."""

    def __init__(self, cfg: RewardConfig, backoff_s: float = 0.25, max_concurrency: int = MAX_CONCURRENCY) -> None:
        if not cfg.judge_url or not cfg.judge_model:
            raise UserError("reward.judge=openai needs reward.judge_url and reward.judge_model")
        url = cfg.judge_url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = cfg.judge_model
        self.timeout_s = float(cfg.judge_timeout_s)
        self.retries = max(0, int(cfg.judge_retries))
        self.backoff_s = backoff_s
        self.max_concurrency = max(1, max_concurrency)
        key = os.environ.get(cfg.judge_api_key_env or "", "")
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self._local = threading.local()  # requests.Session is not thread-safe: one per pool thread

    def _session(self) -> Any:
        import requests

        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _request(self, prompt: str) -> str:
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                   "temperature": JUDGE_TEMPERATURE, "max_tokens": JUDGE_MAX_TOKENS}
        deadline = time.monotonic() + self.timeout_s
        # stream=True so the body is read under our own deadline: requests' timeout is per socket
        # read, and a server that trickles bytes would otherwise hold the call far longer.
        with self._session().post(self.url, json=payload, headers=self.headers, timeout=self.timeout_s,
                                  stream=True) as resp:
            if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                raise _NoRetry(f"HTTP {resp.status_code} from {self.url}")
            resp.raise_for_status()
            body = b""
            for chunk in resp.iter_content(chunk_size=8192):
                body += chunk
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading the judge's reply took over {self.timeout_s} s")
        return json.loads(body)["choices"][0]["message"]["content"] or ""

    def judge(self, texts: list[str]) -> JudgeResult:
        prompts, todo, result = _pending(texts)
        if not todo:
            return result
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo))) as pool:
            outputs = list(pool.map(
                lambda i: _call_with_retries(lambda: self._request(prompts[i]), self.retries, self.backoff_s,
                                             f"judge request to {self.url}"), todo))
        for i, output in zip(todo, outputs):
            _record(result, i, output)
        return result


def _record(result: JudgeResult, i: int, output: str | None) -> None:
    if output is None:
        result.failures += 1
        return
    value = parse_judge_output(output)
    if value is None:
        result.invalid += 1
    result.values[i] = value or 0


class VLLMJudge:
    """A judge model served by a Ray actor (`JudgeEngine`) that owns a text-only `vllm.LLM`.

    One batched call per `judge()`, bounded by `judge_timeout_s` through `ray.get(timeout=...)` and tried
    1 + `judge_retries` times; if every try fails, all generations of the batch get 0 as failures."""

    def __init__(self, cfg: RewardConfig, judge_actor: Any, backoff_s: float = 0.25) -> None:
        if judge_actor is None:
            raise UserError("reward.judge=vllm needs a judge actor (see r1reward.reward.actor.make_judge_actor_class)")
        self.actor = judge_actor
        self.timeout_s = float(cfg.judge_timeout_s)
        self.retries = max(0, int(cfg.judge_retries))
        self.backoff_s = backoff_s

    def _request(self, prompts: list[str]) -> list[str]:
        import ray

        ref = self.actor.generate.remote(prompts, JUDGE_TEMPERATURE, JUDGE_MAX_TOKENS)
        try:
            outputs = ray.get(ref, timeout=self.timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref)  # a queued call is dropped; a running one finishes in the actor, unread
            raise
        if len(outputs) != len(prompts):
            raise RuntimeError(f"judge actor returned {len(outputs)} outputs for {len(prompts)} prompts")
        return outputs

    def judge(self, texts: list[str]) -> JudgeResult:
        prompts, todo, result = _pending(texts)
        if not todo:
            return result
        outputs = _call_with_retries(lambda: self._request([prompts[i] for i in todo]), self.retries,
                                     self.backoff_s, "vLLM judge call")
        for k, i in enumerate(todo):
            _record(result, i, None if outputs is None else outputs[k])
        return result


JUDGES = {"rule": RuleJudge, "openai": OpenAIJudge, "vllm": VLLMJudge}


def make_judge(cfg: RewardConfig, judge_actor: Any = None) -> RuleJudge | OpenAIJudge | VLLMJudge:
    if cfg.judge not in JUDGES:
        raise UserError(f"reward.judge must be one of {sorted(JUDGES)}, got {cfg.judge!r}")
    if cfg.judge == "rule":
        return RuleJudge()
    if cfg.judge == "openai":
        return OpenAIJudge(cfg)
    return VLLMJudge(cfg, judge_actor)
