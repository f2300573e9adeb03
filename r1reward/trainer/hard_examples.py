"""Hard-example selection for RL, by two rules, and sampling a model's choices (held-out scores).

- `teacher-tries`, the paper's rule (§3.2): keep the pairs the annotating teacher needed 2 or more tries
  for, or failed (`select_by_teacher_tries`, on the records `r1reward annotate` writes).
- `model-samples`, the project's own rule for data without teacher annotations (the synthetic demo):
  keep the pairs the cold-start model does not solve in all K samples (`select_hard`). The paper does
  not use it; the same K samples give the accuracy and format rate the pipeline reports per stage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1reward.algo import format_reward, parse_answer
from r1reward.config.schema import Config
from r1reward.data.records import PreferenceRecord
from r1reward.data.render import rollout_prompt

if TYPE_CHECKING:  # Ray's side is imported when a sampler starts
    from r1reward.rollout.group import RolloutGroup


@dataclass
class Choices:
    """Per record, the K parsed answers (None: no parseable answer) and whether each was well-formed."""

    answers: list[list[int | None]]
    well_formed: list[list[bool]]

    def solved(self, labels: list[int]) -> list[int]:
        return [sum(a == label for a in row) for row, label in zip(self.answers, labels)]

    def scores(self, labels: list[int]) -> dict[str, float]:
        total = sum(len(row) for row in self.answers)
        return {
            "accuracy": sum(self.solved(labels)) / total,
            "format_rate": sum(sum(row) for row in self.well_formed) / total,
        }


class Sampler:
    """One vLLM rollout worker (a Ray actor on the rollout-only plan, so on a cluster it gets the GPUs and
    CPUs a training rollout worker gets) that samples K choices per preference pair. `load` swaps in
    another checkpoint of the same model without a restart, so scoring several stages costs one start.
    Given a running `group` (a trainer's rollout workers, holding `model_dir`'s weights) it samples on
    that group and leaves it running at `close`.

        with Sampler(model_dir, config) as sampler:
            choices = sampler.choices(records, k=4)
    """

    def __init__(self, model_dir: str | Path, config: Config, group: RolloutGroup | None = None) -> None:
        from transformers import AutoProcessor

        from r1reward.placement.plan import rollout_plan
        from r1reward.rollout.group import RolloutGroup

        self.config = config
        self.pixels = (config.data.min_pixels, config.data.max_pixels)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.owns_group = group is None
        self.group = group or RolloutGroup.start_alone(
            str(model_dir),
            asdict(config.rollout),
            self.pixels,
            rollout_plan(config, num_workers=1),
            timeouts=config.timeouts,
        )

    def load(self, model_dir: str | Path) -> None:
        """Another checkpoint of the same architecture and processor, in place."""
        self.group.load_checkpoint(str(model_dir))

    def texts(
        self, records: list[PreferenceRecord], k: int, temperature: float = 1.0, seed: int = 0
    ) -> list[list[str]]:
        """Per record, the K generated texts (one seed per record, derived from `seed`)."""
        prompts = [rollout_prompt(self.processor, record, *self.pixels) for record in records]
        results = self.group.generate(
            prompts, n=k, temperature=temperature, seeds=[seed * 100_003 + i for i in range(len(prompts))]
        )
        return [[g["text"] for g in r["generations"]] for r in results]

    def choices(self, records: list[PreferenceRecord], k: int, temperature: float = 1.0, seed: int = 0) -> Choices:
        texts = self.texts(records, k, temperature, seed)
        return Choices(
            [[parse_answer(t) for t in row] for row in texts],
            [[format_reward(t) == 1.0 for t in row] for row in texts],
        )

    def close(self) -> None:
        if self.owns_group:
            self.group.close()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


RULES = ("teacher-tries", "model-samples")


def select_by_teacher_tries(
    records: list[PreferenceRecord], annotations: dict[str, dict[str, Any]], where: str
) -> list[PreferenceRecord]:
    """The paper's rule: keep the pairs whose annotation took 2+ tries or failed. Every pair needs its
    annotation, for the same response order (`where` names the annotations in errors)."""
    from r1reward.data.annotations import is_rl_pair
    from r1reward.errors import UserError

    missing = [r.id for r in records if r.id not in annotations]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(records)} pairs have no annotation in {where} (e.g. {missing[0]!r}): "
            "run `r1reward annotate` on the same --data first"
        )

    def order_matches(record: PreferenceRecord) -> bool:  # annotate may have asked the other order
        entry = annotations[record.id]
        return entry.get("label") == (3 - record.label if entry.get("swapped") else record.label)

    flipped = [r.id for r in records if not order_matches(r)]
    if flipped:
        raise UserError(
            f"pair {flipped[0]!r} has label {annotations[flipped[0]].get('label')} in {where}, "
            "another in --data: the annotations are of another file or response order"
        )
    return [r for r in records if is_rl_pair(annotations[r.id])]


def select_hard(records: list[PreferenceRecord], choices: Choices) -> list[PreferenceRecord]:
    """The project's `model-samples` rule: keep the pairs the model does not solve in every sample."""
    k = len(choices.answers[0]) if choices.answers else 0
    return [r for r, solved in zip(records, choices.solved([r.label for r in records])) if solved < k]


def write_hard(records: list[PreferenceRecord], path: str | Path) -> Path:
    from r1reward.data.writers import write_records

    return write_records(records, path)


def records_of(path: str | Path, schema: str, config: Config) -> list[PreferenceRecord]:
    from r1reward.data.check import load_options
    from r1reward.data.dataset import load_preferences

    records, _ = load_preferences(path, schema, swap_seed=None, verbose=False, **load_options(config))
    return records


def summarise(choices: Choices, records: list[PreferenceRecord], kept: int) -> dict[str, Any]:
    return {**choices.scores([r.label for r in records]), "examples": len(records), "kept_hard": kept}
