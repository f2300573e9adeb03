"""Request bodies of ``r1reward serve`` and the error every bad request gets: a status and one line."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_K = 64  # samples per pair one request may ask for
MAX_SEED = 2**31 - 1


class ServeError(Exception):
    """A request the server answers with ``status`` and ``{"error": message}`` (one line)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = one_line(message)
        self.headers = dict(headers or {})


def one_line(text: Any, limit: int = 400) -> str:
    """``text`` on one line (whitespace runs become one space), cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _image_list(value: Any) -> Any:
    # One image may be given as a plain string.
    return [value] if isinstance(value, str) else value


class _Judged(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str
    # Base64 (bare) or data URIs, or paths under the server's --image-root; no URLs.
    images: list[str] = Field(default_factory=list)
    k: int | None = Field(default=None, ge=1, le=MAX_K)  # default: the server's --k
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)  # default: the server's --seed

    _images = field_validator("images", mode="before")(_image_list)


class CompareRequest(_Judged):
    response_1: str
    response_2: str
    swap: bool | None = None  # default: the server's --swap


class RankRequest(_Judged):
    responses: list[str] = Field(min_length=2)
    both_orders: bool = True  # each pair in both orders (cancels the position bias)


class GetRewardRequest(BaseModel):
    """OpenRLHF's remote reward body; unknown keys (e.g. ``metas``) are ignored. See ``openrlhf``."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(min_length=1)
    prompts: list[str] | None = None
    labels: list[Any] | None = None
    k: int | None = Field(default=None, ge=1, le=MAX_K)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    swap: bool | None = None
