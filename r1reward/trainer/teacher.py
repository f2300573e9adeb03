"""A chat client for any OpenAI-compatible vision endpoint (GPT-4o, a local vLLM server), for annotation.

Paid calls fail in ways worth waiting out: a 429 (with or without ``Retry-After``), a 5xx, a timeout, a
dropped connection, a reply that is not a chat completion. Those are retried with exponential backoff
and jitter, every wait bounded (``max_backoff_s``) and every request bounded (``timeout_s``); after
``max_attempts`` the call fails with one line naming the endpoint and what it last saw. A bad key, model
or URL (401, 403, 404) cannot get better by waiting and stops the run at once.
"""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests

from r1reward.errors import UserError


class TeacherUnavailable(Exception):
    """One request got no usable reply after every attempt; the pair stays unannotated (a rerun asks again)."""


class TeacherRefused(UserError):
    """The endpoint refuses every request (a bad key, model or URL): the run stops."""


@dataclass(frozen=True)
class Reply:
    text: str
    usage: dict[str, int]


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header: a number of seconds or an HTTP date; None if unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class TeacherClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 120.0,
        max_attempts: int = 6,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 4096,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s, self.max_attempts = timeout_s, max_attempts
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.temperature, self.max_tokens = temperature, max_tokens
        self._local = threading.local()  # one HTTP session per thread: requests' sessions are not thread-safe

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _wait_s(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        return min(self.max_backoff_s, max(backoff, retry_after or 0.0))

    def chat(self, messages: list[dict[str, Any]], what: str) -> Reply:
        """The reply's text and token usage; ``what`` names the request in errors (e.g. "pair abc, try 2")."""
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        last = ""
        for attempt in range(self.max_attempts):
            retry_after = None
            try:
                response = self._session().post(self.url, json=body, headers=self.headers, timeout=self.timeout_s)
            except requests.Timeout:
                last = f"no reply within {self.timeout_s:g} s"
            except requests.RequestException as exc:
                last = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            else:
                if response.status_code in (401, 403, 404):
                    raise TeacherRefused(
                        f"teacher {self.url} answered HTTP {response.status_code} for {what} "
                        f"(check --teacher-url, --teacher-model and the API key): {response.text[:200]!r}"
                    )
                if response.status_code == 200:
                    reply = _parse(response)
                    if reply is not None:
                        return reply
                    last = f"a reply that is not a chat completion: {response.text[:120]!r}"
                else:
                    retry_after = retry_after_s(response.headers.get("Retry-After"))
                    last = f"HTTP {response.status_code}: {response.text[:120]!r}"
            if attempt + 1 < self.max_attempts:
                time.sleep(self._wait_s(attempt, retry_after))
        raise TeacherUnavailable(
            f"teacher {self.url}: no usable reply for {what} after {self.max_attempts} attempts (last: {last})"
        )


def _parse(response: requests.Response) -> Reply | None:
    try:
        data = response.json()
        text = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(text, str):
        return None
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    return Reply(text, {k: int(v) for k, v in usage.items() if k.endswith("_tokens") and isinstance(v, int)})
