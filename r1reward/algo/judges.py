"""Consistency judges: does a generation's reasoning support its final answer? (paper §4.3)

Each judge maps generations to -1 / 0 / +1 and counts its failures. ``rule`` needs no model, nor does
``synthetic-trace``, which checks the synthetic task's whole reasoning chain instead of its conclusion
alone (r1reward/data/synthetic.py); ``openai`` asks an OpenAI-compatible chat-completions endpoint;
``vllm`` asks a judge model served by a Ray actor (``r1reward.reward.actor.JudgeEngine``, reached
through a ``JudgeClient``). As in the released code the model judges are text only and see the last 3
lines of the reasoning and the answer rewritten as "response N is better".

Prompts (``reward.judge_prompt``): ``released`` states the released judge's rules (1 when reasoning and
answer mean the same; 0 for an ambiguous conclusion, the opposite choice, or approving both) and lets
the judge reason; ``concise`` asks for one character. The last standalone 0 or 1 of the reply is read:
"1" -> +1, "0" -> -1. A reply without one is asked again (``reward.judge_retries``); a generation whose
judge still fails or never answers gives 0 (neutral: the reward rests on result and format) and is
counted. Unlike the released code, a failure never earns a reward.

A model judge must not vanish silently: `ready(timeout_s)` waits for it at start-up (the run's
`timeouts.startup_s`) and fails with one line naming it (`describe_judge`); during the run the reward
group stops training once too many generations get no verdict (`reward.max_judge_failure_rate`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from r1reward.algo.registry import Registry
from r1reward.algo.reward import parse_answer, rule_consistency
from r1reward.algo.tags import text_before_answer, think_text
from r1reward.config.schema import RewardConfig
from r1reward.errors import UserError
from r1reward.waits import error_line

log = logging.getLogger(__name__)

# The concise prompt; {reasoning} and {answer} come from `judge_view`.
JUDGE_PROMPT = (
    "You are checking a reward model's verdict. It compared two responses, Response 1 and Response 2, "
    "reasoned about them, and then gave a final answer.\n\n"
    "The end of its reasoning:\n{reasoning}\n\n"
    "Its final answer: {answer}\n\n"
    "Does the reasoning support the final answer, i.e. does it conclude in favour of the same response? "
    "Reply with a single character: 1 if it does, 0 if it does not."
)
# The released judge's rules, in our words. It may reason first, so its verdict is the last 0/1.
RELEASED_JUDGE_PROMPT = (
    "You are a strict judge with one task: decide whether a model's reasoning and its final answer agree.\n\n"
    "# Rules\n"
    "1. Output 1 when the reasoning and the answer have the same meaning.\n"
    "2. Output 0 when they do not match:\n"
    "   - the reasoning ends in an ambiguous conclusion without a clear choice;\n"
    "   - the reasoning chooses the opposite of the answer;\n"
    "   - the reasoning approves both responses equally.\n\n"
    "######### Model's reasoning (last lines) #########\n{reasoning}\n\n"
    "######### Model's answer #########\n{answer}\n\n"
    "End your reply with the single digit 1 or 0.\nOutput: "
)
JUDGE_TEMPERATURE = 0.1
MAX_CONCURRENCY = 8
# The start-up probe: one token of a real chat completion, so the URL, the model name and the key are
# checked with the request the judge will make.
PROBE_PROMPT = "Reply with the digit 1."
PROBE_INTERVAL_S = 1.0


class JudgeNotReady(UserError):
    """The judge did not answer at start-up within timeouts.startup_s, or refused the request."""


def describe_judge(cfg: RewardConfig) -> str:
    """The judge as error lines name it: kind, model and, for an endpoint, its URL."""
    if cfg.judge == "openai":
        return f"the openai judge '{cfg.judge_model}' at {chat_completions_url(cfg.judge_url or '')}"
    return f"the {cfg.judge} judge" + (f" '{cfg.judge_model}'" if needs_model_actor(cfg.judge) else "")


def chat_completions_url(url: str) -> str:
    """`judge_url` as given (``.../chat/completions``) or its base (``http://host:8000/v1``) completed."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


@dataclass(frozen=True)
class JudgePrompt:
    template: str
    joiner: str  # how the last reasoning lines are joined
    answer: str  # the final answer restated, {n} = 1 or 2
    max_tokens: int  # room for the reply: a reasoning judge needs far more than one character


# `reward.judge_prompt` names one of these; a new prompt is one `JUDGE_PROMPTS.add(name, JudgePrompt(...))`.
JUDGE_PROMPTS: Registry[JudgePrompt] = Registry("judge prompt")
# Released: the text before <answer>, last 3 lines joined with ';', "response N is better".
JUDGE_PROMPTS.add("released", JudgePrompt(RELEASED_JUDGE_PROMPT, ";", "response {n} is better", 1024))
JUDGE_PROMPTS.add("concise", JudgePrompt(JUDGE_PROMPT, "\n", "Response {n} is better", 8))


@dataclass
class JudgeResult:
    values: list[int]  # -1 / 0 / +1 per generation
    failures: int = 0  # calls that still failed (timeout, connection, HTTP error) after the retries
    invalid: int = 0  # answers that were neither "1" nor "0"
    skipped: int = 0  # generations with no parseable answer or no reasoning: 0 without a call


def judge_view(text: str, max_lines: int = 3, prompt: str = "released") -> tuple[str, str] | None:
    """(last non-empty reasoning lines, the answer restated), or None when there is nothing to judge:
    no parseable answer, or no reasoning. ``released`` reads the text before ``<answer>`` (tags
    dropped); ``concise`` the ``<think>`` part when there is one."""
    style = JUDGE_PROMPTS[prompt]
    answer = parse_answer(text)
    if answer is None:
        return None
    think = think_text(text) if prompt == "concise" else None
    reasoning = think if think is not None else text_before_answer(text)
    lines = [line.strip() for line in reasoning.splitlines() if line.strip()][-max_lines:]
    if not lines:
        return None
    return style.joiner.join(lines), style.answer.format(n=answer)


def build_judge_prompt(text: str, prompt: str = "released") -> str | None:
    view = judge_view(text, prompt=prompt)
    return None if view is None else JUDGE_PROMPTS[prompt].template.format(reasoning=view[0], answer=view[1])


# A 0 or 1 that is not part of a word or a number ("10", "0.5", "v1" do not count).
_VERDICT = re.compile(r"(?<![\w.])[01](?!\w|\.\d)")


def parse_judge_output(output: str) -> int | None:
    """The last standalone 0 or 1 of the reply: "1" -> +1, "0" -> -1; None when there is none."""
    found = _VERDICT.findall(output or "")
    return None if not found else (1 if found[-1] == "1" else -1)


def judge_max_tokens(cfg: RewardConfig) -> int:
    return cfg.judge_max_tokens or JUDGE_PROMPTS[cfg.judge_prompt].max_tokens


class RuleJudge:
    """The model-free stand-in: `rule_consistency` on each generation."""

    def judge(self, texts: list[str]) -> JudgeResult:
        return JudgeResult([rule_consistency(t) for t in texts])

    def ready(self, timeout_s: float) -> None:
        """Nothing to wait for: no model, no failure."""


class SyntheticTraceJudge(RuleJudge):
    """The synthetic task's checkable chain, judged whole: +1 when the trace's claims follow its own
    caption, pick one response, and the conclusion and answer name it; -1 when they do not (claims
    without a caption follow nothing); for a trace without claims, what `rule_consistency` says."""

    def judge(self, texts: list[str]) -> JudgeResult:
        from r1reward.data.synthetic import CLAIM, trace_picks

        def verdict(text: str) -> int:
            rule = rule_consistency(text)
            if not CLAIM.search(text):
                return rule
            picked = trace_picks(text)
            return 1 if rule == 1 and picked is not None and picked == parse_answer(text) else -1

        return JudgeResult([verdict(t) for t in texts])


class _NoRetry(Exception):
    """A client error (400, 401, 404 ...) that a retry would not fix."""


def _pending(texts: list[str], prompt: str) -> tuple[list[str | None], list[int], JudgeResult]:
    """Judge prompts, the indices worth a call (a parseable answer and reasoning), and a result that
    starts at 0 for every generation with the others counted as skipped."""
    prompts = [build_judge_prompt(t, prompt) for t in texts]
    todo = [i for i, p in enumerate(prompts) if p is not None]
    return prompts, todo, JudgeResult([0] * len(texts), skipped=len(texts) - len(todo))


def _backoff(backoff_s: float, attempt: int) -> None:
    time.sleep(min(backoff_s * 2**attempt, 2.0))


def _count(result: JudgeResult, problems: dict[int, str]) -> None:
    """Generations still without a verdict stay at 0: a call that failed, or replies without a 0/1."""
    result.failures += sum(p == "failed" for p in problems.values())
    result.invalid += sum(p == "invalid" for p in problems.values())


def _ask(call: Callable[[], str], retries: int, backoff_s: float, what: str) -> tuple[int, str | None]:
    """call() until its reply holds a verdict, at most 1 + retries times: (value, None), or
    (0, "failed" | "invalid") for what went wrong last."""
    problem = "failed"
    for attempt in range(retries + 1):
        try:
            value = parse_judge_output(call())
        except _NoRetry as exc:
            log.warning("%s failed, not retried: %s", what, exc)
            return 0, "failed"
        except Exception as exc:  # noqa: BLE001 - any failure of the judge must end as a neutral 0
            log.warning("%s failed (try %d of %d): %s", what, attempt + 1, retries + 1, exc)
            problem = "failed"
            if attempt < retries:
                _backoff(backoff_s, attempt)
            continue
        if value is not None:
            return value, None
        problem = "invalid"  # a reply without a 0/1: ask again at once (temperature 0.1 may vary it)
    return 0, problem


class OpenAIJudge:
    """A judge behind an OpenAI-compatible chat-completions endpoint (e.g. `vllm serve`).

    `judge_url` is the base URL (``http://host:8000/v1``) or the full ``.../chat/completions`` URL.
    Each request is bounded by `judge_timeout_s` (connect, each read, and the whole body) and tried
    1 + `judge_retries` times (failed calls and replies without a verdict alike); up to
    `MAX_CONCURRENCY` requests run at once."""

    def __init__(self, cfg: RewardConfig, backoff_s: float = 0.25, max_concurrency: int = MAX_CONCURRENCY) -> None:
        if not cfg.judge_url or not cfg.judge_model:
            raise UserError("reward.judge=openai needs reward.judge_url and reward.judge_model")
        self.url = chat_completions_url(cfg.judge_url)
        self.name = describe_judge(cfg)
        self.model = cfg.judge_model
        self.prompt = cfg.judge_prompt
        self.max_tokens = judge_max_tokens(cfg)
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

    def _request(self, prompt: str, max_tokens: int | None = None, timeout_s: float | None = None) -> str:
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": JUDGE_TEMPERATURE,
            "max_tokens": max_tokens or self.max_tokens,
        }
        deadline = time.monotonic() + timeout_s
        # stream=True so the body is read under our own deadline: requests' timeout is per socket
        # read, and a server that trickles bytes would otherwise hold the call far longer.
        with self._session().post(self.url, json=payload, headers=self.headers, timeout=timeout_s, stream=True) as resp:
            if 400 <= resp.status_code < 500 and resp.status_code not in (408, 429):
                raise _NoRetry(f"HTTP {resp.status_code} from {self.url}")
            resp.raise_for_status()
            body = b""
            for chunk in resp.iter_content(chunk_size=8192):
                body += chunk
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading the judge's reply took over {timeout_s} s")
        return json.loads(body)["choices"][0]["message"]["content"] or ""

    def ready(self, timeout_s: float) -> None:
        """Until the endpoint answers a one-token chat completion, for at most `timeout_s`: a refused
        connection, a timeout or a 5xx is tried again (a server still loading its model), a client
        error (a wrong model, path or key) fails at once. Raises JudgeNotReady naming the judge."""
        deadline = time.monotonic() + timeout_s
        last = "no try"
        while (left := deadline - time.monotonic()) > 0:
            try:
                self._request(PROBE_PROMPT, max_tokens=1, timeout_s=min(self.timeout_s, left))
                return
            except _NoRetry as exc:
                raise JudgeNotReady(f"{self.name} refused the start-up request: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - any failure to answer is tried again until the deadline
                last = error_line(exc)
            time.sleep(max(0.0, min(PROBE_INTERVAL_S, deadline - time.monotonic())))
        raise JudgeNotReady(f"{self.name} did not answer within {timeout_s:g} s (last try: {last})")

    def judge(self, texts: list[str]) -> JudgeResult:
        prompts, todo, result = _pending(texts, self.prompt)
        if not todo:
            return result
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(todo))) as pool:
            answers = list(
                pool.map(
                    lambda i: _ask(
                        lambda: self._request(prompts[i]), self.retries, self.backoff_s, f"judge request to {self.url}"
                    ),
                    todo,
                )
            )
        problems = {}
        for i, (value, problem) in zip(todo, answers):
            result.values[i] = value
            if problem is not None:
                problems[i] = problem
        _count(result, problems)
        return result


