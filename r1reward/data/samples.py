"""Typed samples: one generation on its way from the sampler to the learner, and the collated batch.

Each field declares its kind in its metadata, so that batching reads the declaration instead of
guessing from shapes (as OpenRLHF's `Experience` names each field's role):

* ``token_ids``: the prompt's or the completion's token ids;
* ``multimodal``: vision inputs, concatenated over the samples (Qwen2.5-VL reads patches in order);
* ``per_token``: one float per completion token, placed on the learner's next-token grid;
* ``per_sequence``: one number per sample, batched as a ``[B]`` tensor;
* ``driver``: what only the driver reads (the text for the reward, the label); never batched.

``to_learner`` says whether the learner's update needs the field; `Sample.for_learner` drops the
rest before the samples cross to the learner ranks. Everything here is lists, numbers and CPU
tensors, so samples pickle through Ray as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from torch import Tensor

TOKEN_IDS, MULTIMODAL, PER_TOKEN, PER_SEQUENCE, DRIVER = (
    "token_ids",
    "multimodal",
    "per_token",
    "per_sequence",
    "driver",
)


def _declare(kind: str, default: Any = None, to_learner: bool = True) -> Any:
    return field(default=default, metadata={"kind": kind, "to_learner": to_learner})


@dataclass
class Sample:
    """One generation of one prompt, filled in phase by phase: generate, score, experience."""

    prompt_ids: list[int] = _declare(TOKEN_IDS)
    completion_ids: list[int] = _declare(TOKEN_IDS)
    pixel_values: Tensor | None = _declare(MULTIMODAL)
    image_grid_thw: Tensor | None = _declare(MULTIMODAL)
    # The weight-sync version of the policy that generated it: 0 for the initial weights, k after the
    # k-th sync of trained weights. The learner's ratio is against this policy's log-probs.
    policy_version: int = _declare(PER_SEQUENCE, 0)
    # vLLM's: the behaviour policy of the rollout correction (algo.rollout_correction), and the gap metric.
    sampler_logprobs: list[float] | None = _declare(PER_TOKEN)
    old_logprobs: list[float] | None = _declare(PER_TOKEN)  # the learner's, recomputed before the update
    ref_logprobs: list[float] | None = _declare(PER_TOKEN, to_learner=False)  # reference model (KL > 0)
    advantages: list[float] | None = _declare(PER_TOKEN)
    reward: float | None = _declare(PER_SEQUENCE, to_learner=False)
    prompt_index: int | None = _declare(PER_SEQUENCE, to_learner=False)  # a prompt's n samples share it
    text: str | None = _declare(DRIVER, to_learner=False)
    label: Any | None = _declare(DRIVER, to_learner=False)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Sample:
        """A sample from a dict (an encoded prompt plus `completion_ids`, as SFT and the tests build them)."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown sample field(s) {unknown}; a Sample has {[f.name for f in fields(cls)]}")
        for key in ("prompt_ids", "completion_ids"):
            if values.get(key) is None:
                raise ValueError(f"no {key!r}")
        return cls(**values)

    def for_learner(self) -> Sample:
        """A copy without the fields the learner's update does not read (less to pickle)."""
        return replace(self, **{f.name: f.default for f in fields(self) if not f.metadata["to_learner"]})


def fields_of_kind(kind: str) -> list[str]:
    """The names of the Sample fields declared with `kind`, in declaration order."""
    return [f.name for f in fields(Sample) if f.metadata["kind"] == kind]


@dataclass
class Batch:
    """Samples collated for one learner forward (see `r1reward.data.collate`).

    ``[B, T]`` token grids, ``[B, T-1]`` next-token grids (per-token fields are 0 off the action
    mask), ``[B]`` per-sequence tensors. A per-token or per-sequence field is None when no sample has it.
    """

    input_ids: Tensor  # [B, T] right-padded prompt + completion
    attention_mask: Tensor  # [B, T]
    action_mask: Tensor  # [B, T-1] bool: position t predicts a completion token
    prompt_lengths: Tensor  # [B]
    completion_lengths: Tensor  # [B]
    pixel_values: Tensor | None = None  # all samples' patches, in sample order
    image_grid_thw: Tensor | None = None
    policy_version: Tensor | None = None
    sampler_logprobs: Tensor | None = None
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    advantages: Tensor | None = None
    reward: Tensor | None = None
    prompt_index: Tensor | None = None
