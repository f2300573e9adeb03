"""Evaluation protocols: the generation settings, response order and prompt layout of an `eval` run.

- ``default`` (this project's): ``--temperature`` (1.0, the paper's inference-scaling setting),
  ``--max-tokens`` (1024), the rows' own response order, the prompt text first and then the image(s),
  as the model was trained.
- ``released`` (the released R1-Reward evaluation scripts, to compare with the paper's single-sample
  numbers): the checkpoint's ``generation_config.json`` (``temperature``, ``top_p``, ``top_k``; greedy when
  ``do_sample`` is false or the file is absent), 4096 new tokens, the chosen response always first (no
  swap), and the image(s) first, then the Table-1 text.

Flags given explicitly on the command line (``--temperature``, ``--top-p``, ``--top-k``, ``--max-tokens``,
``--swap``) win over the protocol's values; what was used is written to metrics.json (``run.settings``).
``released`` with ``--temperature T`` (sampling, e.g. for Voting@K) on a checkpoint whose file cuts to one
token (Qwen2.5-VL's ``top_k: 1``) is refused unless ``--top-k``/``--top-p`` say how to sample: that cut
makes every sample the greedy one, whatever T, and K identical votes would pass for a Voting@K.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1reward.errors import UserError

PROTOCOLS = ("default", "released")
DEFAULT_TEMPERATURE = 1.0
DEFAULT_MAX_TOKENS = 1024
RELEASED_MAX_TOKENS = 4096
# A top-p this small keeps only the most likely token unless the distribution is nearly flat: greedy in
# effect (Qwen2.5-VL-7B-Instruct's generation_config.json has 0.001 with top_k 1).
NEAR_GREEDY_TOP_P = 0.01


@dataclass(frozen=True)
class EvalSettings:
    temperature: float  # 0 is greedy
    top_p: float
    top_k: int  # 0: no top-k cut (vLLM's convention)
    max_tokens: int
    swap: bool  # also judge every pair in the other order
    chosen_first: bool  # reorder every pair so that the chosen response is Response 1
    image_first: bool  # prompt layout: image(s) before the Table-1 text


def read_generation_config(model_dir: str | Path | None) -> dict[str, Any]:
    """The checkpoint's generation_config.json as a dict ({} when the checkpoint has none)."""
    if model_dir is None:
        raise UserError("--protocol released reads the checkpoint's generation_config.json: pass --model")
    path = Path(model_dir) / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: expected a JSON object")
    return config


def sampling_from_generation_config(config: dict[str, Any]) -> tuple[float, float, int]:
    """(temperature, top_p, top_k) as transformers' generate would sample with this config: greedy
    unless do_sample is true, then its temperature/top_p/top_k with transformers' defaults (1.0, 1.0, 50)."""
    if not config.get("do_sample", False):
        return 0.0, 1.0, 0
    try:
        temperature = float(config.get("temperature", 1.0))
        top_p = float(config.get("top_p", 1.0))
        top_k = int(config.get("top_k", 50) or 0)
    except (TypeError, ValueError) as exc:
        raise UserError(f"generation_config.json: bad sampling value: {exc}") from None
    return temperature, top_p, max(top_k, 0)


def resolve_protocol(
    protocol: str,
    model_dir: str | Path | None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    swap: bool = False,
    top_p: float | None = None,
    top_k: int | None = None,
) -> EvalSettings:
    """The settings of `protocol`; `temperature` / `top_p` / `top_k` / `max_tokens` (None when not given)
    and `swap` are the user's explicit flags, which win."""
    if protocol == "default":
        return EvalSettings(
            DEFAULT_TEMPERATURE if temperature is None else temperature,
            1.0 if top_p is None else top_p,
            0 if top_k is None else top_k,
            DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens,
            swap,
            chosen_first=False,
            image_first=False,
        )
    if protocol == "released":
        t, file_top_p, file_top_k = sampling_from_generation_config(read_generation_config(model_dir))
        if temperature is not None and temperature > 0 and top_p is None and top_k is None:
            if file_top_k == 1 or file_top_p < NEAR_GREEDY_TOP_P:
                raise UserError(
                    f"--protocol released --temperature {temperature:g}: the checkpoint's generation_config.json "
                    f"samples with top_k={file_top_k}, top_p={file_top_p:g}, so every sample would be the greedy "
                    "one; add --top-k 0 --top-p 1.0 (or your values) to sample"
                )
        return EvalSettings(
            t if temperature is None else temperature,
            file_top_p if top_p is None else top_p,
            file_top_k if top_k is None else top_k,
            RELEASED_MAX_TOKENS if max_tokens is None else max_tokens,
            swap,
            chosen_first=True,
            image_first=True,
        )
    raise UserError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