class JudgeClient(Protocol):
    """What a model-backed judge calls: `generate` answers each prompt, or raises after `timeout_s`."""

    def generate(self, prompts: list[str], temperature: float, max_tokens: int, timeout_s: float) -> list[str]: ...

    def ready(self, timeout_s: float, name: str) -> None:
        """Until the judge model has loaded; raises JudgeNotReady, naming the judge `name`, after `timeout_s`."""


class VLLMJudge:
    """A judge model behind a `JudgeClient` (in training: `reward.actor.RayJudgeClient` over the Ray
    actor that owns a text-only `vllm.LLM`), so this module needs no Ray.

    One batched call per round, bounded by `judge_timeout_s`; up to `judge_retries` more rounds ask
    again for the generations still without a verdict (the whole batch after a failed call, only the
    invalid replies otherwise)."""

    def __init__(self, cfg: RewardConfig, judge_client: JudgeClient | None, backoff_s: float = 0.25) -> None:
        if judge_client is None:
            raise UserError("reward.judge=vllm needs a judge model actor (see r1reward.reward.actor.RayJudgeClient)")
        self.client = judge_client
        self.name = describe_judge(cfg)
        self.prompt = cfg.judge_prompt
        self.max_tokens = judge_max_tokens(cfg)
        self.timeout_s = float(cfg.judge_timeout_s)
        self.retries = max(0, int(cfg.judge_retries))
        self.backoff_s = backoff_s

    def ready(self, timeout_s: float) -> None:
        self.client.ready(timeout_s, self.name)

    def _request(self, prompts: list[str]) -> list[str]:
        outputs = self.client.generate(prompts, JUDGE_TEMPERATURE, self.max_tokens, self.timeout_s)
        if len(outputs) != len(prompts):
            raise RuntimeError(f"judge actor returned {len(outputs)} outputs for {len(prompts)} prompts")
        return outputs

    def judge(self, texts: list[str]) -> JudgeResult:
        prompts, todo, result = _pending(texts, self.prompt)
        problems = {i: "failed" for i in todo}
        for attempt in range(self.retries + 1):
            pending = [i for i in todo if i in problems]
            if not pending:
                break
            try:
                outputs = self._request([prompts[i] for i in pending])
            except Exception as exc:  # noqa: BLE001 - a failed round leaves these generations pending
                log.warning("vLLM judge call failed (try %d of %d): %s", attempt + 1, self.retries + 1, exc)
                if attempt < self.retries:
                    _backoff(self.backoff_s, attempt)
                continue
            for i, output in zip(pending, outputs):
                value = parse_judge_output(output)
                if value is None:
                    problems[i] = "invalid"
                else:
                    result.values[i] = value
                    del problems[i]
        _count(result, problems)
        return result


