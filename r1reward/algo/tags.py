"""The R1-Reward output format, ``<think>reasoning</think><answer>1|2</answer>``: the one place that
spells its tags. The rule reward, the consistency judge and evaluation all read generations through it."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

THINK_PATTERN = re.compile(r"<think>(.*?)</think>", re.DOTALL)
ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_WELL_FORMED = re.compile(r"<think>.*?</think><answer>.*?</answer>", re.DOTALL)
_ANY_TAG = re.compile(r"</?(?:think|answer)>")


def is_well_formed(text: str) -> bool:
    """True if the stripped text is exactly ``<think>...</think><answer>...</answer>`` with one of each
    opening tag (a second ``<think>`` inside the reasoning does not count as well-formed)."""
    stripped = text.strip()
    return bool(_WELL_FORMED.fullmatch(stripped)) and stripped.count("<think>") == 1 and stripped.count("<answer>") == 1


def think_text(text: str) -> str | None:
    """The content of the first ``<think>...</think>`` (unstripped), or None when there is none."""
    match = THINK_PATTERN.search(text)
    return match.group(1) if match else None


def answer_texts(text: str) -> list[str]:
    """The contents of every ``<answer>...</answer>``, in order (unstripped)."""
    return ANSWER_PATTERN.findall(text)


def first_answer_text(text: str) -> str | None:
    """The content of the first ``<answer>...</answer>`` (unstripped), or None when there is none."""
    match = ANSWER_PATTERN.search(text)
    return match.group(1) if match else None


def text_before_answer(text: str) -> str:
    """Everything before the first ``<answer>``, with the think/answer tags removed (the released
    judge's view of the reasoning, which also works when ``<think>`` is missing)."""
    return _ANY_TAG.sub("", text.split("<answer>")[0])


def answer_start(token_ids: Sequence[int], decode: Callable[[list[int]], str], max_tokens: int = 32) -> int | None:
    """The index of the token where the last ``<answer>`` tag starts (the verdict and what follows it
    are ``token_ids[index:]``), or None when the last ``max_tokens`` tokens hold no ``<answer>``.
    Decodes growing suffixes, at most ``max_tokens`` short decodes: cheap beside a step."""
    for start in range(len(token_ids) - 1, max(-1, len(token_ids) - 1 - max_tokens), -1):
        if "<answer>" in decode(list(token_ids[start:])):
            return start
    return None
