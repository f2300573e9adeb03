"""OpenRLHF's remote reward protocol (``--remote_rm_url http://HOST:PORT/get_reward``) on a pairwise judge.

OpenRLHF posts ``{"query": [...], "prompts": [...], "labels": [...]}`` (one item per sampled response;
``query`` is prompt + response as text, ``labels`` the dataset's ``--label_key`` column) and reads
``{"rewards": [...]}``. A generative reward model compares two responses, so each query's response is
judged against a **reference response**:

- ``reward = the fraction of the K samples (2K with swap: both orders) that prefer the query's response
  over the reference``, in [0, 1]. Unparseable samples count against it. ``scores`` repeats it (OpenRLHF
  uses ``scores`` for dynamic filtering).
- Each item's fields come from, later sources winning:
  1. ``prompts[i]``: the question;
  2. ``labels[i]``: a JSON object (or a string holding one) with any of ``question``, ``images``,
     ``reference``; any other string is the reference response itself;
  3. ``query[i]``: a string holding a JSON object with any of ``question``, ``images``, ``response``,
     ``reference``; else the text, whose response is what follows ``prompts[i]`` when the query starts
     with it.
- Chat-templated text (ChatML, as Qwen writes it) is unwrapped: a question is the last user turn, a
  response the text after the last assistant header; other special tokens are removed. Special-token
  strings in JSON fields are kept as text: the prompt neutralises them (``r1reward.data.prompt``).
- ``images``: bare base64, data URIs or paths under the server's ``--image-root`` (a single string is one image).
  A multimodal dataset typically puts ``{"question": ..., "images": [...], "reference": ...}`` in its
  label column.

An item without a question, a response or a reference is a 400 naming the item.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from r1reward.data.prompt import neutralize_special_tokens
from r1reward.serve.schemas import ServeError

_USER_TURN = re.compile(r"<\|im_start\|>user\s*\n(.*?)(?:<\|im_end\|>|$)", re.DOTALL)
_ASSISTANT = "<|im_start|>assistant"
_FIELDS = ("question", "images", "response", "reference")


@dataclass(frozen=True)
class RewardItem:
    question: str
    images: list[str]
    response: str
    reference: str


def _json_object(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def _clean(text: str) -> str:
    return neutralize_special_tokens(text, remove=True)[0].strip()


def question_text(text: str) -> str:
    """The question in a prompt: its last ChatML user turn when it has one, special tokens removed."""
    turns = _USER_TURN.findall(text)
    return _clean(turns[-1] if turns else text)


def response_text(query: str, prompt: str | None) -> str:
    """The response in prompt + response: the text after the prompt, or after the last assistant header."""
    if prompt and query.startswith(prompt):
        query = query[len(prompt) :]
    elif _ASSISTANT in query:
        query = query.rsplit(_ASSISTANT, 1)[1]
    return _clean(query)


def _take(fields: dict[str, Any], source: dict[str, Any], where: str, allowed: tuple[str, ...]) -> None:
    for key in allowed:
        if key in source and source[key] is not None:
            value = source[key]
            if key == "images":
                value = [value] if isinstance(value, str) else value
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ServeError(400, f"get_reward: {where}.images must be a string or a list of strings")
            elif not isinstance(value, str):
                raise ServeError(400, f"get_reward: {where}.{key} must be a string")
            fields[key] = value


def reward_items(
    query: list[str], prompts: list[str] | None = None, labels: list[Any] | None = None
) -> list[RewardItem]:
    """One item per query (see the module's rules), or a 400 ServeError naming the first bad one."""
    for name, values in (("prompts", prompts), ("labels", labels)):
        if values is not None and len(values) != len(query):
            raise ServeError(400, f"get_reward: {len(values)} {name} for {len(query)} queries")
    items = []
    for i, text in enumerate(query):
        fields: dict[str, Any] = {"images": []}
        prompt = prompts[i] if prompts is not None else None
        if prompt:
            fields["question"] = question_text(prompt)
        label = labels[i] if labels is not None else None
        label_object = _json_object(label)
        if label_object is not None:
            _take(fields, label_object, f"labels[{i}]", ("question", "images", "reference"))
        elif isinstance(label, str) and label.strip():
            fields["reference"] = _clean(label)
        query_object = _json_object(text)
        if query_object is not None:
            _take(fields, query_object, f"query[{i}]", _FIELDS)
        else:
            fields["response"] = response_text(text, prompt)
        missing = [key for key in ("question", "response", "reference") if key not in fields]
        if missing:
            raise ServeError(
                400,
                f"get_reward: query[{i}] has no {' and no '.join(missing)} "
                "(see the protocol in r1reward/serve/openrlhf.py)",
            )
        items.append(RewardItem(fields["question"], list(fields["images"]), fields["response"], fields["reference"]))
    return items