# `reward.judge` names one of these: a factory (reward config, judge actor or None) -> judge. Each declares
# the reward-config fields it needs (`requires`, checked at start-up) and whether it needs its own model
# actor (`model_actor`: a vLLM judge model on a planned slot).
JUDGES: Registry[Callable[[RewardConfig, Any], Any]] = Registry("judge")
JUDGES.add("rule", lambda cfg, judge_client: RuleJudge())
JUDGES.add("synthetic-trace", lambda cfg, judge_client: SyntheticTraceJudge())
JUDGES.add("openai", lambda cfg, judge_client: OpenAIJudge(cfg), requires=("judge_url", "judge_model"))
JUDGES.add("vllm", VLLMJudge, requires=("judge_model",), model_actor=True)


def needs_model_actor(judge: str) -> bool:
    """Whether the judge named `judge` needs a judge model on its own actor (declared at registration)."""
    return bool(JUDGES.declared(judge, "model_actor", False))


def make_judge(cfg: RewardConfig, judge_client: JudgeClient | None = None) -> RuleJudge | OpenAIJudge | VLLMJudge:
    if cfg.judge not in JUDGES:
        raise UserError(f"reward.judge must be one of {JUDGES.names()}, got {cfg.judge!r}")
    if cfg.judge_prompt not in JUDGE_PROMPTS:
        raise UserError(f"reward.judge_prompt must be one of {JUDGE_PROMPTS.names()}, got {cfg.judge_prompt!r}")
    return JUDGES.get(cfg.judge)(cfg, judge_client)
